"""The planner: shards → work units → for each unit, the stages still to run.

A work unit is a contiguous slice of one shard's entries (``unit_size`` of them, in tar order), with
id ``<shard>/<n:05d>``. It is the unit of scheduling, writing, retry and resume. A (stage, unit) is
still to do unless its manifest record carries the fingerprint the stage has now; the unit part of
that fingerprint is the shard's identity (names and sizes of its members), so a shard that changes
is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grand_engine.config import ConfigError
from grand_engine.io.inputs import IMAGES, InputKind
from grand_engine.io.sa1b import Member, ShardIndex
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import ERRORS, INDEX
from grand_engine.runtime.pipeline import Pipeline
from grand_engine.runtime.records import RecordBook, positions

log = logging.getLogger(__name__)


@dataclass
class Unit:
    """One work unit: its shard entries and the stages still to run for it."""

    unit_id: str
    shard: str
    shard_identity: str
    members: list[Member]
    todo: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    span: tuple[int, int] = (0, 0)  # the unit's slice of its shard's members

    def to_json(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "shard": self.shard,
            "shard_identity": self.shard_identity,
            "members": [m.to_json() for m in self.members],
            "todo": self.todo,
            "done": self.done,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        return cls(
            unit_id=data["unit_id"],
            shard=data["shard"],
            shard_identity=data["shard_identity"],
            members=[Member.from_json(m) for m in data["members"]],
            todo=list(data["todo"]),
            done=list(data.get("done", [])),
        )


def unit_fingerprint(stage_fingerprint: str, unit: Unit) -> str:
    return f"{stage_fingerprint}-{unit.shard_identity}"


def shard_identity(index: ShardIndex) -> str:
    """A short digest of the shard's entries (names and sizes), stable across copies and mtimes."""
    h = hashlib.sha256(index.kind.encode())
    for m in index.members:
        size = m.image.size if m.image else -1
        ann = m.annotation.size if m.annotation else -1
        extra = "".join(
            f"\0{role}={loc.size}" for role, loc in sorted(m.extra.items())
        )  # e.g. a video's auto masklets
        h.update(f"{m.file_name}\0{size}\0{ann}\0{m.error_type or ''}{extra}\n".encode())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class ShardSummary:
    """What the planner needs of a shard when none of its units has work: its name, identity and size."""

    shard: str
    path: str
    identity: str
    members: int


def _cache_valid(cached: dict[str, Any], path: Path, st: os.stat_result, kind: InputKind) -> bool:
    same_file = cached.get("path") == str(path) and cached.get("size") == st.st_size
    return same_file and cached.get("mtime_ns") == st.st_mtime_ns and cached.get("input", IMAGES.name) == kind.name


def _cache_rels(path: Path) -> tuple[str, str]:
    return f"{INDEX}/{path.stem}.json", f"{INDEX}/{path.stem}.summary.json"


def load_index(path: Path, store: OutputStore | None, kind: InputKind = IMAGES) -> ShardIndex:
    """Index a shard with ``kind``, reusing the copy cached under ``OUT/_index`` when the file is unchanged."""
    st = path.stat()
    cacheable = store is not None and path.is_file()
    if cacheable:
        try:
            cached = json.loads(store.read_text(_cache_rels(path)[0]))
            if _cache_valid(cached, path, st, kind):
                return ShardIndex.from_json(cached["index"])
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            pass
    index = kind.index_shard(path)
    if cacheable:
        stamp = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "input": kind.name}
        index_rel, summary_rel = _cache_rels(path)
        store.write_text(index_rel, json.dumps({**stamp, "index": index.to_json()}))
        summary = {**stamp, "shard": index.shard, "identity": shard_identity(index), "members": len(index.members)}
        store.write_text(summary_rel, json.dumps(summary))
    return index


def summarize_shard(
    path: Path, store: OutputStore | None, kind: InputKind = IMAGES
) -> tuple[ShardSummary, ShardIndex | None]:
    """The shard's summary from the small cached file when the shard is unchanged (no index is read); otherwise
    index it (caching both) and return the index too."""
    if store is not None and path.is_file():
        try:
            cached = json.loads(store.read_text(_cache_rels(path)[1]))
            if _cache_valid(cached, path, path.stat(), kind):
                return ShardSummary(cached["shard"], str(path), cached["identity"], int(cached["members"])), None
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            pass
    index = load_index(path, store, kind)
    return ShardSummary(index.shard, index.path, shard_identity(index), len(index.members)), index


def _check_unique(summaries: list[ShardSummary]) -> None:
    seen: dict[str, str] = {}
    for summary in summaries:
        if summary.shard in seen and seen[summary.shard] != summary.path:
            raise ConfigError(
                f"two shards share the name {summary.shard!r} ({seen[summary.shard]} and {summary.path}); "
                "unit ids are <shard>/<n>, so shard names must be unique"
            )
        seen[summary.shard] = summary.path


def cut_units(summaries: list[ShardSummary], unit_size: int, max_units: int | None = None) -> list[Unit]:
    """Cut every shard into units of ``unit_size`` entries (in shard order); members are attached later."""
    if unit_size < 1:
        raise ConfigError("--unit-size must be at least 1")
    _check_unique(summaries)
    units: list[Unit] = []
    for summary in summaries:
        for n, start in enumerate(range(0, summary.members, unit_size)):
            span = (start, min(start + unit_size, summary.members))
            units.append(Unit(f"{summary.shard}/{n:05d}", summary.shard, summary.identity, [], span=span))
            if max_units is not None and len(units) >= max_units:
                return units
    return units


def make_units(indexes: list[ShardIndex], unit_size: int, max_units: int | None = None) -> list[Unit]:
    """Cut fully indexed shards into units of ``unit_size`` entries, members attached."""
    summaries = [ShardSummary(i.shard, i.path, shard_identity(i), len(i.members)) for i in indexes]
    units = cut_units(summaries, unit_size, max_units)
    by_shard = {i.shard: i for i in indexes}
    for unit in units:
        unit.members = by_shard[unit.shard].members[slice(*unit.span)]
    return units


def _scan(store: OutputStore, prefix: str, compacted_at: dict[str, int]) -> tuple[list[str], list[int], list[str]]:
    """The files below ``prefix`` with their sizes, and the shards whose files were not listed because their folder
    is unchanged since the shard's records were compacted (a local disk only: creating, renaming or deleting a file
    changes its folder's modification time; an object store is listed whole)."""
    folders = store.subfolders(prefix)
    if folders is None:
        paths, sizes = store.listing(prefix)
        return paths, sizes, []
    paths, sizes, unchanged = [], [], []
    for shard, mtime in folders.items():
        if shard in compacted_at and mtime < compacted_at[shard]:
            unchanged.append(shard)
        else:
            found, found_sizes = store.listing(f"{prefix}/{shard}")
            paths += found
            sizes += found_sizes
    return paths, sizes, unchanged


def _listed(
    store: OutputStore, stages: list[str], units: list[Unit], compacted_at: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The listed size of every (unit, stage) table and error file: ``-2`` absent, ``-1`` present with its size not
    read (its local folder is unchanged since its shard's records were compacted), else the size. One listing per
    stage folder (an object store) or per changed shard folder (a local disk), in parallel."""
    unit_ids = [u.unit_id for u in units]
    spans: dict[str, list[int]] = {}
    for i, unit in enumerate(units):
        spans.setdefault(unit.shard, [i, i])[1] = i + 1
    prefixes = [*stages, *(f"{ERRORS}/{s}" for s in stages)]
    tables = np.full((len(unit_ids), len(stages)), -2, dtype=np.int64)
    errors = np.full((len(unit_ids), len(stages)), -2, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=min(len(prefixes), 32) or 1) as pool:
        listings = pool.map(lambda prefix: _scan(store, prefix, compacted_at), prefixes)
        for k, (paths, sizes, unchanged) in enumerate(listings):
            stage = prefixes[k] if k < len(stages) else prefixes[k][len(ERRORS) + 1 :]
            grid, column = (tables if k < len(stages) else errors), stages.index(stage)
            for shard in unchanged:
                if shard in spans:
                    grid[slice(*spans[shard]), column] = -1
            if not paths:
                continue
            start = len(prefixes[k]) + 1
            names = pa.array(paths, pa.string())
            rows = positions(pc.utf8_slice_codeunits(names, start, -len(".parquet")), unit_ids)
            found = rows >= 0
            grid[rows[found], column] = np.asarray(sizes, dtype=np.int64)[found]
    return tables, errors


def fill_todo(pipeline: Pipeline, units: list[Unit], store: OutputStore, book: RecordBook | None = None) -> int:
    """Set each unit's ``todo``/``done``: a (stage, unit) is done when its record is ``done`` with the stage's
    current fingerprint and its table (and error rows, when it had any) are there with the recorded sizes (where the
    size was read: see :func:`_listed`). Compares every record at once (vectorised); returns how many records were
    refused because their output is gone or differs."""
    order = pipeline.order
    unit_ids = [u.unit_id for u in units]
    book = book if book is not None else RecordBook.load(store)
    table = book.table.filter(pc.equal(book.table["status"], "done"))
    si = positions(table["stage"], order)
    ui = positions(table["unit_id"], unit_ids)
    keep = (si >= 0) & (ui >= 0)
    table, si, ui = table.filter(pa.array(keep)), si[keep], ui[keep]
    expected = pc.binary_join_element_wise(
        pc.take(pa.array([pipeline.fingerprints[s] for s in order]), pa.array(si)),
        pc.take(pa.array([u.shard_identity for u in units]), pa.array(ui)),
        "-",
    )
    current = pc.equal(table["fingerprint"], expected).to_numpy(zero_copy_only=False)
    tables, errors = _listed(store, order, units, book.compacted_at)
    table_size, errors_size = tables[ui, si], errors[ui, si]
    has_errors = pc.not_equal(table["errors_output"], "").to_numpy(zero_copy_only=False)
    table_ok = (table_size == -1) | (table_size == table["bytes"].to_numpy())
    errors_ok = ~has_errors | (errors_size == -1) | (errors_size == table["errors_bytes"].to_numpy())
    present = table_ok & errors_ok
    done = np.zeros((len(units), len(order)), dtype=bool)
    done[ui[current & present], si[current & present]] = True
    lost = current & ~present
    if lost.any():
        stages = table["stage"].filter(pa.array(lost)).to_pylist()[:3]
        lost_units = table["unit_id"].filter(pa.array(lost)).to_pylist()[:3]
        log.warning(
            "%d (stage, unit) records point at a table that is missing or has another size (e.g. %s): recomputing them",
            int(lost.sum()),
            ", ".join(f"{s} {u}" for s, u in zip(stages, lost_units, strict=True)),
        )
    everything = list(order)
    for unit, row in zip(units, done, strict=True):
        if row.all():
            unit.todo, unit.done = [], everything
        else:
            unit.todo = [s for s, d in zip(order, row, strict=True) if not d]
            unit.done = [s for s, d in zip(order, row, strict=True) if d]
    return int(lost.sum())


@dataclass
class Plan:
    pipeline: Pipeline
    units: list[Unit]
    shards: list[str]
    unit_size: int
    book: RecordBook = field(default_factory=RecordBook)

    @property
    def pending(self) -> list[Unit]:
        return [u for u in self.units if u.todo]

    def pairs_todo(self) -> int:
        return sum(len(u.todo) for u in self.units)


def _attach_members(
    units: list[Unit],
    summaries: list[ShardSummary],
    indexes: dict[str, ShardIndex],
    store: OutputStore,
    kind: InputKind,
) -> None:
    """Give the units with work their shard members, reading each needed shard's full index once."""
    paths = {s.shard: Path(s.path) for s in summaries}
    needed = sorted({u.shard for u in units if u.todo and not u.members} - set(indexes))
    with ThreadPoolExecutor(max_workers=8) as pool:
        for shard, index in zip(needed, pool.map(lambda s: load_index(paths[s], store, kind), needed), strict=True):
            indexes[shard] = index
    for unit in units:
        if unit.todo and not unit.members:
            unit.members = indexes[unit.shard].members[slice(*unit.span)]


def make_plan(
    pipeline: Pipeline,
    shard_specs: list[str],
    store: OutputStore,
    unit_size: int,
    max_units: int | None = None,
) -> Plan:
    """List the shards (as the pipeline's input kind reads them), cut units and decide what each unit still needs.

    A finished shard costs one small cached summary (no index is read) and its records one compacted file, so
    planning a finished run of many shards reads a few files per shard (``benchmarks/bench_plan_scale.py``)."""
    kind = pipeline.input_kind
    paths = kind.list_shards(shard_specs)
    workers = 8 if store.is_local else 32
    with ThreadPoolExecutor(max_workers=workers) as pool:
        book_future = pool.submit(RecordBook.load, store)
        found = list(pool.map(lambda p: summarize_shard(p, store, kind), paths))
        book = book_future.result()
    summaries = [s for s, _ in found]
    indexes = {s.shard: i for s, i in found if i is not None}
    units = cut_units(summaries, unit_size, max_units)
    fill_todo(pipeline, units, store, book)
    _attach_members(units, summaries, indexes, store, kind)
    return Plan(pipeline=pipeline, units=units, shards=[os.fspath(p) for p in paths], unit_size=unit_size, book=book)
