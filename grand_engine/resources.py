"""Locate the data shipped with the package: manifests, prompts and label lists.

In an installed wheel they live inside ``grand_engine`` (``grand_engine/manifests``,
``grand_engine/prompts``, ``grand_engine/data``); in a source checkout ``manifests/`` and
``prompts/`` sit at the repository root.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def resource_dir(kind: str) -> Path:
    """The folder holding ``kind`` (``manifests``, ``prompts`` or ``data``)."""
    for candidate in (_PACKAGE_DIR / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find the packaged {kind!r} folder (looked in {_PACKAGE_DIR} and its parent)")


def manifest_path(name_or_path: str) -> Path:
    """Resolve a manifest given as a packaged name (``tiny``, ``grand``) or as a file path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise FileNotFoundError(f"pipeline manifest {candidate} does not exist")
        return candidate
    packaged = resource_dir("manifests") / f"{name_or_path}.yaml"
    if not packaged.is_file():
        known = sorted(p.stem for p in resource_dir("manifests").glob("*.yaml"))
        raise FileNotFoundError(f"no pipeline manifest named {name_or_path!r}; packaged manifests: {', '.join(known)}")
    return packaged


def data_file(name: str) -> Path:
    """A file of ``grand_engine/data`` (LVIS/COCO category lists, affordance labels)."""
    path = resource_dir("data") / name
    if not path.is_file():
        raise FileNotFoundError(f"packaged data file {name!r} is missing from {path.parent}")
    return path


def prompt_file(name: str) -> Path:
    """A prompt template or in-context example under ``prompts/``."""
    path = resource_dir("prompts") / name
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {name!r} is missing from {path.parent}")
    return path
