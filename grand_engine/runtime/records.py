"""The record book: every completion record of an output, read with a handful of requests, and kept compact.

Records are written one file per (stage, unit) as each pair completes (``_manifests/<stage>/<unit>.json``), so a
crash loses at most the pair in flight. Reading 2.6 million such files back (11M images in units of 128, 30 stages)
would take one request each, so the driver **compacts** them: once every pending pair of a shard has finished (and
for every shard a run touched, at its end) it writes all of the shard's records as one Arrow IPC file
(``_manifests/_shards/<shard>.arrow``, LZ4-compressed: it reads back far faster than Parquet, and planning reads one
per shard), and then deletes the shard's per-pair files. A crash between the two leaves
both, and the per-pair file (newer or equal) wins when they disagree.

:meth:`RecordBook.load` lists ``_manifests/`` once (compacted files plus the few per-pair files written since),
reads them in parallel and holds the result as one Arrow table, so the planner and ``status`` compare millions of
records with vectorised operations instead of Python loops.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import MANIFESTS, StageRecord, manifest_path

COMPACT = f"{MANIFESTS}/_shards"
"""Folder of the compacted records, one Parquet file per shard."""

RECORDS_SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("unit_id", pa.string()),
        ("fingerprint", pa.string()),
        ("status", pa.string()),
        ("rows", pa.int64()),
        ("images", pa.int64()),
        ("errors", pa.int64()),
        ("warnings", pa.int64()),
        ("output", pa.string()),
        ("bytes", pa.int64()),
        ("errors_output", pa.string()),
        ("errors_bytes", pa.int64()),
        ("schema_version", pa.string()),
        ("seconds", pa.float64()),
        ("host", pa.string()),
        ("engine_version", pa.string()),
        ("finished_at", pa.string()),
        ("message", pa.string()),
        ("error_types", pa.string()),  # JSON object (null when the pair had no error row)
    ]
)
"""Columns of a compacted record file (the fields of :class:`StageRecord`, ``error_types`` as JSON)."""

LOCAL_WORKERS, REMOTE_WORKERS = 4, 32
"""Parallel reads: a local disk gains little beyond a few threads; an object store hides each request's latency."""


def shard_of(unit_id: str) -> str:
    """The shard of a unit id ``<shard>/<n:05d>``."""
    return unit_id.rsplit("/", 1)[0]


def compact_path(shard: str) -> str:
    return f"{COMPACT}/{shard}.arrow"


def write_compacted(store: OutputStore, shard: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    store.write_bytes(compact_path(shard), sink.getvalue().to_pybytes())


def records_table(records: Iterable[StageRecord]) -> pa.Table:
    """Records as a table of :data:`RECORDS_SCHEMA` (failure tracebacks are not kept)."""
    rows = []
    for r in records:
        row = {f.name: getattr(r, f.name) for f in fields(StageRecord) if f.name in RECORDS_SCHEMA.names}
        row["error_types"] = json.dumps(r.error_types, sort_keys=True) if r.error_types else None
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=RECORDS_SCHEMA)


def _to_record(row: dict[str, Any]) -> StageRecord:
    row = dict(row)
    row["error_types"] = json.loads(row["error_types"]) if row.get("error_types") else None
    return StageRecord.from_dict({k: v for k, v in row.items() if v is not None or k == "error_types"})


def _key(table: pa.Table) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(table["stage"], table["unit_id"], "\x1f")


def _workers(store: OutputStore) -> int:
    return LOCAL_WORKERS if store.is_local else REMOTE_WORKERS


class RecordBook:
    """Every completion record of an output (see the module docstring); ``table`` has one row per (stage, unit).

    The driver adds what it commits with :meth:`add`, so the book stays current during a run and
    :meth:`compact_shard` writes what it knows.
    """

    def __init__(self, table: pa.Table | None = None) -> None:
        self._table = table if table is not None else RECORDS_SCHEMA.empty_table()
        self._added: dict[tuple[str, str], StageRecord] = {}
        self._index: dict[tuple[str, str], int] | None = None
        self.compacted_at: dict[str, int] = {}  # shard -> mtime (ns) of its compacted records (local stores)

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, store: OutputStore) -> RecordBook:
        """Read the compacted and per-pair records of ``store`` (one listing, parallel reads)."""
        listing, _ = store.listing(MANIFESTS, read_size=lambda folder, mtime: False)
        compacted = sorted(p for p in listing if p.startswith(f"{COMPACT}/") and p.endswith(".arrow"))
        loose = sorted(p for p in listing if p.endswith(".json") and not p.startswith(f"{COMPACT}/"))
        with ThreadPoolExecutor(max_workers=_workers(store)) as pool:
            tables = [t for t in pool.map(lambda rel: _read_compacted(store, rel), compacted) if t is not None]
            records = [r for r in pool.map(lambda rel: _read_loose(store, rel), loose) if r is not None]
        table = pa.concat_tables(tables) if tables else RECORDS_SCHEMA.empty_table()
        if records:
            newer = records_table(records)
            table = table.filter(pc.invert(pc.is_in(_key(table), value_set=_key(newer).combine_chunks())))
            table = pa.concat_tables([table, newer])
        book = cls(table.combine_chunks())
        if store.is_local:  # when each shard's records were compacted: folders unchanged since need no stat
            for rel in compacted:
                book.compacted_at[rel[len(COMPACT) + 1 : -len(".arrow")]] = store.mtime_ns(rel) or 0
        return book

    # -- lookups ---------------------------------------------------------------------------------------------
    @property
    def table(self) -> pa.Table:
        """All records (loaded and added) as one table."""
        if not self._added:
            return self._table
        added = records_table(self._added.values())
        kept = self._table.filter(pc.invert(pc.is_in(_key(self._table), value_set=_key(added).combine_chunks())))
        return pa.concat_tables([kept, added])

    def __len__(self) -> int:
        return self.table.num_rows

    def get(self, stage: str, unit_id: str) -> StageRecord | None:
        """The record of one (stage, unit), or ``None``."""
        if (stage, unit_id) in self._added:
            return self._added[(stage, unit_id)]
        if self._index is None:
            stages, units = self._table["stage"].to_pylist(), self._table["unit_id"].to_pylist()
            self._index = {k: i for i, k in enumerate(zip(stages, units, strict=True))}
        i = self._index.get((stage, unit_id))
        return None if i is None else _to_record(self._table.slice(i, 1).to_pylist()[0])

    def records(self, stage: str | None = None, shard: str | None = None) -> list[StageRecord]:
        """The records of one stage and/or one shard (all by default), as objects."""
        table = self.table
        if stage is not None:
            table = table.filter(pc.equal(table["stage"], stage))
        if shard is not None:
            table = table.filter(pc.starts_with(table["unit_id"], f"{shard}/"))
        return [_to_record(row) for row in table.to_pylist()]

    # -- changes ---------------------------------------------------------------------------------------------
    def add(self, record: StageRecord) -> None:
        """A record the driver has just committed."""
        self._added[(record.stage, record.unit_id)] = record

    def remove(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Forget (stage, unit) pairs (their records were invalidated)."""
        gone = set(pairs)
        for pair in gone:
            self._added.pop(pair, None)
        if gone:
            keys = pa.array(sorted(f"{s}\x1f{u}" for s, u in gone))
            self._table = self._table.filter(pc.invert(pc.is_in(_key(self._table), value_set=keys)))
            self._index = None

    def compact_shard(self, store: OutputStore, shard: str) -> int:
        """Write every record of ``shard`` as one file, then delete the shard's per-pair files; return the count.

        Only the driver calls this, under the output's lock, when no pair of the shard is still running."""
        table = self.table
        mine = table.filter(pc.starts_with(table["unit_id"], f"{shard}/"))
        if mine.num_rows:
            write_compacted(store, shard, mine)
        else:
            store.delete(compact_path(shard))
        for stage in sorted(set(table["stage"].to_pylist())):
            store.delete_tree(f"{MANIFESTS}/{stage}/{shard}")
        return mine.num_rows


def _read_compacted(store: OutputStore, rel: str) -> pa.Table | None:
    try:
        with pa.ipc.open_file(pa.BufferReader(store.read_bytes(rel))) as reader:
            return reader.read_all().select(RECORDS_SCHEMA.names).cast(RECORDS_SCHEMA)
    except (FileNotFoundError, pa.ArrowInvalid, KeyError, ValueError):
        return None  # unreadable: its pairs count as not done and are recomputed


def _read_loose(store: OutputStore, rel: str) -> StageRecord | None:
    try:
        return StageRecord.from_dict(json.loads(store.read_text(rel)))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def invalidate_pairs(store: OutputStore, book: RecordBook, pairs: Sequence[tuple[str, str]]) -> int:
    """Remove the records of ``pairs`` (stage, unit) so the next run recomputes them: their per-pair files, and their
    rows of the compacted files (each affected shard's file rewritten once). Returns how many records existed."""
    existing = [(s, u) for s, u in pairs if book.get(s, u) is not None]
    if not existing:
        return 0
    by_shard: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for stage, unit_id in existing:
        by_shard[shard_of(unit_id)].append((stage, unit_id))
        store.delete(manifest_path(stage, unit_id))
    book.remove(existing)
    for shard in by_shard:
        if store.exists(compact_path(shard)):
            # The file's time says when its shard's outputs were last known complete (the planner lists only the
            # folders changed since): dropping records must not move it forward.
            compacted_at = store.mtime_ns(compact_path(shard))
            table = book.table
            mine = table.filter(pc.starts_with(table["unit_id"], f"{shard}/"))
            if mine.num_rows:
                write_compacted(store, shard, mine)
                if compacted_at is not None:
                    store.set_mtime_ns(compact_path(shard), compacted_at)
            else:
                store.delete(compact_path(shard))
    return len(existing)


def positions(column: pa.ChunkedArray | pa.Array, values: Sequence[str]) -> np.ndarray:
    """For each entry of ``column``, its position in ``values`` (``-1`` when absent), as an int64 array."""
    found = pc.index_in(column, value_set=pa.array(list(values), pa.string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def read_records(store: OutputStore, stage: str | None = None) -> list[StageRecord]:
    """Every record of ``store`` (of one stage, or of all), compacted or not."""
    return RecordBook.load(store).records(stage)


def read_record(store: OutputStore, stage: str, unit_id: str) -> StageRecord | None:
    """The record of one (stage, unit), or ``None`` (reads the whole book: for tests and one-off lookups)."""
    return RecordBook.load(store).get(stage, unit_id)


def invalidate(store: OutputStore, stage: str, unit_id: str) -> bool:
    """Remove the record of one (stage, unit) so the next run recomputes it; whether it existed."""
    return invalidate_pairs(store, RecordBook.load(store), [(stage, unit_id)]) == 1
