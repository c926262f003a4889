"""Running one stage on one unit: the part both backends share.

:class:`UnitRunner` loads the unit's upstream tables from the output store, restricts them to the
images every input has (an image with an error row upstream is excluded downstream), calls the stage,
checks its table against the declared schema, and writes the error rows and then the table
atomically. It returns a :class:`StageRecord`; committing the manifest record is the driver's job.
A stage that raises for the whole unit is retried, then reported as failed, and leaves no table.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import grand_engine
from grand_engine.io.images import decode_image
from grand_engine.io.sa1b import Locator, read_locator
from grand_engine.io.store import OutputStore
from grand_engine.runtime.faults import fault_point
from grand_engine.runtime.manifests import StageRecord, data_path, errors_path, host_name, now_iso
from grand_engine.runtime.pipeline import ROOT_STAGE
from grand_engine.runtime.plan import Unit, unit_fingerprint
from grand_engine.runtime.stage import ErrorRecord, Stage, StageResult, UnitInput
from grand_engine.schema import ERRORS_SCHEMA


class StageOutputError(RuntimeError):
    """A stage returned a table that breaks the stage contract."""


def load_pixels(row: dict[str, Any]) -> np.ndarray:
    """Decode an ``images`` row's picture (RGB uint8, EXIF orientation applied)."""
    return decode_image(read_locator(Locator(row["source"], row["offset"], row["size"])))


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
            }
            for e in errors
        ],
        schema=ERRORS_SCHEMA,
    )


class UnitRunner:
    """Executes configured stages on units against one output store."""

    def __init__(
        self,
        store: OutputStore,
        stages: dict[str, Stage],
        fingerprints: dict[str, str],
        retries: int = 1,
    ) -> None:
        self.store = store
        self.stages = stages
        self.fingerprints = fingerprints
        self.retries = retries
        self._ready: set[str] = set()
        self._cache_unit: str | None = None
        self._cache: dict[str, pa.Table] = {}

    # -- tables ---------------------------------------------------------------------------------
    def table(self, stage: str, unit_id: str) -> pa.Table:
        """A stage's table for a unit (cached for the unit being worked on)."""
        if self._cache_unit != unit_id:
            self._cache_unit, self._cache = unit_id, {}
        if stage not in self._cache:
            self._cache[stage] = self.store.read_table(data_path(stage, unit_id))
        return self._cache[stage]

    def build_input(self, name: str, unit: Unit) -> UnitInput:
        stage = self.stages[name]
        if name == ROOT_STAGE:
            return UnitInput(unit.unit_id, stage.schema.empty_table(), members=unit.members)
        images = self.table(ROOT_STAGE, unit.unit_id)
        inputs = {req: self.table(req, unit.unit_id) for req in stage.inputs() if req != ROOT_STAGE}
        keep = images.column("image_id")
        for tbl in inputs.values():
            keep = pc.filter(keep, pc.is_in(keep, value_set=tbl.column("image_id")))
        ids = keep.to_pylist()
        return UnitInput(
            unit.unit_id,
            align(images, ids),
            {req: align(tbl, ids) for req, tbl in inputs.items()},
            pixel_loader=load_pixels if stage.needs_pixels else None,
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
        last_exc: BaseException | None = None
        for _attempt in range(self.retries + 1):
            try:
                self._ensure_setup(name)
                unit_input = self.build_input(name, unit)
                fault_point("executor.before_process")
                result = stage.process(unit_input)
                fault_point("executor.after_process")
                table, errors = self.check_result(stage, unit_input, result)
                self._write(name, unit.unit_id, table, errors, record)
                record.status = "done"
                record.images = len(unit_input.image_ids) if name != ROOT_STAGE else len(unit.members)
                record.rows = table.num_rows
                record.errors = len(errors)
                record.error_types = dict(Counter(e.error_type for e in errors)) or None
                break
            except Exception as exc:  # noqa: BLE001 - a whole-unit failure is reported, not raised
                last_exc = exc
                self._discard(name, unit.unit_id)
        if record.status != "done" and last_exc is not None:
            record.message = f"{type(last_exc).__name__}: {last_exc}"
        record.seconds = round(time.perf_counter() - start, 4)
        record.finished_at = now_iso()
        return record

    def check_result(
        self, stage: Stage, unit_input: UnitInput, result: StageResult
    ) -> tuple[pa.Table, list[ErrorRecord]]:
        """Enforce the contract: declared schema, one row per image, no unknown or duplicate ids,
        and every input image accounted for by a row or an error row."""
        if not isinstance(result, StageResult):
            raise StageOutputError(f"stage {stage.name!r} returned {type(result).__name__}, expected StageResult")
        table = result.table
        missing_cols = [f.name for f in stage.schema if f.name not in table.column_names]
        if missing_cols:
            raise StageOutputError(f"stage {stage.name!r} table lacks columns {missing_cols}")
        try:
            table = table.select(stage.schema.names).cast(stage.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise StageOutputError(f"stage {stage.name!r} table does not match its schema: {exc}") from exc
        ids = table.column("image_id").to_pylist()
        dupes = [i for i, n in Counter(ids).items() if n > 1]
        if dupes:
            raise StageOutputError(f"stage {stage.name!r} returned several rows for image(s) {dupes[:5]}")
        errors = list(result.errors)
        if stage.name == ROOT_STAGE:
            return table, errors
        expected = unit_input.image_ids
        unknown = sorted(set(ids) - set(expected))
        if unknown:
            raise StageOutputError(f"stage {stage.name!r} returned rows for images it was not given: {unknown[:5]}")
        accounted = set(ids) | {e.image_id for e in errors}
        for image_id in expected:
            if image_id not in accounted:
                errors.append(ErrorRecord(image_id, "MissingOutput", f"stage {stage.name!r} returned no row for it"))
        if errors:
            # An image with an error row has no row: it is excluded downstream.
            bad = {e.image_id for e in errors}
            if bad & set(ids):
                table = table.filter(pc.invert(pc.is_in(table.column("image_id"), value_set=pa.array(sorted(bad)))))
        return table, errors

    def _write(self, name: str, unit_id: str, table: pa.Table, errors: list[ErrorRecord], record: StageRecord) -> None:
        if errors:
            self.store.write_table(errors_path(name, unit_id), errors_table(name, unit_id, errors))
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
