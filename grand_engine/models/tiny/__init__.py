"""Tiny random-initialised checkpoints of the real architectures, for CI and the ``tiny`` manifest.

Each model family has one module here (``depth``, ``closed_set``, ``open_vocab``, ``clip``, ``sam``,
``vlm``, ``llm``) holding its builders; a builder writes one complete checkpoint (``save_pretrained``
layout, or the family's own) into the directory it is given, with the real checkpoint's processor
settings, so the adapters load it through exactly the code that loads real checkpoints.
:data:`BUILDERS` names every checkpoint. Nothing here imports the adapters' registry, and no adapter
imports this package.

:func:`build_all` runs the builders into ``DEST/<name>``: it writes into a temporary directory, drops a
marker file (:data:`MARKER`) last and renames the directory into place, so a half-built checkpoint never
looks complete, and it keeps checkpoints that are already complete (idempotent). The marker records a
digest of the builder code (:func:`builder_digest`), so a checkpoint built by older code is rebuilt
rather than reused. The marker also says that the weights are random (:func:`random_weights`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

from grand_engine.models.base import quiet_transformers
from grand_engine.models.tiny import clip, closed_set, depth, dino, llm, open_vocab, sam, sam2, sam3, video, vlm

Builder = Callable[[Path], None]

BUILDERS: dict[str, Builder] = {
    "depth-dpt-beit": depth.build_dpt_beit,
    "depth-anything-v2": depth.build_depth_anything,
    "dfine": closed_set.build_dfine,
    "rtdetr": closed_set.build_rtdetr,
    "rtdetr-v2": closed_set.build_rtdetr_v2,
    "owlvit": open_vocab.build_owlvit,
    "owlv2": open_vocab.build_owlv2,
    "grounding-dino": open_vocab.build_grounding_dino,
    "sam3": sam3.build_sam3,
    "clip-vit": clip.build_clip_vit,
    "clip-eva02": clip.build_clip_eva02,
    "siglip2": clip.build_siglip2,
    "clip-vit-b16": clip.build_clip_vit_b16,
    "dino-vit": dino.build_dino_vit,
    "sam-vit-tiny": sam.build_sam_vit,
    "sam2": sam2.build_sam2,
    "blip2": vlm.build_blip2,
    "llava": vlm.build_llava,
    "florence2": vlm.build_florence2,
    "kosmos2": vlm.build_kosmos2,
    "qwen3-vl": vlm.build_qwen3_vl,
    "llama": llm.build_llama,
    "qwen3": llm.build_qwen3,
    "sam2-video": video.build_sam2_video,
    "qwen2.5-vl": video.build_qwen2_5_vl,
}
"""Every tiny checkpoint by name (the folder name under the tiny directory) and the function that builds it."""

MARKER = ".grand-tiny-complete"
"""File written last into a finished tiny checkpoint; no real checkpoint has it."""


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


def tiny_builders() -> dict[str, Builder]:
    """A copy of :data:`BUILDERS`."""
    return dict(BUILDERS)


def _source_files(module: ModuleType) -> list[Path]:
    """The builder's module file and the files of the project modules it imports names from (the offline
    tokenizers, an adapter's architecture code), so that a change in any of them changes the digest."""
    files = {Path(module.__file__)}
    for value in vars(module).values():
        dep = value if isinstance(value, ModuleType) else sys.modules.get(getattr(value, "__module__", None) or "")
        if dep is not None and dep.__name__.startswith("grand_engine.") and getattr(dep, "__file__", None):
            files.add(Path(dep.__file__))
    return sorted(files)


def builder_digest(name: str) -> str:
    """A digest of the code that builds checkpoint ``name``: the builder's module and the project modules it
    imports from (see :func:`_source_files`), plus the transformers version. A checkpoint built by other code is
    rebuilt, never silently reused."""
    builder = BUILDERS[name]
    h = hashlib.sha256(name.encode())
    for path in _source_files(sys.modules[builder.__module__]):
        h.update(path.read_bytes())
    h.update(metadata.version("transformers").encode())
    return h.hexdigest()[:16]


def read_marker(path: Path) -> dict | None:
    """The marker of the tiny checkpoint at ``path`` (a folder, or a file inside one), or None when there is
    none or it is unreadable."""
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def random_weights(path: str | Path) -> bool:
    """True when ``path`` is a checkpoint built here with random weights (it holds :data:`MARKER`).

    Only this package writes the marker, and it writes it last into a folder it created itself, so a real
    checkpoint (a Hub id, a downloaded folder) is never reported as random.
    """
    return read_marker(Path(path)) is not None


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a finished checkpoint built by the current builder code."""
    marker = read_marker(path)
    if marker is None or not path.is_dir():
        return False
    return marker.get("builder") == builder_digest(path.name) if path.name in BUILDERS else True


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_one(name: str, dest: Path, force: bool = False) -> BuildReport:
    """Build checkpoint ``name`` into ``dest/name`` unless it is already complete (or ``force``)."""
    if name not in BUILDERS:
        raise KeyError(f"no tiny checkpoint named {name!r}; known: {', '.join(sorted(BUILDERS))}")
    dest = Path(dest).expanduser()
    target = dest / name
    if is_complete(target) and not force:
        return BuildReport(name, target, 0.0, dir_bytes(target), built=False)
    dest.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest))
    try:
        BUILDERS[name](tmp)
        seconds = time.perf_counter() - start
        marker = {"name": name, "seconds": round(seconds, 3), "builder": builder_digest(name), "random_weights": True}
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildReport(name, target, seconds, dir_bytes(target), built=True)


def build_all(dest: Path, names: list[str] | None = None, force: bool = False) -> list[BuildReport]:
    """Build every tiny checkpoint (or only ``names``) into ``dest``; see :func:`build_one`."""
    wanted = sorted(BUILDERS) if names is None else list(names)
    if any(not is_complete(Path(dest) / name) or force for name in wanted):
        quiet_transformers()
    return [build_one(name, dest, force=force) for name in wanted]


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
