"""``grand-engine export OUT --format F DEST``: the run's tables in the JSON layouts GranD consumers read.

Formats (``docs/exports.md`` shows an example record of each):

``grandf``
    GranD-f's ``GranDf_HA_GCG_train.json`` layout — a JSON list of ``{file_name, caption, groundings: {phrase:
    {token_positives, rle_masks}}}`` — from the ``grandf`` table (rows whose ``skip_reason`` is null).
``grandf-short``
    The same layout, one record per grounded short caption (the ``grandf`` table's ``short_captions``).
``grand``
    The released GranD per-image layout (spec §8), one ``{"<file_name>": payload}`` per image.
``coco``
    COCO instances: ``images``, ``annotations`` (RLE ``segmentation``, XYWH ``bbox``, ``area``) and
    ``categories`` built from the normalised labels (ids in order of first appearance).
``refseg``
    Referring expressions (spec §10): ``{"<file_name>": [{attribute, id, bbox, segmentation}]}`` per image;
    objects without a mask are skipped and counted instead of dropping the image (§14.48).
``caption-grounding``
    Short captions with per-phrase masks, floating objects included (§14.47):
    ``{"<file_name>": [{caption, details: [...]}]}`` per image.

The per-image formats (``grand``, ``refseg``, ``caption-grounding``) are written as JSON Lines (``--layout
jsonl``, DEST a file) or as one ``<stem>.json`` per image (``--layout files``, DEST a folder: the layout the
reference's ``create_lmdb.py`` reads). Every export reads one unit file at a time and writes each record as
soon as it is built, so memory does not grow with the dataset; every record is checked before it is written
(spans select their phrase, masks decode to the image size with a non-zero area, ids resolve) and a record
that fails is left out and counted with its reason.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grand_engine.grandf import records as R
from grand_engine.grandf.reader import image_info, iter_rows, read_unit, require_units
from grand_engine.grandf.writers import CocoWriter, JsonLinesWriter, JsonListWriter, PerImageFilesWriter
from grand_engine.io.store import OutputStore

__all__ = ["FORMATS", "PER_IMAGE_FORMATS", "ExportReport", "default_dest", "export"]
MAX_EXAMPLES = 10

FORMATS = ("grandf", "grandf-short", "grand", "coco", "refseg", "caption-grounding")
"""Every export format (``docs/exports.md`` shows an example record of each)."""

PER_IMAGE_FORMATS = ("grand", "refseg", "caption-grounding")
"""Formats with one record per image, written as JSON Lines or as one file per image."""


@dataclass
class ExportReport:
    """What one export read, wrote and left out."""

    format: str
    dest: str
    units: int = 0
    images_read: int = 0
    records: int = 0  # top-level records written (images; captions for grandf-short)
    items: Counter = field(default_factory=Counter)  # nested things written (annotations, phrases, masks…)
    skipped: Counter = field(default_factory=Counter)  # images / objects / phrases left out, by reason
    invalid: int = 0  # records that failed their check (not written)
    examples: list[str] = field(default_factory=list)  # the first problems found
    bytes: int = 0
    seconds: float = 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def note_invalid(self, key: str, problems: list[str]) -> None:
        self.invalid += 1
        for p in problems:
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(f"{key}: {p}")

    def summary(self) -> str:
        lines = [
            f"{self.format}: {self.records} records from {self.images_read} images ({self.units} units) "
            f"-> {self.dest} ({self.bytes / 1e6:.2f} MB, {self.seconds:.2f} s, {self.records_per_s:.1f} records/s)"
        ]
        if self.items:
            lines.append("  written: " + ", ".join(f"{k} {v}" for k, v in sorted(self.items.items())))
        if self.skipped:
            lines.append("  left out: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())))
        lines.append(f"  invalid records (not written): {self.invalid}")
        lines += [f"    {e}" for e in self.examples]
        return "\n".join(lines)


class _Rows:
    """Rows of a stage over its done units, with a per-unit progress bar and the image rows joined."""

    def __init__(self, store: OutputStore, stage: str, hint: str, progress: bool, max_images: int | None) -> None:
        self.store = store
        self.stage = stage
        self.units = require_units(store, stage, hint)
        self.progress = progress
        self.max_images = max_images

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        from tqdm import tqdm

        seen = 0
        bar = tqdm(total=len(self.units), unit="unit", desc=f"export {self.stage}", disable=not self.progress)
        try:
            for unit_id in self.units:
                if self.max_images is not None and seen >= self.max_images:
                    return
                table = read_unit(self.store, self.stage, unit_id)
                images = image_info(self.store, unit_id)
                for row in iter_rows(table):
                    if self.max_images is not None and seen >= self.max_images:
                        return
                    seen += 1
                    image = images.get(row["image_id"]) or {}
                    yield row, image
                bar.update(1)
        finally:
            bar.close()


def _file_name(row: dict[str, Any], image: dict[str, Any]) -> str:
    return row.get("file_name") or image.get("file_name") or f"{row['image_id']}.jpg"


def _size(row: dict[str, Any], image: dict[str, Any]) -> tuple[int, int]:
    height = row.get("height") if row.get("height") is not None else image.get("height")
    width = row.get("width") if row.get("width") is not None else image.get("width")
    if height is None or width is None:
        raise ValueError(f"image {row['image_id']!r} has no size in its row or its images row")
    return int(height), int(width)


# -- one function per format --------------------------------------------------------------------------


def _export_grandf(rows: _Rows, dest: Path, report: ExportReport, short: bool) -> int:
    writer = JsonListWriter(dest)
    try:
        for row, image in rows:
            report.images_read += 1
            height, width = _size(row, image)
            name = _file_name(row, image)
            if short:
                captions = [(s["caption"], s["groundings"]) for s in row.get("short_captions") or []]
                for s in row.get("short_captions") or []:
                    report.skipped.update(f"phrase_{d['reason']}" for d in s.get("dropped_phrases") or [])
                if not captions:
                    report.skipped["image_without_short_captions"] += 1
            else:
                if row.get("skip_reason"):
                    report.skipped[f"image_{row['skip_reason']}"] += 1
                    continue
                report.skipped.update(f"phrase_{d['reason']}" for d in row.get("dropped_phrases") or [])
                captions = [(row["caption"], row.get("groundings") or [])]
            for caption, groundings in captions:
                if not groundings:
                    report.skipped["caption_without_grounding"] += 1
                    continue
                try:
                    record = R.grandf_json(caption, name, groundings)
                    problems = R.check_gcg(record, height, width)
                except (KeyError, TypeError, ValueError) as exc:  # a malformed row: report it, keep exporting
                    record, problems = None, [f"cannot build the record: {type(exc).__name__}: {exc}"]
                if problems:
                    report.note_invalid(row["image_id"], problems)
                    continue
                writer.add(record)
                report.records += 1
                report.items["phrases"] += len(record["groundings"])
                report.items["masks"] += sum(len(g["rle_masks"]) for g in record["groundings"].values())
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _per_image_writer(dest: Path, layout: str) -> JsonLinesWriter | PerImageFilesWriter:
    if layout == "jsonl":
        return JsonLinesWriter(dest)
    if layout == "files":
        return PerImageFilesWriter(dest)
    raise ValueError(f"unknown layout {layout!r}; use jsonl or files")


def _add(writer: JsonLinesWriter | PerImageFilesWriter, row: dict[str, Any], name: str, payload: Any) -> None:
    if isinstance(writer, PerImageFilesWriter):
        writer.add(row["image_id"], {name: payload})
    else:
        writer.add({name: payload})


def _export_per_image(
    rows: _Rows,
    dest: Path,
    report: ExportReport,
    layout: str,
    build: Callable[[dict[str, Any]], tuple[Any, list[str]]],
) -> int:
    writer = _per_image_writer(dest, layout)
    try:
        for row, image in rows:
            report.images_read += 1
            row = dict(row)
            try:
                row["height"], row["width"] = _size(row, image)
                payload, problems = build(row)
                if payload is not None and not problems:
                    _add(writer, row, _file_name(row, image), payload)
                    report.records += 1
            except (KeyError, TypeError, ValueError) as exc:  # a malformed row: report it, keep exporting
                payload, problems = None, [f"cannot build the record: {type(exc).__name__}: {exc}"]
            if problems:
                report.note_invalid(row["image_id"], problems)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _export_coco(rows: _Rows, dest: Path, report: ExportReport, include_floating: bool) -> int:
    writer = CocoWriter(dest, info={"description": "GranD annotations exported by grand-engine", "version": "1"})
    try:
        for image_number, (row, image) in enumerate(rows, start=1):
            report.images_read += 1
            height, width = _size(row, image)
            objects, skipped = R.coco_objects(row, include_floating)
            report.skipped.update(skipped)
            areas, problems = R.mask_areas([o["segmentation"] for o in objects], height, width, "segmentation")
            if problems:
                report.note_invalid(row["image_id"], problems)
                continue
            writer.add_image(
                {
                    "id": image_number,
                    "file_name": _file_name(row, image),
                    "width": width,
                    "height": height,
                    "grand_image_id": row["image_id"],
                }
            )
            for obj, area in zip(objects, areas, strict=True):
                writer.add_annotation(
                    {
                        "id": writer.annotations + 1,
                        "image_id": image_number,
                        "category_id": writer.category_id(R.category_name(obj)),
                        "segmentation": R._rle(obj["segmentation"]),
                        "area": int(area),
                        "bbox": R.xyxy_to_xywh(obj["bbox"]),
                        "iscrowd": 0,
                        "grand_object_id": int(obj["id"]),
                    }
                )
            report.records += 1
        report.items["annotations"] = writer.annotations
        report.items["categories"] = len(writer.categories)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


# -- entry point --------------------------------------------------------------------------------------


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

    ``level`` picks the annotation table (3 or 4) of the ``grand``, ``coco``, ``refseg`` and
    ``caption-grounding`` formats; ``include_floating`` adds floating objects to ``coco`` and ``refseg``.
    Raises :class:`~grand_engine.grandf.reader.MissingStageError` when the needed table has no completed unit.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    if level not in (3, 4):
        raise ValueError(f"level must be 3 or 4, got {level}")
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    dest = Path(dest)
    report = ExportReport(format=fmt, dest=str(dest))
    start = time.perf_counter()
    stage = "grandf" if fmt.startswith("grandf") else f"level{level}"
    hint = "run the grandf stage first" if stage == "grandf" else f"run levels up to {level} first"
    rows = _Rows(store, stage, hint, progress, max_images)
    report.units = len(rows.units)

    if fmt in ("grandf", "grandf-short"):
        report.bytes = _export_grandf(rows, dest, report, short=fmt == "grandf-short")
    elif fmt == "coco":
        report.bytes = _export_coco(rows, dest, report, include_floating)
    else:

        def build_grand(row: dict[str, Any]) -> tuple[Any, list[str]]:
            problems = R.check_grand(row, level)
            return R.grand_record(row), problems

        def build_refseg(row: dict[str, Any]) -> tuple[Any, list[str]]:
            entries, skipped = R.refseg_entries(row, include_floating)
            report.skipped.update(skipped)
            if not entries:
                report.skipped["image_without_referring_expression"] += 1
                return None, []
            report.items["expressions"] += len(entries)
            return entries, R.check_refseg(entries, row)

        def build_captions(row: dict[str, Any]) -> tuple[Any, list[str]]:
            captions, dropped = R.caption_grounding(row)
            report.skipped.update(dropped)
            if not captions:
                report.skipped["image_without_short_captions"] += 1
                return None, []
            report.items["captions"] += len(captions)
            report.items["phrases"] += sum(len(c["details"]) for c in captions)
            return captions, R.check_caption_grounding(captions, row)

        build = {"grand": build_grand, "refseg": build_refseg, "caption-grounding": build_captions}[fmt]
        report.bytes = _export_per_image(rows, dest, report, layout, build)
    report.seconds = time.perf_counter() - start
    return report


def default_dest(fmt: str, layout: str = "jsonl") -> str:
    """A file name for ``fmt`` when DEST is a folder."""
    if fmt in PER_IMAGE_FORMATS:
        return f"grand_{fmt.replace('-', '_')}" + ("" if layout == "files" else ".jsonl")
    return {"grandf": "GranDf_GCG.json", "grandf-short": "GranDf_GCG_short.json", "coco": "grand_coco.json"}[fmt]
