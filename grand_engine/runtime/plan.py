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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grand_engine.config import ConfigError
from grand_engine.io.inputs import IMAGES, InputKind
from grand_engine.io.sa1b import Member, ShardIndex
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import INDEX, read_record
from grand_engine.runtime.pipeline import Pipeline


@dataclass
class Unit:
    """One work unit: its shard entries and the stages still to run for it."""

    unit_id: str
    shard: str
    shard_identity: str
    members: list[Member]
    todo: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

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
        extra = "".join(f"\0{role}={loc.size}" for role, loc in sorted(m.extra.items()))  # e.g. a video's auto masklets
        h.update(f"{m.file_name}\0{size}\0{ann}\0{m.error_type or ''}{extra}\n".encode())
    return h.hexdigest()[:12]


def load_index(path: Path, store: OutputStore | None, kind: InputKind = IMAGES) -> ShardIndex:
    """Index a shard with ``kind``, reusing the copy cached under ``OUT/_index`` when the file is unchanged."""
    st = path.stat()
    cache_rel = None
    if store is not None and path.is_file():
        cache_rel = f"{INDEX}/{path.stem}.json"
        try:
            cached = json.loads(store.read_text(cache_rel))
            same_file = cached["path"] == str(path) and cached["size"] == st.st_size
            if same_file and cached["mtime_ns"] == st.st_mtime_ns and cached.get("input", IMAGES.name) == kind.name:
                return ShardIndex.from_json(cached["index"])
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            pass
    index = kind.index_shard(path)
    if cache_rel is not None and store is not None:
        payload = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "index": index.to_json()}
        if kind.name != IMAGES.name:
            payload["input"] = kind.name
        store.write_text(cache_rel, json.dumps(payload))
    return index


def make_units(indexes: list[ShardIndex], unit_size: int, max_units: int | None = None) -> list[Unit]:
    """Cut every shard into units of ``unit_size`` entries (in shard order)."""
    if unit_size < 1:
        raise ConfigError("--unit-size must be at least 1")
    seen: dict[str, str] = {}
    units: list[Unit] = []
    for index in indexes:
        if index.shard in seen and seen[index.shard] != index.path:
            raise ConfigError(
                f"two shards share the name {index.shard!r} ({seen[index.shard]} and {index.path}); "
                "unit ids are <shard>/<n>, so shard names must be unique"
            )
        seen[index.shard] = index.path
        ident = shard_identity(index)
        for n, start in enumerate(range(0, len(index.members), unit_size)):
            units.append(
                Unit(
                    unit_id=f"{index.shard}/{n:05d}",
                    shard=index.shard,
                    shard_identity=ident,
                    members=index.members[start : start + unit_size],
                )
            )
            if max_units is not None and len(units) >= max_units:
                return units
    return units


def fill_todo(pipeline: Pipeline, units: list[Unit], store: OutputStore) -> None:
    """Set each unit's ``todo``/``done`` from the manifest records and current fingerprints."""
    for unit in units:
        unit.todo, unit.done = [], []
        for name in pipeline.order:
            record = read_record(store, name, unit.unit_id)
            expected = unit_fingerprint(pipeline.fingerprints[name], unit)
            if record is not None and record.status == "done" and record.fingerprint == expected:
                unit.done.append(name)
            else:
                unit.todo.append(name)


@dataclass
class Plan:
    pipeline: Pipeline
    units: list[Unit]
    shards: list[str]
    unit_size: int

    @property
    def pending(self) -> list[Unit]:
        return [u for u in self.units if u.todo]

    def pairs_todo(self) -> int:
        return sum(len(u.todo) for u in self.units)


def make_plan(
    pipeline: Pipeline,
    shard_specs: list[str],
    store: OutputStore,
    unit_size: int,
    max_units: int | None = None,
) -> Plan:
    """List and index the shards (as the pipeline's input kind reads them), cut units and decide what each unit
    still needs."""
    kind = pipeline.input_kind
    paths = kind.list_shards(shard_specs)
    indexes = [load_index(p, store, kind) for p in paths]
    units = make_units(indexes, unit_size, max_units)
    fill_todo(pipeline, units, store)
    return Plan(pipeline=pipeline, units=units, shards=[os.fspath(p) for p in paths], unit_size=unit_size)
