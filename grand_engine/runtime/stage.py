"""The stage contract.

A stage is a small dataclass-like class: its dataclass fields are its parameters (each with the
reference's default), ``setup()`` loads whatever it needs once per worker, and ``process()`` maps one
work unit's image table plus its upstream tables to its own table, one row per image keyed by
``image_id``. Stages never import Ray; the backends in :mod:`grand_engine.runtime` call them.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks for.

    ``gpus`` may be fractional (several actors share a card); ``cpus`` should be small and explicit
    for GPU stages; ``batch_size`` is the number of images per model call; ``replicas`` is the size of
    the stage's actor pool. ``custom`` asks for Ray custom resources per worker (``{"accel_a100": 1}``):
    the stage's actors then run only on nodes started with them (``ray start --resources``).
    """

    gpus: float = 0.0
    cpus: float = 1.0
    batch_size: int = 8
    replicas: int = 1
    custom: dict[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        custom = {str(k): float(v) for k, v in dict(self.custom or {}).items()}
        reserved = sorted(set(custom) & {"CPU", "GPU", "memory", "object_store_memory"})
        if reserved:
            raise ValueError(f"custom resources may not be named {reserved}; use the cpus/gpus fields")
        negative = sorted(k for k, v in custom.items() if v < 0)
        if negative:
            raise ValueError(f"custom resource amounts must be >= 0, got {negative}")
        object.__setattr__(self, "custom", {k: v for k, v in custom.items() if v > 0})

    def merged(self, overrides: dict[str, Any] | None) -> Resources:
        """Return a copy with the given fields replaced (unknown keys raise ``TypeError``)."""
        return dataclasses.replace(self, **(overrides or {}))


@dataclass(frozen=True)
class ErrorRecord:
    """A per-image failure: the image is excluded downstream, the unit still completes."""

    image_id: str
    error_type: str
    message: str

    @classmethod
    def from_exception(cls, image_id: str, exc: BaseException) -> ErrorRecord:
        return cls(image_id=image_id, error_type=type(exc).__name__, message=str(exc) or repr(exc))


@dataclass
class StageResult:
    """A stage's output for one unit: its table (one row per image) and its per-image errors."""

    table: pa.Table
    errors: list[ErrorRecord] = field(default_factory=list)


class UnitInput:
    """One work unit as a stage sees it.

    ``images`` is the unit's ``images`` table restricted to the images this stage should process
    (those present in every upstream table), in tar order. ``inputs`` maps each upstream stage name
    to its table, restricted and ordered the same way. Pixels and SA-1B annotation JSON are loaded on
    demand through the loaders the backend provides.
    """

    def __init__(
        self,
        unit_id: str,
        images: pa.Table,
        inputs: dict[str, pa.Table] | None = None,
        pixel_loader: Callable[[dict[str, Any]], np.ndarray] | None = None,
        annotation_loader: Callable[[dict[str, Any]], bytes | None] | None = None,
        members: Sequence[Any] | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.members = list(members or [])  # the unit's shard entries; given to the root stage only
        self.images = images
        self.inputs = inputs or {}
        self._pixel_loader = pixel_loader
        self._annotation_loader = annotation_loader
        self._image_rows: dict[str, dict[str, Any]] | None = None
        self._input_rows: dict[str, dict[str, dict[str, Any]]] = {}

    @property
    def image_ids(self) -> list[str]:
        return self.images.column("image_id").to_pylist()

    def image_row(self, image_id: str) -> dict[str, Any]:
        """The ``images`` row of one image (file name, width, height, source locator)."""
        if self._image_rows is None:
            self._image_rows = {r["image_id"]: r for r in self.images.to_pylist()}
        return self._image_rows[image_id]

    def input_row(self, stage: str, image_id: str) -> dict[str, Any]:
        """The row of upstream ``stage`` for one image, as a Python dict."""
        rows = self._input_rows.get(stage)
        if rows is None:
            if stage not in self.inputs:
                raise KeyError(f"stage input {stage!r} is not available; declared inputs: {sorted(self.inputs)}")
            rows = {r["image_id"]: r for r in self.inputs[stage].to_pylist()}
            self._input_rows[stage] = rows
        return rows[image_id]

    def pixels(self, image_id: str) -> np.ndarray:
        """The decoded image as an ``H×W×3`` uint8 RGB array in displayed (EXIF-applied) orientation."""
        if self._pixel_loader is None:
            raise RuntimeError("this unit was built without a pixel loader; set `needs_pixels = True` on the stage")
        return self._pixel_loader(self.image_row(image_id))

    def annotation_json(self, image_id: str) -> bytes | None:
        """The raw SA-1B per-image JSON bytes, or ``None`` when the image has none."""
        if self._annotation_loader is None:
            raise RuntimeError("this unit was built without an annotation loader")
        return self._annotation_loader(self.image_row(image_id))


_REGISTRY: dict[str, type[Stage]] = {}


class Stage:
    """Base class of every pipeline stage.

    Subclasses are ``@dataclass`` classes whose fields are the stage's parameters and set the class
    attributes below. Concrete subclasses with a ``name`` register themselves by that name.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    level: ClassVar[int | None] = None
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema]
    needs_pixels: ClassVar[bool] = False
    needs_annotations: ClassVar[bool] = False
    model_slots: ClassVar[tuple[str, ...]] = ()
    default_resources: ClassVar[Resources] = Resources()

    # Set by `configure`; not parameters.
    resources: Resources
    models: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            _REGISTRY[cls.name] = cls

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []

    @classmethod
    def configure(
        cls,
        params: dict[str, Any] | None = None,
        models: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
    ) -> Stage:
        """Build a configured instance; unknown parameter or model-slot names raise ``ValueError``."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(cls.param_names()))
        if unknown:
            raise ValueError(
                f"stage {cls.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"known parameters: {', '.join(cls.param_names()) or '(none)'}"
            )
        models = dict(models or {})
        bad_slots = sorted(set(models) - set(cls.model_slots))
        if bad_slots:
            raise ValueError(
                f"stage {cls.name!r} has no model slot {', '.join(map(repr, bad_slots))}; "
                f"its slots: {', '.join(cls.model_slots) or '(none)'}"
            )
        stage = cls(**params)
        stage.models = models
        stage.resources = cls.default_resources.merged(resources)
        return stage

    def inputs(self) -> tuple[str, ...]:
        """The upstream stages this configured instance reads. Defaults to ``requires``; a stage whose
        inputs depend on its parameters (e.g. which detector slots ``level1`` merges) overrides it."""
        return tuple(self.requires)

    def prompt_files(self) -> list[str]:
        """Prompt files (names under ``prompts/``) this configured stage reads; their contents are part of its
        fingerprint, so editing a prompt reruns the stage. By default: every parameter naming such a file."""
        from grand_engine.resources import resource_dir

        folder = resource_dir("prompts")
        names = {v for v in self.params().values() if isinstance(v, str) and v.endswith((".txt", ".json"))}
        return sorted(n for n in names if "/" not in n and (folder / n).is_file())

    def params(self) -> dict[str, Any]:
        """The stage's parameter values (dataclass fields) as a plain dict."""
        return {name: getattr(self, name) for name in self.param_names()}

    # -- lifecycle ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Load models and other per-worker state. Called once before the first ``process``."""

    def process(self, unit: UnitInput) -> StageResult:
        """Map one unit to this stage's table."""
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------------
    def empty_table(self) -> pa.Table:
        return self.schema.empty_table()

    def to_table(self, rows: Sequence[dict[str, Any]]) -> pa.Table:
        """Build this stage's table from row dicts (columns missing from a row become null)."""
        return pa.Table.from_pylist(list(rows), schema=self.schema)

    def per_image(self, unit: UnitInput, fn: Callable[[str], dict[str, Any]]) -> StageResult:
        """Run ``fn(image_id) -> row`` for every image; an exception becomes that image's error row."""
        rows: list[dict[str, Any]] = []
        errors: list[ErrorRecord] = []
        for image_id in unit.image_ids:
            try:
                rows.append(fn(image_id))
            except Exception as exc:  # noqa: BLE001 - per-image isolation is the point
                errors.append(ErrorRecord.from_exception(image_id, exc))
        return StageResult(self.to_table(rows), errors)

    def batched(
        self,
        unit: UnitInput,
        fn: Callable[[list[str]], list[dict[str, Any]]],
        batch_size: int | None = None,
    ) -> StageResult:
        """Run ``fn(image_ids) -> rows`` over batches; a failing batch is retried image by image.

        A model error on one image therefore costs that image only, never the batch or the unit.
        """
        size = max(1, batch_size or self.resources.batch_size)
        ids = unit.image_ids
        rows: list[dict[str, Any]] = []
        errors: list[ErrorRecord] = []
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                out = fn(chunk)
                if len(out) != len(chunk):
                    raise RuntimeError(f"batch function returned {len(out)} rows for {len(chunk)} images")
                rows.extend(out)
            except Exception:  # noqa: BLE001
                if len(chunk) == 1:
                    errors.append(_error_from_current(chunk[0]))
                    continue
                for image_id in chunk:
                    try:
                        rows.extend(fn([image_id]))
                    except Exception:  # noqa: BLE001
                        errors.append(_error_from_current(image_id))
        return StageResult(self.to_table(rows), errors)


def _error_from_current(image_id: str) -> ErrorRecord:
    import sys

    exc = sys.exc_info()[1]
    assert exc is not None
    return ErrorRecord.from_exception(image_id, exc)


def get_stage_class(name: str) -> type[Stage]:
    """Look up a registered stage class by name, importing the built-in stages first."""
    import grand_engine.stages  # noqa: F401  (registers the built-in stages)

    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(_REGISTRY))}") from None


def registered_stages() -> dict[str, type[Stage]]:
    import grand_engine.stages  # noqa: F401

    return dict(_REGISTRY)


def topological_order(graph: dict[str, Iterable[str]]) -> list[str]:
    """Order stage names so every stage comes after its requirements.

    ``graph`` maps a stage to the stages it requires. Unknown requirements and cycles raise
    ``ValueError`` naming the stages involved. Ties are broken by name for a stable order.
    """
    deps = {name: sorted(set(reqs)) for name, reqs in graph.items()}
    for name, reqs in deps.items():
        missing = [r for r in reqs if r not in deps]
        if missing:
            raise ValueError(f"stage {name!r} requires {', '.join(map(repr, missing))}, which is not in the pipeline")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name) :] + [name]
            raise ValueError(f"stage dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for req in deps[name]:
            visit(req, path + [name])
        state[name] = 2
        order.append(name)

    for name in sorted(deps):
        visit(name, [])
    return order


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
