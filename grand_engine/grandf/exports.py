"""``grand-engine export OUT --format F DEST``: a run's table streamed through an export format into DEST.

The formats are the classes of :mod:`grand_engine.grandf.formats` (and those other packages register). Every
export reads one unit at a time — the format's table, the run's root table (``images``, ``videos``, … as the run's
input kind names it: the file name and size of each element) and the tables the format joins (``joins``) — and
writes each record as soon as it is built, so memory does not grow with the dataset; every record is checked before
it is written (spans select their phrase, masks decode to the image size with a non-zero area, ids resolve) and a
record that fails is left out and counted with its reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grand_engine.grandf.formats import ExportFormat, ExportOptions, ExportReport, get_export_format
from grand_engine.grandf.reader import done_units, input_kind, iter_rows, read_unit, require_units, rows_by_id
from grand_engine.io.store import OutputStore
from grand_engine.progress import Progress

__all__ = ["ExportReport", "export", "resolve_dest"]


class _Rows:
    """Rows of a stage over its done units, each with its root-table row; one unit's files are read at a time.

    Every stage of ``joins`` that has done units is added to each row under its name: its row of the same element
    (``None`` when it has none); a stage without any done unit is left out of the rows.
    """

    def __init__(
        self,
        store: OutputStore,
        stage: str,
        hint: str,
        max_images: int | None,
        root: str = "images",
        joins: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.stage = stage
        self.records = require_units(store, stage, hint)
        self.units = list(self.records)
        self.max_images = max_images
        self.root = root
        done = {name: set(done_units(store, name)) for name in joins}
        self.joins = {name: units for name, units in done.items() if units}

    @property
    def total(self) -> int:
        """Rows that will be read (the units' row counts from their manifest records, capped by ``max_images``)."""
        rows = sum(r.rows for r in self.records.values())
        return rows if self.max_images is None else min(rows, self.max_images)

    def _joined(self, unit_id: str, roots: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
        """``{stage: {image_id: row}}`` of the joined stages in one unit (none where the unit is not done)."""
        joined = {}
        for name, done in self.joins.items():
            if name == self.root:
                joined[name] = roots
            else:
                joined[name] = rows_by_id(self.store, name, unit_id) if unit_id in done else {}
        return joined

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        seen = 0
        for unit_id in self.units:
            if self.max_images is not None and seen >= self.max_images:
                return
            table = read_unit(self.store, self.stage, unit_id)
            roots = rows_by_id(self.store, self.root, unit_id)
            joined = self._joined(unit_id, roots)
            for row in iter_rows(table):
                if self.max_images is not None and seen >= self.max_images:
                    return
                seen += 1
                key = row["image_id"]
                if joined:
                    row = {**row, **{name: rows.get(key) for name, rows in joined.items()}}
                yield row, roots.get(key) or {}


def _file_name(row: dict[str, Any], image: dict[str, Any]) -> str:
    return row.get("file_name") or image.get("file_name") or f"{row['image_id']}.jpg"


def _size(row: dict[str, Any], image: dict[str, Any]) -> tuple[int, int]:
    height = row.get("height") if row.get("height") is not None else image.get("height")
    width = row.get("width") if row.get("width") is not None else image.get("width")
    if height is None or width is None:
        raise ValueError(f"{row['image_id']!r} has no size in its row or its root table's row")
    return int(height), int(width)


def _export_row(fmt: ExportFormat, writer: Any, row: dict[str, Any], image: dict[str, Any]) -> None:
    """Build, check and write the records of one row; a malformed row is reported and the export goes on."""
    report = fmt.report
    report.images_read += 1
    try:
        row = dict(row)
        row["height"], row["width"] = _size(row, image)
        for record in fmt.records(row, _file_name(row, image)):
            problems = fmt.check(record, row)
            if problems:
                report.note_invalid(row["image_id"], problems)
                continue
            fmt.write(writer, record, row)
            report.records += 1
    except (KeyError, TypeError, ValueError) as exc:  # a malformed row: report it, keep exporting
        report.note_invalid(row["image_id"], [f"cannot build the record: {type(exc).__name__}: {exc}"])


def export(
    out: str | OutputStore,
    fmt: str,
    dest: str | Path,
    *,
    level: int = 4,
    layout: str = "jsonl",
    include_floating: bool = False,
    max_images: int | None = None,
    progress: bool = False,
) -> ExportReport:
    """Write format ``fmt`` of output ``out`` to ``dest`` and return what was written (see the module docstring).

    ``progress`` shows the images exported on stderr (:class:`~grand_engine.progress.Progress`).

    ``level`` picks the annotation table (3 or 4) of the formats that read one (``grand``, ``coco``, ``refseg``,
    ``caption-grounding``); ``include_floating`` adds floating objects to ``coco`` and ``refseg``.
    Raises :class:`~grand_engine.grandf.reader.MissingStageError` when the needed table has no completed unit.
    """
    try:
        cls = get_export_format(fmt)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    if level not in (3, 4):
        raise ValueError(f"level must be 3 or 4, got {level}")
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    dest = Path(dest)
    report = ExportReport(format=fmt, dest=str(dest))
    start = time.perf_counter()
    format_ = cls(ExportOptions(level=level, layout=layout, include_floating=include_floating), report)
    root = input_kind(store).root_stage
    rows = _Rows(store, format_.stage(), format_.missing_hint(), max_images, root, format_.joins)
    report.units = len(rows.units)
    writer = format_.open(dest)
    try:
        with Progress(rows.total, f"export {fmt}", "image", enabled=progress) as bar:
            for row, image in rows:
                _export_row(format_, writer, row, image)
                bar.update(1, records=report.records)
    except BaseException:
        writer.abort()
        raise
    report.bytes = format_.close(writer)
    report.seconds = time.perf_counter() - start
    return report


def resolve_dest(fmt: str, dest: str | Path, layout: str = "jsonl") -> Path:
    """``dest``, or the format's default name inside it when it is an existing folder and the output is a file."""
    dest = Path(dest)
    cls = get_export_format(fmt)
    if dest.is_dir() and not cls.writes_folder(layout):
        return dest / cls.default_dest(layout)
    return dest
