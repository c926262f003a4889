"""``grand-engine verify``: check every table of an output against its record, and every image against the tables.

For each ``done`` record: its table is there with the recorded size, readable, with the recorded row count and
schema version; its error rows likewise (rows = errors + warnings). For each (stage, unit) other than the root: every
image the stage was given (the root table's images present in all of the stage's input tables) is in the stage's
table or has an error row (severity ``error``), exactly once and never both; warning rows may accompany a row. With
``repair`` the records of the pairs that fail any check are removed (exactly those), so the next run recomputes them
and nothing else.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from grand_engine.io.inputs import get_input_kind
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import ERRORS, StageRecord
from grand_engine.runtime.records import RecordBook, invalidate_pairs

SCHEMA_VERSION_KEY = b"grand_engine.schema_version"


@dataclass(frozen=True)
class Finding:
    """One discrepancy of one (stage, unit)."""

    stage: str
    unit_id: str
    kind: str  # MissingTable | TableSizeDiffers | UnreadableTable | RowCountDiffers | SchemaVersionDiffers | …
    detail: str

    def __str__(self) -> str:
        return f"{self.stage:<18} {self.unit_id:<20} {self.kind:<22} {self.detail}"


@dataclass
class VerifyReport:
    """What :func:`verify` checked and found."""

    records: int = 0
    tables: int = 0
    images_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    repaired: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def bad_pairs(self) -> list[tuple[str, str]]:
        return sorted({(f.stage, f.unit_id) for f in self.findings})

    def summary(self) -> str:
        kinds = Counter(f.kind for f in self.findings)
        head = (
            f"{self.records} records, {self.tables} tables read, {self.images_checked} (stage, image) pairs accounted; "
            f"{len(self.findings)} discrepancies in {len(self.bad_pairs())} (stage, unit) pairs"
        )
        lines = [head]
        if kinds:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        if self.repaired:
            lines.append(f"  removed {self.repaired} records: the next run recomputes exactly those pairs")
        return "\n".join(lines)


def _read(store: OutputStore, rel: str) -> pa.Table:
    return pq.read_table(pa.BufferReader(store.read_bytes(rel)))


def _check_file(
    store: OutputStore, rec: StageRecord, rel: str, size: int, rows: int, listed: dict[str, int], what: str
) -> tuple[list[Finding], pa.Table | None]:
    """The findings of one recorded file and, when it is readable, its table."""
    if rel not in listed:
        return [Finding(rec.stage, rec.unit_id, f"Missing{what}", f"{rel} is gone")], None
    if listed[rel] != size:
        detail = f"{rel} has {listed[rel]} bytes, the record says {size}"
        return [Finding(rec.stage, rec.unit_id, f"{what}SizeDiffers", detail)], None
    try:
        table = _read(store, rel)
    except (OSError, pa.ArrowInvalid) as exc:
        return [Finding(rec.stage, rec.unit_id, f"Unreadable{what}", f"{rel}: {exc}")], None
    findings = []
    if table.num_rows != rows:
        detail = f"{rel} has {table.num_rows} rows, the record says {rows}"
        findings.append(Finding(rec.stage, rec.unit_id, f"{what}RowCountDiffers", detail))
    version = (table.schema.metadata or {}).get(SCHEMA_VERSION_KEY, b"").decode()
    if what == "Table" and rec.schema_version and version != rec.schema_version:
        detail = f"{rel} has schema version {version or '(none)'}, the record says {rec.schema_version}"
        findings.append(Finding(rec.stage, rec.unit_id, "SchemaVersionDiffers", detail))
    return findings, table


def _account(
    stage: str, unit_id: str, given: set[str], table: pa.Table, errors: pa.Table | None
) -> tuple[list[Finding], int]:
    """Every image the stage was given is in its table or its error rows, exactly once and not both."""
    findings: list[Finding] = []
    ids = Counter(table.column("image_id").to_pylist())
    failed: Counter[str] = Counter()
    if errors is not None and errors.num_rows:
        severity = errors.column("severity") if "severity" in errors.column_names else None
        rows = errors if severity is None else errors.filter(pc.equal(severity, "error"))
        failed = Counter(rows.column("image_id").to_pylist())
    for image_id, n in sorted((ids + failed).items()):
        if n > 1:
            where = "table and error rows" if image_id in ids and image_id in failed else "table or error rows"
            findings.append(Finding(stage, unit_id, "ImageTwice", f"{image_id} is {n} times in the {where}"))
    missing = sorted(given - set(ids) - set(failed))
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        findings.append(Finding(stage, unit_id, "ImageMissing", f"{len(missing)} image(s) in neither: {shown}"))
    unknown = sorted((set(ids) | set(failed)) - given)
    if unknown:
        shown = ", ".join(unknown[:5])
        findings.append(
            Finding(stage, unit_id, "ImageNotGiven", f"{len(unknown)} image(s) the stage was not given: {shown}")
        )
    return findings, len(given)


def verify(
    out: str,
    repair: bool = False,
    workers: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_unit: Callable[[], None] | None = None,
) -> VerifyReport:
    """Check ``out`` (see the module docstring); with ``repair`` remove the records of every failing pair.
    ``on_start(units)`` is called once the records are read, ``on_unit()`` after each unit (progress displays)."""
    store = OutputStore(out)
    try:
        run_info: dict[str, Any] = json.loads(store.read_text("run.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{out} has no run.json: it is not a grand-engine output folder") from None
    inputs = {name: list(info.get("inputs", [])) for name, info in run_info.get("stages", {}).items()}
    root = get_input_kind(run_info.get("input", "images")).root_stage
    book = RecordBook.load(store)
    records = [r for r in book.records() if r.status == "done"]
    listed: dict[str, int] = {}
    for prefix in sorted({r.stage for r in records}):
        listed.update(store.list_sizes(prefix))
        listed.update(store.list_sizes(f"{ERRORS}/{prefix}"))
    by_unit: dict[str, dict[str, StageRecord]] = {}
    for rec in records:
        by_unit.setdefault(rec.unit_id, {})[rec.stage] = rec
    report = VerifyReport(records=len(records))
    if on_start is not None:
        on_start(len(by_unit))

    def check_unit(unit_id: str) -> tuple[list[Finding], int, int]:
        unit = by_unit[unit_id]
        findings: list[Finding] = []
        tables: dict[str, tuple[pa.Table | None, pa.Table | None]] = {}
        for stage, rec in unit.items():
            found, table = _check_file(store, rec, rec.output, rec.bytes, rec.rows, listed, "Table")
            errors = None
            if rec.errors_output:
                more, errors = _check_file(
                    store, rec, rec.errors_output, rec.errors_bytes, rec.errors + rec.warnings, listed, "ErrorRows"
                )
                found += more
            findings += found
            tables[stage] = (table, errors)
        accounted = 0
        root_ids = set(tables[root][0].column("image_id").to_pylist()) if tables.get(root, (None,))[0] else None
        for stage, (table, errors) in tables.items():
            if stage == root or table is None or root_ids is None:
                continue
            given = set(root_ids)
            for req in inputs.get(stage, []):
                if req == root:
                    continue
                upstream = tables.get(req, (None, None))[0]
                if upstream is None:
                    given = None
                    break
                given &= set(upstream.column("image_id").to_pylist())
            if given is None:
                continue  # an input of this unit is itself missing or unreadable: reported there
            more, n = _account(stage, unit_id, given, table, errors)
            findings += more
            accounted += n
        return findings, len([t for t, _ in tables.values() if t is not None]), accounted

    with ThreadPoolExecutor(max_workers=workers or (4 if store.is_local else 32)) as pool:
        for findings, tables, accounted in pool.map(check_unit, sorted(by_unit)):
            report.findings += findings
            report.tables += tables
            report.images_checked += accounted
            if on_unit is not None:
                on_unit()
    report.findings.sort(key=lambda f: (f.unit_id, f.stage, f.kind))
    if repair and report.findings:
        report.repaired = invalidate_pairs(store, book, report.bad_pairs())
    return report
