"""Where a checkpoint's configuration comes from: the package's own copies, or the checkpoint folder itself.

The package ships, for every checkpoint of the packaged manifests and of the candidates of the 2026 profile, the
configuration files that describe its architecture (``grand_engine/models/configs/<org>--<name>/config.json``, plus
``preprocessor_config.json`` where the input size is set there). They hold architecture hyper-parameters only, no
weights, written from the public model cards and papers, so the cost model builds any of these models without
a model hub. Two checkpoints are built by their own libraries rather than by transformers, and their
``config.json`` says so with a ``library`` key: open_clip (``model_name``, a model of open_clip's own registry)
and segment-anything (``model_type`` of its registry).

A checkpoint given as a local folder that carries its own configuration (``config.json``,
``open_clip_config.json`` or ``sam_config.json``, e.g. the tiny checkpoints) is read from that folder first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "models" / "configs"
"""The shipped configurations, one folder per checkpoint."""

SCHEMES = ("local-dir:", "hf-hub:")
"""Prefixes of a model id that name where it lives, not what it is (as :func:`grand_engine.models.base.strip_scheme`,
repeated here: this package imports without the manifest schema's dependencies, on a bare GPU machine)."""


def strip_scheme(model_id: str) -> str:
    for prefix in SCHEMES:
        if model_id.startswith(prefix):
            return model_id[len(prefix) :]
    return model_id


FILE_ALIASES: dict[str, str] = {
    "sam_vit_h_4b8939.pth": "segment-anything--sam_vit_h_4b8939",
}
"""Checkpoint files (released outside a model hub) → the shipped configuration that describes them."""


@dataclass(frozen=True)
class ModelConfig:
    """The configuration of one checkpoint: its ``config.json`` and its image preprocessor settings.

    ``library`` is ``transformers``, ``open_clip`` or ``segment_anything``; ``where`` is the folder it was read
    from (shipped or the checkpoint's own).
    """

    key: str
    library: str
    config: dict[str, Any]
    preprocessor: dict[str, Any] = field(default_factory=dict)
    where: Path | None = None


def config_key(model_id: str) -> str:
    """The shipped-folder name of a checkpoint: ``org/name`` → ``org--name``; a file → its alias."""
    raw = strip_scheme(model_id).rstrip("/")
    name = Path(raw).name
    if name in FILE_ALIASES:
        return FILE_ALIASES[name]
    return raw.replace("/", "--")


def shipped_keys() -> list[str]:
    """Every shipped configuration folder."""
    return sorted(p.name for p in CONFIG_ROOT.iterdir() if (p / "config.json").is_file())


def _read(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _preprocessor(folder: Path) -> dict[str, Any]:
    if (folder / "preprocessor_config.json").is_file():
        return _read(folder / "preprocessor_config.json")
    if (folder / "processor_config.json").is_file():  # a processor saved whole keeps its image settings inside
        return dict(_read(folder / "processor_config.json").get("image_processor") or {})
    return {}


def read_folder(folder: Path, key: str) -> ModelConfig | None:
    """The configuration a folder holds, in whichever of the three layouts it uses; ``None`` when it holds none."""
    if (folder / "config.json").is_file():
        config = _read(folder / "config.json")
        library = str(config.get("library", "transformers"))
        return ModelConfig(key, library, config, _preprocessor(folder), folder)
    if (folder / "open_clip_config.json").is_file():
        data = _read(folder / "open_clip_config.json")
        config = {"library": "open_clip", "model_cfg": data.get("model_cfg", {})}
        return ModelConfig(key, "open_clip", config, dict(data.get("preprocess_cfg") or {}), folder)
    if (folder / "sam_config.json").is_file():
        config = {"library": "segment_anything", **_read(folder / "sam_config.json")}
        return ModelConfig(key, "segment_anything", config, {}, folder)
    return None


def find_config(spec: Any) -> ModelConfig | None:
    """The configuration of ``spec``'s checkpoint (a :class:`~grand_engine.config.ModelSpec` or anything with an
    ``id``): its own folder's when it has one, else the shipped copy."""
    raw = strip_scheme(spec.id)
    local = Path(raw).expanduser()
    if local.is_dir():
        found = read_folder(local, local.name)
        if found is not None:
            return found
    key = config_key(spec.id)
    folder = CONFIG_ROOT / key
    if (folder / "config.json").is_file():
        return read_folder(folder, key)
    return None
