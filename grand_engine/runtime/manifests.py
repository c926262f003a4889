"""Where each (stage, unit) output lives, and the manifest records that say it is done.

Layout under the output root (``unit_id`` is ``<shard>/<n:05d>``)::

    <stage>/<unit_id>.parquet              the stage's table for the unit
    _errors/<stage>/<unit_id>.parquet      its per-image error rows (absent when there were none)
    _manifests/<stage>/<unit_id>.json      the completion record, written last, by the driver
    _failures/<stage>/<unit_id>.json       why a unit failed as a whole (removed once it succeeds)
    _index/<shard>.json                    the shard's member index (offsets), cached
    run.json, _runs/<time>.json            resolved configuration of the latest and of every run

A (stage, unit) is done iff its manifest record exists, carries the stage's current fingerprint, and its table (and
error rows) are there with the recorded sizes. The driver compacts the records of a finished shard into
``_manifests/_shards/<shard>.parquet`` (:mod:`grand_engine.runtime.records` reads both kinds).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from grand_engine.io.store import OutputStore

MANIFESTS = "_manifests"
ERRORS = "_errors"
FAILURES = "_failures"
INDEX = "_index"


def data_path(stage: str, unit_id: str) -> str:
    return f"{stage}/{unit_id}.parquet"


def errors_path(stage: str, unit_id: str) -> str:
    return f"{ERRORS}/{stage}/{unit_id}.parquet"


def manifest_path(stage: str, unit_id: str) -> str:
    return f"{MANIFESTS}/{stage}/{unit_id}.json"


def failure_path(stage: str, unit_id: str) -> str:
    return f"{FAILURES}/{stage}/{unit_id}.json"


@dataclass
class StageRecord:
    """What one execution of a stage on a unit produced (the manifest record when ``status == "done"``)."""

    stage: str
    unit_id: str
    fingerprint: str
    status: str  # "done" | "failed" | "skipped"
    rows: int = 0
    images: int = 0  # images the stage was given
    errors: int = 0  # per-image error rows (severity "error": the image has no row)
    warnings: int = 0  # per-image warning rows (severity "warning": the image was processed)
    output: str = ""  # the table's path under the output root
    bytes: int = 0  # the table's size: a table that is gone or of another size is recomputed
    errors_output: str = ""  # the error rows' path ("" when the pair had none)
    errors_bytes: int = 0
    schema_version: str = ""  # the table schema's version (grand_engine.schema_version metadata)
    seconds: float = 0.0
    host: str = ""
    engine_version: str = ""
    finished_at: str = ""
    message: str = ""  # failure reason (status failed/skipped)
    error_types: dict[str, int] | None = None
    traceback: str = ""  # the full traceback of a failure (kept in _failures/, never in a done record)

    def to_json(self) -> str:
        data = asdict(self)
        if not data["traceback"]:
            del data["traceback"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def host_name() -> str:
    return socket.gethostname()


def commit_record(store: OutputStore, record: StageRecord) -> None:
    """Write the completion record of a successful (stage, unit) and clear any earlier failure note."""
    store.write_text(manifest_path(record.stage, record.unit_id), record.to_json())
    store.delete(failure_path(record.stage, record.unit_id))


def record_failure(store: OutputStore, record: StageRecord) -> None:
    store.write_text(failure_path(record.stage, record.unit_id), record.to_json())


def iter_failures(store: OutputStore) -> list[StageRecord]:
    out = []
    for rel in store.list_files(FAILURES, ".json"):
        try:
            out.append(StageRecord.from_dict(json.loads(store.read_text(rel))))
        except (ValueError, TypeError, FileNotFoundError):
            continue
    return out
