"""Helpers for testing stages without a run: build a unit by hand, run a stage on it under the engine's checks.

This module is public: a package that adds its own stages tests them with it the way grand-engine tests its own::

    from grand_engine.testing import make_unit, run_stage

    unit = make_unit({"a": np.zeros((30, 40, 3), np.uint8)}, inputs={"tagging": [{"image_id": "a", "tags": ["dog"]}]})
    result = run_stage(MyStage.configure({"threshold": 0.3}, clip=fake_clip), unit)
    assert result.table.column("labels").to_pylist() == [["dog"]]

:func:`run_stage` applies exactly the contract the engine's runner enforces (declared schema, one row per image,
no unknown or duplicate ids, every image accounted for), so a stage that passes here behaves the same in a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from grand_engine.runtime.executor import check_result
from grand_engine.runtime.stage import STAGES, Stage, StageResult, UnitInput
from grand_engine.schema import IMAGES_SCHEMA

ImageSpec = Mapping[str, "np.ndarray | None"] | Sequence[str] | Sequence[Mapping[str, Any]]


def images_table(images: ImageSpec) -> pa.Table:
    """An ``images`` table for ``images``: a mapping of id to a decoded ``H×W×3`` array (its size becomes the row's
    ``width``/``height``; ``None`` stands for an image that fails to decode), a list of ids, or a list of row dicts
    (``image_id`` plus any ``images`` columns)."""
    if isinstance(images, Mapping):
        rows = []
        for image_id, array in images.items():
            height, width = (10, 10) if array is None else np.asarray(array).shape[:2]
            rows.append(_image_row(image_id, width=int(width), height=int(height)))
    else:
        rows = [_image_row(item) if isinstance(item, str) else _image_row(**item) for item in images]
    return pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA)


def _image_row(image_id: str, **fields: Any) -> dict[str, Any]:
    return {"image_id": image_id, "file_name": f"{image_id}.jpg", "format": "JPEG", **fields}


def stage_table(stage: str, rows: pa.Table | Sequence[Mapping[str, Any]]) -> pa.Table:
    """``rows`` as the table of the registered stage ``stage`` (cast to its schema); a table is returned as is."""
    if isinstance(rows, pa.Table):
        return rows
    return pa.Table.from_pylist([dict(r) for r in rows], schema=STAGES.get(stage).schema)


def make_unit(
    images: ImageSpec,
    inputs: Mapping[str, pa.Table | Sequence[Mapping[str, Any]]] | None = None,
    *,
    annotations: Mapping[str, bytes | None] | None = None,
    unit_id: str = "test/00000",
) -> UnitInput:
    """A :class:`UnitInput` as a stage receives it.

    ``images`` is given as for :func:`images_table`; when it maps ids to arrays, ``unit.pixels(id)`` returns them
    (read-only, as the engine's decoded-image cache does) and an id mapped to ``None`` raises ``OSError`` as a corrupt
    file would. ``inputs`` maps an upstream stage name to its table or to row dicts (cast to that stage's schema;
    rows must be in the images' order). ``annotations`` maps ids to the raw SA-1B JSON bytes of
    ``unit.annotation_json``.
    """
    table = images_table(images)
    pixel_loader = None
    if isinstance(images, Mapping):
        arrays = dict(images)

        def pixel_loader(row: dict[str, Any]) -> np.ndarray:
            array = arrays[row["image_id"]]
            if array is None:
                raise OSError(f"cannot decode {row['file_name']}")
            view = np.asarray(array).view()
            view.flags.writeable = False
            return view

    annotation_loader = None
    if annotations is not None:
        saved = dict(annotations)

        def annotation_loader(row: dict[str, Any]) -> bytes | None:
            return saved.get(row["image_id"])

    tables = {name: stage_table(name, rows) for name, rows in (inputs or {}).items()}
    return UnitInput(unit_id, table, tables, pixel_loader=pixel_loader, annotation_loader=annotation_loader)


def run_stage(stage: Stage, unit: UnitInput, setup: bool = True) -> StageResult:
    """Run ``stage`` on ``unit`` as the engine does: ``setup()`` (unless ``setup=False``), ``process()``, then the
    runner's contract checks; the table is cast to the stage's schema and an image without a row or an error row
    gets a ``MissingOutput`` error row."""
    if setup:
        stage.setup()
    table, errors = check_result(stage, unit, stage.process(unit))
    return StageResult(table, errors)
