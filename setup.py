"""Ships the top-level ``prompts/`` and ``manifests/`` folders inside the wheel as package data."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["grand_engine", "grand_engine.*"]) + ["grand_engine.prompts", "grand_engine.manifests"],
    package_dir={"grand_engine.prompts": "prompts", "grand_engine.manifests": "manifests"},
)
