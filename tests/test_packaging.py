"""A non-editable install ships the manifests, prompts and label lists inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest), str(REPO)],
        check=True,
        capture_output=True,
        cwd=dest,
    )
    (found,) = dest.glob("grand_engine-*.whl")
    return found


def test_wheel_contains_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "grand_engine/manifests/tiny.yaml",
        "grand_engine/prompts/README.md",
        "grand_engine/data/lvis_v1_categories.txt",
        "grand_engine/data/affordance_labels.json",
        "grand_engine/cli/__init__.py",
    ):
        assert required in names, required
    assert any(n.endswith("entry_points.txt") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "grand-engine = grand_engine.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_wheel_finds_manifests_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import grand_engine.resources as r, grand_engine.config as c;"
        "print(r.resource_dir('manifests'));print(c.load_manifest('tiny').name)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=tmp_path
    ).stdout.split()
    assert out[0] == str(target / "grand_engine" / "manifests")
    assert out[1] == "tiny"
