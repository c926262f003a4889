"""Record shards: JSON Lines files of :class:`~grand_engine.sources.records.SourceRecord`, one record per line.

``grand-engine sources prepare`` writes them (``<source>-00000.jsonl``, ``<source>-00001.jsonl``, …;
``records_per_shard`` records each, every file written under a temporary name and renamed into place); a run reads
them as its shards. :func:`index_record_shard` turns one shard into members for the planner, one per line:
the member's ``annotation`` locator is the line's bytes in the shard and its ``image`` locator the image file the
record names, so the root stage ``source_records`` reads both by locator like any other input. A line that cannot
be used becomes a member with an error (an error row of the root stage):

``MalformedRecord``   not JSON, or not a valid record (the message names the field); id ``<shard>@<line>``
``DuplicateMember``   a second record with an id already seen in the shard; id ``<record id>@<line>``
``MissingImage``      the record's image file does not exist (or the record names none)
``WrongSource``       a record of another dataset than the input kind's (an ``openpsg`` run fed RefCOCOg records)
``<error_type>``      the reader's own verdict on the record (``NoRelation``, ``NoGroundablePhrase``, …)

:func:`list_record_shards` and :func:`index_record_shard` have the signatures of an input kind's
``list_shards`` and ``index_shard``.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from grand_engine.io.sa1b import Locator, Member, ShardIndex
from grand_engine.sources.records import RecordError, SourceRecord

SHARD_SUFFIX = ".jsonl"
RECORDS_PER_SHARD = 1000
"""Records per shard file by default (a unit of 128 records is then a slice of one file)."""


def write_record_shards(
    records: Iterable[SourceRecord], dest: str | Path, prefix: str, records_per_shard: int = RECORDS_PER_SHARD
) -> list[Path]:
    """Write ``records`` as ``dest/<prefix>-<n:05d>.jsonl`` files and return their paths (none when there is no
    record). Each file appears under its final name only once it is complete."""
    if records_per_shard < 1:
        raise ValueError(f"records_per_shard must be at least 1, got {records_per_shard}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    fh = None
    tmp: Path | None = None
    count = 0
    try:
        for record in records:
            if fh is None:
                target = dest / f"{prefix}-{len(paths):05d}{SHARD_SUFFIX}"
                tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
                fh = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed below or on error
                paths.append(target)
            fh.write(json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":"), allow_nan=False))
            fh.write("\n")
            count += 1
            if count == records_per_shard:
                fh.close()
                os.replace(tmp, paths[-1])
                fh, tmp, count = None, None, 0
        if fh is not None:
            fh.close()
            os.replace(tmp, paths[-1])
            fh, tmp = None, None
    finally:
        if fh is not None:
            fh.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return paths


def list_record_shards(specs: Sequence[str | Path]) -> list[Path]:
    """Record shard paths named by ``specs`` (files, folders holding ``*.jsonl``, or globs), sorted, absolute.

    A spec that names nothing raises ``FileNotFoundError`` naming it.
    """
    out: set[Path] = set()
    for spec in specs:
        text = os.fspath(spec)
        if any(ch in text for ch in "*?["):
            matches = [Path(p) for p in globlib.glob(os.path.expanduser(text))]
        else:
            path = Path(text).expanduser()
            if path.is_dir():
                matches = sorted(path.glob(f"*{SHARD_SUFFIX}"))
                if not matches:
                    raise FileNotFoundError(f"{path} holds no {SHARD_SUFFIX} record shard")
            elif path.is_file():
                matches = [path]
            else:
                raise FileNotFoundError(f"record shard {path} does not exist")
        files = [p.resolve() for p in matches if p.is_file() and p.name.endswith(SHARD_SUFFIX)]
        if not files:
            raise FileNotFoundError(f"{text} names no {SHARD_SUFFIX} record shard")
        out.update(files)
    return sorted(out)


def _member(shard: str, line_no: int, loc: Locator, line: bytes, seen: set[str], source: str | None) -> Member:
    try:
        record = SourceRecord.from_json(json.loads(line.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, RecordError) as exc:
        ident = f"{shard}@{line_no}"
        return Member(ident, ident, None, loc, "MalformedRecord", f"{shard} line {line_no}: {exc}")
    if record.record_id in seen:  # its own id, so the error row cannot be mistaken for the first record's
        message = f"{shard} line {line_no}: a second record with the id {record.record_id!r} (the first is used)"
        return Member(f"{record.record_id}@{line_no}", record.file_name, None, loc, "DuplicateMember", message)
    seen.add(record.record_id)
    if source is not None and record.source != source:
        message = (
            f"{record.record_id}: a {record.source} record in a shard read as {source} (use --input {record.source})"
        )
        return Member(record.record_id, record.file_name, None, loc, "WrongSource", message)
    if record.error_type:
        message = record.error or f"{record.record_id}: {record.error_type}"
        return Member(record.record_id, record.file_name, None, loc, record.error_type, message)
    image = Path(record.image_path) if record.image_path else None
    if image is None or not image.is_file():
        where = f"at {record.image_path}" if record.image_path else "(the record names no image path)"
        message = f"{record.record_id}: the image {record.file_name} is missing {where}"
        return Member(record.record_id, record.file_name, None, loc, "MissingImage", message)
    return Member(record.record_id, record.file_name, Locator(str(image), 0, image.stat().st_size), loc)


def index_record_shard(path: str | Path, source: str | None = None) -> ShardIndex:
    """One member per line of the record shard ``path`` (see the module docstring); blank lines are skipped.
    With ``source``, a record of another dataset is a ``WrongSource`` member."""
    path = Path(path).resolve()
    st = path.stat()
    shard = path.name.removesuffix(SHARD_SUFFIX)
    members: list[Member] = []
    seen: set[str] = set()
    offset = 0
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            size = len(raw)
            body = raw.rstrip(b"\r\n")
            if body.strip():
                loc = Locator(str(path), offset, len(body))
                members.append(_member(shard, line_no, loc, body, seen, source))
            offset += size
    return ShardIndex(
        shard=shard, path=str(path), kind="records", size=st.st_size, mtime_ns=st.st_mtime_ns, members=members
    )
