"""The stage contract.

A stage is a small dataclass-like class: its dataclass fields are its parameters (each with the reference's
default), ``setup()`` loads whatever it needs once per worker, and the base class's ``process()`` maps one work
unit's image table plus its upstream tables to the stage's own table, one row per image keyed by ``image_id``,
by calling the one method the stage implements (``process_image``, ``process_batch`` or ``process_unit``, as its
``batching`` declares). Stages never import Ray; the backends in :mod:`grand_engine.runtime` call them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from grand_engine.models.base import load_adapter
from grand_engine.registry import STAGE_GROUP, Registry
from grand_engine.resources import resource_dir
from grand_engine.validate import validate_annotation


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks for.

    ``gpus`` may be fractional (several actors share a card); ``cpus`` should be small and explicit
    for GPU stages; ``batch_size`` is the number of images per model call; ``replicas`` is the size of
    the stage's actor pool. ``custom`` asks for Ray custom resources per worker (``{"accel_a100": 1}``):
    the stage's actors then run only on nodes started with them (``ray start --resources``). Stages with the same
    ``group`` name run in one actor pool on the Ray backend: their models are resident in the same process (on the
    same GPU) and the unit's decoded images are shared between them.
    """

    gpus: float = 0.0
    cpus: float = 1.0
    batch_size: int = 8
    replicas: int = 1
    custom: dict[str, float] = field(default_factory=dict, hash=False)
    group: str = ""

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
    """A per-image problem. With ``severity = "error"`` (the default) the image is excluded from the stage's table and
    downstream; a ``"warning"`` accompanies an image that was processed anyway. The unit completes either way."""

    image_id: str
    error_type: str
    message: str
    severity: str = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

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


Row = dict[str, Any]
"""One output row of a stage: column name → value, ``image_id`` included."""

Batching = Literal["image", "batch"]

COLLABORATOR = "grand_engine.collaborator"
"""Metadata key of dataclass fields that hold collaborators (loaded models, helpers), not parameters."""


def collaborator(default: Any = None) -> Any:
    """A stage field for a collaborator: a loaded model or helper object that ``setup()`` builds when the caller
    did not hand one in (``DenseCaption(llm=my_llm)`` in a test). Collaborators are not parameters: the manifest
    cannot set them, and they are not part of the stage's fingerprint."""
    return field(default=default, repr=False, compare=False, metadata={COLLABORATOR: True})


class InvariantViolation(ValueError):
    """A row a stage built breaks an invariant of its table (see :meth:`Stage.require_valid`)."""


def _check_stage_class(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Stage)):
        raise TypeError(f"{obj!r} is not a subclass of grand_engine.Stage")
    if obj.name != name:
        raise TypeError(f"the class {obj.__qualname__} is named {obj.name!r}, but its entry point is {name!r}")


STAGES: Registry[type[Stage]] = Registry("stage", STAGE_GROUP, check=_check_stage_class)
"""Every stage class by name: classes register themselves when defined; packages add theirs through the
``grand_engine.stages`` entry-point group (loaded on first lookup)."""


class Stage:
    """Base class of every pipeline stage.

    Subclasses are ``@dataclass`` classes whose fields are the stage's parameters and set the class attributes
    below. A concrete subclass with a ``name`` registers itself by that name in :data:`STAGES`.

    The base owns the loop over a unit. A stage declares how it works through ``batching`` and implements one
    method:

    * ``"image"`` (default): :meth:`process_image` returns one image's row (or an :class:`ErrorRecord`);
    * ``"batch"``: :meth:`process_batch` returns one row or :class:`ErrorRecord` per image of a batch of
      ``resources.batch_size`` images (one model call per batch); a batch that raises is retried image by image,
      so an exception costs that image only.

    A stage whose work spans the whole unit (the ``images`` root stage, which turns shard members into images)
    overrides :meth:`process_unit` instead.

    An exception on one image becomes that image's error row; for stages with models its message names the stage,
    the model slots and the image size.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    level: ClassVar[int | None] = None
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema]
    batching: ClassVar[Batching] = "image"
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
            STAGES.register(cls.name, cls)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The stage's parameters: its dataclass fields that are not collaborators."""
        if not dataclasses.is_dataclass(cls):
            return []
        return [f.name for f in dataclasses.fields(cls) if not f.metadata.get(COLLABORATOR)]

    @classmethod
    def collaborator_names(cls) -> list[str]:
        """The stage's collaborator fields (see :func:`collaborator`)."""
        if not dataclasses.is_dataclass(cls):
            return []
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get(COLLABORATOR)]

    @classmethod
    def configure(
        cls,
        params: dict[str, Any] | None = None,
        models: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        **collaborators: Any,
    ) -> Stage:
        """Build a configured instance; unknown parameter, model-slot or collaborator names raise ``ValueError``.

        ``collaborators`` hand in objects ``setup()`` would otherwise build (``DenseCaption.configure(llm=my_llm)``).
        """
        params = dict(params or {})
        known = cls.collaborator_names()
        unknown_collaborators = sorted(set(collaborators) - set(known))
        if unknown_collaborators:
            raise ValueError(
                f"stage {cls.name!r} has no collaborator {', '.join(map(repr, unknown_collaborators))}; "
                f"its collaborators: {', '.join(known) or '(none)'}"
            )
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
        stage = cls(**params, **collaborators)
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
        folder = resource_dir("prompts")
        names = {v for v in self.params().values() if isinstance(v, str) and v.endswith((".txt", ".json"))}
        return sorted(n for n in names if "/" not in n and (folder / n).is_file())

    def params(self) -> dict[str, Any]:
        """The stage's parameter values (dataclass fields) as a plain dict."""
        return {name: getattr(self, name) for name in self.param_names()}

    # -- lifecycle ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Load models and other per-worker state. Called once before the first ``process``."""

    def load_model(self, slot: str, required: bool = True) -> Any:
        """The loaded adapter of model ``slot`` (``None`` for an optional slot the manifest leaves empty)."""
        spec = self.models.get(slot)
        if spec is None:
            if required:
                raise ValueError(f"stage {self.name!r} needs a model in its {slot!r} slot")
            return None
        return load_adapter(spec, gpus=self.resources.gpus)

    def process(self, unit: UnitInput) -> StageResult:
        """Map one unit to this stage's table and error rows: what the backends call. Do not override it; override
        :meth:`process_unit` only for work that spans the unit."""
        return self.process_unit(unit)

    def process_unit(self, unit: UnitInput) -> StageResult:
        """The unit's result: by default the loop ``batching`` selects over :meth:`process_image` or
        :meth:`process_batch`. A stage whose work spans the unit (the ``images`` root stage) overrides this, and
        may call ``super().process_unit(unit)`` for the per-image loop."""
        rows: list[Row] = []
        errors: list[ErrorRecord] = []
        if self.batching == "image":
            for image_id in unit.image_ids:
                try:
                    self._collect(self.process_image(unit, image_id), rows, errors)
                except Exception as exc:  # noqa: BLE001 - per-image isolation is the point
                    errors.append(self.image_error(unit, image_id, exc))
        elif self.batching == "batch":
            self._run_batches(unit, rows, errors)
        else:
            raise ValueError(f"stage {self.name!r} has an unknown batching {self.batching!r}; use 'image' or 'batch'")
        return StageResult(self.to_table(rows), errors)

    def process_image(self, unit: UnitInput, image_id: str) -> Row | ErrorRecord:
        """One image's row, or an :class:`ErrorRecord` for it (``batching = "image"``)."""
        raise NotImplementedError(f"stage {self.name!r} implements neither process_image nor process_unit")

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> Sequence[Row | ErrorRecord]:
        """One row or :class:`ErrorRecord` per image, in order (``batching = "batch"``)."""
        raise NotImplementedError(f"stage {self.name!r} declares batching 'batch' but implements no process_batch")

    # -- the loop -----------------------------------------------------------------------------
    def _run_batches(self, unit: UnitInput, rows: list[Row], errors: list[ErrorRecord]) -> None:
        size = max(1, self.resources.batch_size)
        ids = unit.image_ids
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                outs = self._call_batch(unit, chunk)
            except Exception as exc:  # noqa: BLE001 - a failing batch is retried image by image
                if len(chunk) == 1:
                    errors.append(self.image_error(unit, chunk[0], exc))
                    continue
                outs = []
                for image_id in chunk:
                    try:
                        outs.extend(self._call_batch(unit, [image_id]))
                    except Exception as inner:  # noqa: BLE001
                        outs.append(self.image_error(unit, image_id, inner))
            for out in outs:
                self._collect(out, rows, errors)

    def _call_batch(self, unit: UnitInput, chunk: list[str]) -> list[Row | ErrorRecord]:
        outs = list(self.process_batch(unit, chunk))
        if len(outs) != len(chunk):
            raise RuntimeError(f"process_batch returned {len(outs)} results for {len(chunk)} images")
        return outs

    @staticmethod
    def _collect(out: Row | ErrorRecord, rows: list[Row], errors: list[ErrorRecord]) -> None:
        if isinstance(out, ErrorRecord):
            errors.append(out)
        else:
            rows.append(out)

    def image_error(self, unit: UnitInput, image_id: str, exc: BaseException) -> ErrorRecord:
        """The error row of an exception raised for one image. For a stage with models, the message also names the
        stage, its model slots and the image size, so a framework's message ("shape [1, 1, 160, 512] doesn't
        match …") can be traced to its input."""
        record = ErrorRecord.from_exception(image_id, exc)
        if not self.model_slots:
            return record
        slots = ", ".join(f"{slot}={getattr(self.models.get(slot), 'id', '-')}" for slot in self.model_slots)
        context = f"stage {self.name}, models {slots}"
        try:
            row = unit.image_row(image_id)
            if row.get("width") is not None and row.get("height") is not None:
                context += f", image {row['width']}x{row['height']}"
        except KeyError:
            pass
        return ErrorRecord(image_id, record.error_type, f"{record.message} [{context}]")

    # -- helpers for subclasses ---------------------------------------------------------------
    def empty_table(self) -> pa.Table:
        return self.schema.empty_table()

    def to_table(self, rows: Sequence[Row]) -> pa.Table:
        """Build this stage's table from row dicts (columns missing from a row become null)."""
        return pa.Table.from_pylist(list(rows), schema=self.schema)

    def require_valid(self, row: Row, level: int, what: str | None = None) -> Row:
        """``row`` unchanged when it keeps every invariant of an annotation at ``level``
        (:func:`grand_engine.validate.validate_annotation`), else :class:`InvariantViolation` listing them."""
        problems = validate_annotation(row, level)
        if problems:
            subject = what or f"the {self.name} row of {row.get('image_id')!r}"
            raise InvariantViolation(f"invariants broken by {subject}: " + "; ".join(problems))
        return row


def get_stage_class(name: str) -> type[Stage]:
    """The stage class registered as ``name`` (built-in or from a plugin package)."""
    return STAGES.get(name)


def registered_stages() -> dict[str, type[Stage]]:
    """Every stage class by name (imports every declared stage module)."""
    return STAGES.all()


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
