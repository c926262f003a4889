"""Running one stage on one unit: the part both backends share.

:class:`UnitRunner` loads the unit's upstream tables from the output store, restricts them to the
images every input has (an image with an error row upstream is excluded downstream), calls the stage,
checks its table against the declared schema, and writes the error rows and then the table
atomically. It returns a :class:`StageRecord`; committing the manifest record is the driver's job.
A stage that raises for the whole unit is retried, then reported as failed, and leaves no table.
"""

from __future__ import annotations

import gc
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import grand_engine
from grand_engine.io.images import decode_device, decode_image
from grand_engine.io.sa1b import Locator, read_locator
from grand_engine.io.store import OutputStore
from grand_engine.runtime.faults import fault_point
from grand_engine.runtime.manifests import StageRecord, data_path, errors_path, host_name, now_iso
from grand_engine.runtime.plan import Unit, unit_fingerprint
from grand_engine.runtime.stage import ErrorRecord, Stage, StageResult, UnitInput
from grand_engine.schema import ERRORS_SCHEMA


class StageOutputError(RuntimeError):
    """A stage returned a table that breaks the stage contract."""


def load_pixels(row: dict[str, Any]) -> np.ndarray:
    """Decode an ``images`` row's picture (RGB uint8, EXIF orientation applied); JPEGs on the device that
    ``GRAND_DECODE_DEVICE`` names (``cpu`` by default, ``cuda`` for nvJPEG)."""
    return decode_image(read_locator(Locator(row["source"], row["offset"], row["size"])), device=decode_device())


PIXEL_CACHE_ENV = "GRAND_PIXEL_CACHE_MB"
PIXEL_CACHE_MB_DEFAULT = 1024
"""Default budget of a runner's decoded-image cache (MiB); ``GRAND_PIXEL_CACHE_MB`` overrides it (0 disables)."""


def pixel_cache_budget() -> int:
    """The decoded-image cache budget in bytes, from ``GRAND_PIXEL_CACHE_MB`` or the default."""
    raw = os.environ.get(PIXEL_CACHE_ENV, "").strip()
    try:
        mb = float(raw) if raw else PIXEL_CACHE_MB_DEFAULT
    except ValueError:
        raise ValueError(f"{PIXEL_CACHE_ENV} must be a number of MiB, got {raw!r}") from None
    return max(0, int(mb * 2**20))


class PixelCache:
    """Decoded images of the unit in flight, shared by the stages one process runs on it.

    Keyed by the image's byte locator (source, offset, size) and bounded by ``max_bytes`` of pixel data.
    Every stage visits a unit's images in the same order, so a least-recently-used policy would evict each
    image just before the next stage asks for it; instead images are admitted while the budget lasts and
    kept until the unit changes (:meth:`clear`), so with a budget for *k* of a unit's *n* images every stage
    after the first decodes only the other *n − k*. Cached arrays are read-only: a stage cannot change
    the pixels another stage sees (images decoded by Pillow are read-only already).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._arrays: dict[tuple[str, int, int], np.ndarray] = {}

    def load(self, row: dict[str, Any]) -> np.ndarray:
        """The decoded picture of an ``images`` row, from the cache when it holds it."""
        key = (str(row["source"]), int(row["offset"]), int(row["size"]))
        arr = self._arrays.get(key)
        if arr is not None:
            self.hits += 1
            return arr
        self.misses += 1
        arr = load_pixels(row)
        if self.bytes + arr.nbytes <= self.max_bytes:
            arr.flags.writeable = False
            self._arrays[key] = arr
            self.bytes += arr.nbytes
        return arr

    def clear(self) -> None:
        self._arrays.clear()
        self.bytes = 0


@contextmanager
def new_objects_gc() -> Iterator[None]:
    """Inside the block, Python's cyclic garbage collector only examines objects created inside it.

    A worker's heap holds hundreds of thousands of long-lived objects (torch, transformers, spaCy, loaded
    models); a logic stage that builds many small rows triggers collections that would walk all of them
    each time, which made ``masks`` and ``level2`` 2-4x slower at 2,000 objects per image
    (``benchmarks/bench_scaling.py``). ``gc.freeze()`` sets the existing objects aside for the duration and
    ``gc.unfreeze()`` hands them back (both are O(1) list splices), so nothing is leaked: garbage among them
    is collected by a later full collection. Reference counting is unaffected. Does nothing when the
    collector is disabled or something else has frozen objects (their freeze is left alone).
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def load_annotation(row: dict[str, Any]) -> bytes | None:
    if row.get("ann_source") is None:
        return None
    return read_locator(Locator(row["ann_source"], row["ann_offset"], row["ann_size"]))


def align(table: pa.Table, ids: list[str]) -> pa.Table:
    """Rows of ``table`` for ``ids``, in that order (every id must be present once)."""
    positions = {v: i for i, v in enumerate(table.column("image_id").to_pylist())}
    return table.take(pa.array([positions[i] for i in ids], type=pa.int64()))


def errors_table(stage: str, unit_id: str, errors: list[ErrorRecord]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "image_id": e.image_id,
                "stage": stage,
                "unit_id": unit_id,
                "error_type": e.error_type,
                "message": e.message,
                "severity": e.severity,
            }
            for e in errors
        ],
        schema=ERRORS_SCHEMA,
    )


def check_result(
    stage: Stage, unit_input: UnitInput, result: StageResult, root: bool = False
) -> tuple[pa.Table, list[ErrorRecord]]:
    """Enforce the stage contract on one result: the declared schema, one row per image, no unknown or duplicate
    ids, and (except for the ``root`` stage, which creates the images) every input image accounted for by a row or an
    error row — an image with neither gets a ``MissingOutput`` error row, and an image with an error row (severity
    ``error``) loses its row; a warning row leaves the image's row in place."""
    if not isinstance(result, StageResult):
        raise StageOutputError(f"stage {stage.name!r} returned {type(result).__name__}, expected StageResult")
    table = _conform(stage, result.table)
    errors = list(result.errors)
    if root:
        return table, errors
    ids = table.column("image_id").to_pylist()
    unknown = sorted(set(ids) - set(unit_input.image_ids))
    if unknown:
        raise StageOutputError(f"stage {stage.name!r} returned rows for images it was not given: {unknown[:5]}")
    failed = {e.image_id for e in errors if e.is_error}
    accounted = set(ids) | failed
    for image_id in unit_input.image_ids:
        if image_id not in accounted:
            errors.append(ErrorRecord(image_id, "MissingOutput", f"stage {stage.name!r} returned no row for it"))
            failed.add(image_id)
    if failed & set(ids):  # an image with an error row has no row: it is excluded downstream
        table = table.filter(pc.invert(pc.is_in(table.column("image_id"), value_set=pa.array(sorted(failed)))))
    return table, errors


def _conform(stage: Stage, table: pa.Table) -> pa.Table:
    """``table`` cast to the stage's schema, refusing missing columns and duplicate image ids."""
    missing_cols = [f.name for f in stage.schema if f.name not in table.column_names]
    if missing_cols:
        raise StageOutputError(f"stage {stage.name!r} table lacks columns {missing_cols}")
    try:
        table = table.select(stage.schema.names).cast(stage.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise StageOutputError(f"stage {stage.name!r} table does not match its schema: {exc}") from exc
    dupes = [i for i, n in Counter(table.column("image_id").to_pylist()).items() if n > 1]
    if dupes:
        raise StageOutputError(f"stage {stage.name!r} returned several rows for image(s) {dupes[:5]}")
    return table


class UnitRunner:
    """Executes configured stages on units against one output store."""

    def __init__(
        self,
        store: OutputStore,
        stages: dict[str, Stage],
        fingerprints: dict[str, str],
        retries: int = 1,
        pixel_cache_bytes: int | None = None,
        root: str = "images",
    ) -> None:
        self.store = store
        self.root = root  # the root stage: it reads the unit's members, every other stage reads its table
        self.stages = stages
        self.fingerprints = fingerprints
        self.retries = retries
        self._ready: set[str] = set()
        self._cache_unit: str | None = None
        self._cache: dict[str, pa.Table] = {}
        # Decoded images are shared only where they can be reused: by two or more pixel stages run here
        # (the inline backend, a fused Ray segment). A pool of one GPU stage decodes each image once anyway.
        budget = pixel_cache_budget() if pixel_cache_bytes is None else pixel_cache_bytes
        pixel_stages = sum(1 for st in stages.values() if st.needs_pixels)
        self.pixels = PixelCache(budget if pixel_stages >= 2 else 0)

    # -- tables ---------------------------------------------------------------------------------
    def table(self, stage: str, unit_id: str) -> pa.Table:
        """A stage's table for a unit (cached for the unit being worked on)."""
        self._enter_unit(unit_id)
        if stage not in self._cache:
            self._cache[stage] = self.store.read_table(data_path(stage, unit_id))
        return self._cache[stage]

    def _enter_unit(self, unit_id: str) -> None:
        """Drop the cached tables and pixels of the previous unit when work moves to another one."""
        if self._cache_unit != unit_id:
            self._cache_unit, self._cache = unit_id, {}
            self.pixels.clear()

    def _pixel_loader(self) -> Callable[[dict[str, Any]], np.ndarray]:
        return self.pixels.load if self.pixels.max_bytes else load_pixels

    def build_input(self, name: str, unit: Unit) -> UnitInput:
        stage = self.stages[name]
        if name == self.root:
            return UnitInput(unit.unit_id, stage.schema.empty_table(), members=unit.members)
        images = self.table(self.root, unit.unit_id)
        inputs = {req: self.table(req, unit.unit_id) for req in stage.inputs() if req != self.root}
        keep = images.column("image_id")
        for tbl in inputs.values():
            keep = pc.filter(keep, pc.is_in(keep, value_set=tbl.column("image_id")))
        ids = keep.to_pylist()
        return UnitInput(
            unit.unit_id,
            align(images, ids),
            {req: align(tbl, ids) for req, tbl in inputs.items()},
            pixel_loader=self._pixel_loader() if stage.needs_pixels else None,
            annotation_loader=load_annotation if stage.needs_annotations else None,
        )

    # -- execution ------------------------------------------------------------------------------
    def _ensure_setup(self, name: str) -> None:
        if name not in self._ready:
            self.stages[name].setup()
            self._ready.add(name)

    def run(self, name: str, unit: Unit) -> StageRecord:
        """Run ``name`` on ``unit`` and write its outputs; never raises for stage failures."""
        stage = self.stages[name]
        record = StageRecord(
            stage=name,
            unit_id=unit.unit_id,
            fingerprint=unit_fingerprint(self.fingerprints[name], unit),
            status="failed",
            host=host_name(),
            engine_version=grand_engine.__version__,
        )
        start = time.perf_counter()
        self._enter_unit(unit.unit_id)
        last_exc: BaseException | None = None
        for _attempt in range(self.retries + 1):
            try:
                self._ensure_setup(name)
                unit_input = self.build_input(name, unit)
                fault_point("executor.before_process")
                with new_objects_gc():
                    result = stage.process(unit_input)
                    fault_point("executor.after_process")
                    table, errors = check_result(stage, unit_input, result, root=name == self.root)
                self._write(name, unit.unit_id, table, errors, record)
                record.status = "done"
                record.images = len(unit_input.image_ids) if name != self.root else len(unit.members)
                record.rows = table.num_rows
                record.errors = sum(1 for e in errors if e.is_error)
                record.warnings = len(errors) - record.errors
                record.error_types = dict(Counter(e.error_type for e in errors)) or None
                record.schema_version = (stage.schema.metadata or {}).get(b"grand_engine.schema_version", b"").decode()
                break
            except Exception as exc:  # noqa: BLE001 - a whole-unit failure is reported, not raised
                last_exc = exc
                self._discard(name, unit.unit_id)
        if record.status != "done" and last_exc is not None:
            record.message = f"{type(last_exc).__name__}: {last_exc}"
            record.traceback = "".join(traceback.format_exception(last_exc))
        record.seconds = round(time.perf_counter() - start, 4)
        record.finished_at = now_iso()
        return record

    def _write(self, name: str, unit_id: str, table: pa.Table, errors: list[ErrorRecord], record: StageRecord) -> None:
        if errors:
            record.errors_bytes = self.store.write_table(
                errors_path(name, unit_id), errors_table(name, unit_id, errors)
            )
            record.errors_output = errors_path(name, unit_id)
        else:
            self.store.delete(errors_path(name, unit_id))
        record.bytes = self.store.write_table(data_path(name, unit_id), table)
        fault_point("executor.after_table_write")
        record.output = data_path(name, unit_id)
        if self._cache_unit == unit_id:
            self._cache[name] = table

    def _discard(self, name: str, unit_id: str) -> None:
        """After a failure no table of this (stage, unit) may remain to be mistaken for output."""
        self._cache.pop(name, None)
        for rel in (data_path(name, unit_id), errors_path(name, unit_id)):
            try:
                self.store.delete(rel)
            except OSError:
                pass
