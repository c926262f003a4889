"""Build the tiny random-initialised checkpoints that the ``tiny`` manifest and the tests load.

Every model family module registers its builders with ``@tiny_builder(name)``; a builder writes one
complete checkpoint (``save_pretrained`` layout, or the family's own) into the directory it is given.
:func:`build_all` runs them into ``DEST/<name>``: it writes into a temporary directory and renames it
into place, then drops a completion marker, so a half-built checkpoint never looks complete, and it
keeps checkpoints that are already complete (idempotent). The marker records a digest of the builder code, so
a checkpoint built by an older version of a builder is rebuilt rather than reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from grand_engine.models.base import quiet_transformers, tiny_builders

MARKER = ".grand-tiny-complete"
"""File written last into a finished checkpoint directory."""


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_all` did for one checkpoint (``built`` is False when it was already complete)."""

    name: str
    path: Path
    seconds: float
    bytes: int
    built: bool


def default_tiny_dir() -> Path:
    """``$GRAND_TINY_DIR`` when set, else ``~/.cache/grand-engine/tiny``."""
    env = os.environ.get("GRAND_TINY_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "grand-engine" / "tiny"


def builder_digest(name: str) -> str:
    """A digest of the code that builds checkpoint ``name``: its builder's module, the shared tokenizer code and
    the transformers version. A checkpoint built by other code is rebuilt, never silently reused."""
    import hashlib
    import sys
    from importlib import metadata

    from grand_engine.models import tokenizers

    builder = tiny_builders()[name]
    h = hashlib.sha256(name.encode())
    for module in (sys.modules[builder.__module__], tokenizers):
        h.update(Path(module.__file__).read_bytes())
    h.update(metadata.version("transformers").encode())
    return h.hexdigest()[:16]


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a finished checkpoint built by the current builder code."""
    marker = path / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text()).get("builder")
    except (ValueError, AttributeError):
        return False
    return recorded == builder_digest(path.name) if path.name in tiny_builders() else True


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_one(name: str, dest: Path, force: bool = False) -> BuildReport:
    """Build checkpoint ``name`` into ``dest/name`` unless it is already complete (or ``force``)."""
    builders = tiny_builders()
    if name not in builders:
        raise KeyError(f"no tiny checkpoint named {name!r}; known: {', '.join(sorted(builders))}")
    dest = Path(dest).expanduser()
    target = dest / name
    if is_complete(target) and not force:
        return BuildReport(name, target, 0.0, dir_bytes(target), built=False)
    dest.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest))
    try:
        builders[name](tmp)
        seconds = time.perf_counter() - start
        marker = {"name": name, "seconds": round(seconds, 3), "builder": builder_digest(name)}
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildReport(name, target, seconds, dir_bytes(target), built=True)


def build_all(dest: Path, names: list[str] | None = None, force: bool = False) -> list[BuildReport]:
    """Build every registered tiny checkpoint (or only ``names``) into ``dest``; see :func:`build_one`."""
    wanted = sorted(tiny_builders()) if names is None else list(names)
    if any(not is_complete(Path(dest) / name) or force for name in wanted):
        quiet_transformers()
    return [build_one(name, dest, force=force) for name in wanted]


def tiny_path(name: str, root: Path | None = None) -> Path:
    """Where the tiny checkpoint ``name`` lives (``root`` defaults to :func:`default_tiny_dir`)."""
    return (Path(root) if root is not None else default_tiny_dir()) / name


def format_reports(reports: list[BuildReport]) -> str:
    """One line per checkpoint plus a total, for the ``models tiny`` command."""
    lines = [
        f"{r.name:24s} {'built' if r.built else 'kept':5s} {r.seconds:6.2f} s {r.bytes / 1e6:8.2f} MB  {r.path}"
        for r in reports
    ]
    total_s = sum(r.seconds for r in reports)
    total_b = sum(r.bytes for r in reports)
    lines.append(f"{'total':24s} {'':5s} {total_s:6.2f} s {total_b / 1e6:8.2f} MB")
    return "\n".join(lines)
