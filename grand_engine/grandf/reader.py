"""Streaming reads of a run's stage tables: one unit file at a time, never the whole dataset.

Only units whose manifest record says ``done`` are read, so a table left behind by a crash or by
``grand-engine rerun`` (record removed, file not yet recomputed) is never exported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from grand_engine.io.inputs import IMAGES, InputKind, get_input_kind
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import StageRecord, data_path
from grand_engine.runtime.records import read_records

BATCH_ROWS = 32
"""Rows converted to Python at a time (a level-4 row with its masks is tens of KB)."""


class MissingStageError(LookupError):
    """The output has no completed unit of a stage an export or the explorer needs."""


def done_records(store: OutputStore, stage: str) -> dict[str, StageRecord]:
    """The ``done`` manifest records of ``stage`` by unit id, in unit order (``rows``: the unit's table rows)."""
    records = {r.unit_id: r for r in read_records(store, stage) if r.status == "done"}
    return dict(sorted(records.items()))


def done_units(store: OutputStore, stage: str) -> list[str]:
    """Sorted ids of the units whose ``stage`` record is ``done``."""
    return list(done_records(store, stage))


def require_units(store: OutputStore, stage: str, hint: str = "") -> dict[str, StageRecord]:
    """:func:`done_records`, raising :class:`MissingStageError` naming the stage when there are none."""
    records = done_records(store, stage)
    if not records:
        raise MissingStageError(
            f"{store.uri} has no completed unit of stage {stage!r}" + (f"; {hint}" if hint else "")
        )
    return records


def read_unit(store: OutputStore, stage: str, unit_id: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The ``stage`` table of one unit (optionally only ``columns``)."""
    table = store.read_table(data_path(stage, unit_id))
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table


def rows_by_id(store: OutputStore, stage: str, unit_id: str) -> dict[str, dict[str, Any]]:
    """``{image_id: row}`` of one unit's ``stage`` table (empty when the unit has no such file)."""
    try:
        table = read_unit(store, stage, unit_id)
    except FileNotFoundError:
        return {}
    return {r["image_id"]: r for r in iter_rows(table)}


def image_info(store: OutputStore, unit_id: str) -> dict[str, dict[str, Any]]:
    """``{image_id: images row}`` of one unit (file name, size and the locator of the pixels)."""
    return rows_by_id(store, "images", unit_id)


def input_kind(store: OutputStore) -> InputKind:
    """The input kind the run in ``store`` read (``run.json``'s ``input``; ``images`` when the output has no
    ``run.json`` or it names none). ``ValueError`` when the kind is not installed here."""
    try:
        name = json.loads(store.read_text("run.json")).get("input") or IMAGES.name
    except FileNotFoundError:
        return IMAGES
    try:
        return get_input_kind(name)
    except KeyError as exc:
        raise ValueError(
            f"{store.uri} was made from input kind {name!r}, which is not installed: {exc.args[0]}"
        ) from None


def iter_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of ``table`` as dicts, converted a few at a time."""
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        yield from batch.to_pylist()
