"""Hand-built run outputs for the statistics and comparison tests.

Tables are written with the helpers of ``tests/grandf/level4.py`` (real schemas, real store, ``done`` records);
:func:`write_with_errors` adds a stage's error rows and a record that points at them, as the driver does.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import StageRecord, commit_record, data_path, errors_path
from grand_engine.schema import ERRORS_SCHEMA


def error_rows(stage: str, unit_id: str, rows: list[tuple[str, str, str]], severity: bool = True) -> pa.Table:
    """Error rows ``(image_id, error_type, severity)``; ``severity=False`` writes the table of an output made before
    the column existed."""
    table = pa.Table.from_pylist(
        [
            {
                "image_id": i,
                "stage": stage,
                "unit_id": unit_id,
                "error_type": t,
                "message": f"{t} on {i}",
                "severity": s,
            }
            for i, t, s in rows
        ],
        schema=ERRORS_SCHEMA,
    )
    return table if severity else table.drop_columns(["severity"])


def write_with_errors(store: OutputStore, stage: str, unit_id: str, table: pa.Table, errors: pa.Table) -> None:
    """One (stage, unit) table, its error rows and its ``done`` record (error and warning counts set)."""
    rel = data_path(stage, unit_id)
    size = store.write_table(rel, table)
    err_rel = errors_path(stage, unit_id)
    err_size = store.write_table(err_rel, errors)
    severities = errors["severity"].to_pylist() if "severity" in errors.column_names else ["error"] * errors.num_rows
    types: dict[str, int] = {}
    for t in errors["error_type"].to_pylist():
        types[t] = types.get(t, 0) + 1
    commit_record(
        store,
        StageRecord(
            stage=stage,
            unit_id=unit_id,
            fingerprint="test",
            status="done",
            rows=table.num_rows,
            images=table.num_rows + severities.count("error"),
            errors=severities.count("error"),
            warnings=severities.count("warning"),
            output=rel,
            bytes=size,
            errors_output=err_rel,
            errors_bytes=err_size,
            error_types=types,
        ),
    )


def write_run_json(store: OutputStore, stages: dict[str, dict[str, Any]], manifest: str = "test") -> None:
    """A minimal ``run.json``: the manifest name and each stage's inputs and parameters."""
    store.write_text("run.json", json.dumps({"manifest": manifest, "seed": 0, "stages": stages}))
