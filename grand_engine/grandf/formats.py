"""Export formats: one class per format, found by name in one registry (``grand-engine export --format NAME``).

A format is a subclass of :class:`ExportFormat` with a ``name``. The class says which table it reads, where its
output goes (:meth:`~ExportFormat.default_dest`, :meth:`~ExportFormat.open`), how one table row becomes records
(:meth:`~ExportFormat.records`), how a record is checked before it is written (:meth:`~ExportFormat.check`) and
how it is written (:meth:`~ExportFormat.write`). Defining the class registers it;
:func:`grand_engine.grandf.exports.export` streams rows through it.

Another package adds a format by declaring the class in the entry-point group ``grand_engine.exports``
(``[project.entry-points."grand_engine.exports"]`` ``myformat = "mypkg.exports:MyFormat"``); the entry point is
loaded only when its name is asked for or the full list is.

Built-in formats (``docs/exports.md`` shows an example record of each):

``grandf``
    GranD-f's ``GranDf_HA_GCG_train.json`` layout — a JSON list of ``{file_name, caption, groundings: {phrase:
    {token_positives, rle_masks}}}`` — from the ``grandf`` table (rows whose ``skip_reason`` is null).
``grandf-short``
    The same layout, one record per grounded short caption (the ``grandf`` table's ``short_captions``).
``grand``
    The released GranD per-image layout (spec §8), one ``{"<file_name>": payload}`` per image.
``coco``
    COCO instances: ``images``, ``annotations`` (RLE ``segmentation``, ``bbox`` the mask's tight XYWH box,
    ``area``, and ``grand_bbox`` the object's own box) and ``categories`` built from the normalised labels (ids
    in order of first appearance).
``refseg``
    Referring expressions (spec §10): ``{"<file_name>": [{attribute, id, bbox, segmentation}]}`` per image;
    objects without a mask are skipped and counted instead of dropping the image (§14.48).
``caption-grounding``
    Short captions with per-phrase masks, floating objects included (§14.47):
    ``{"<file_name>": [{caption, details: [...]}]}`` per image.

The per-image formats (``grand``, ``refseg``, ``caption-grounding``) are written as JSON Lines (``--layout
jsonl``, DEST a file) or as one ``<stem>.json`` per image (``--layout files``, DEST a folder: the layout the
reference's ``create_lmdb.py`` reads).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from grand_engine.grandf import records as R
from grand_engine.grandf.writers import CocoWriter, JsonLinesWriter, JsonListWriter, PerImageFilesWriter
from grand_engine.io import rle
from grand_engine.registry import EXPORT_FORMAT_GROUP, Registry

__all__ = [
    "EXPORT_FORMATS",
    "LAYOUTS",
    "ExportFormat",
    "ExportOptions",
    "ExportReport",
    "PerImageFormat",
    "Writer",
    "export_formats",
    "get_export_format",
]

LAYOUTS = ("jsonl", "files")
"""Layouts of the per-image formats: one JSON Lines file, or one JSON file per image in a folder."""

MAX_EXAMPLES = 10
"""Problems of invalid records kept for the report."""


@dataclass(frozen=True)
class ExportOptions:
    """The options of one export (``grand-engine export`` flags)."""

    level: int = 4  # annotation table of the formats that read a level table: 3 or 4
    layout: str = "jsonl"  # per-image formats: jsonl or files
    include_floating: bool = False  # coco, refseg: export floating objects too


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


class Writer(Protocol):
    """What :meth:`ExportFormat.open` returns (the classes of :mod:`grand_engine.grandf.writers`)."""

    def close(self) -> int: ...  # finish the output, return its size in bytes

    def abort(self) -> None: ...  # remove what was written so far


class ExportFormat:
    """One export format. A subclass with a ``name`` registers itself; the export creates one instance per run.

    :meth:`records` gets each row of the table with ``height`` and ``width`` filled in (from the row of the run's
    root table — ``images``, or the root stage of the run's input kind, such as ``videos`` — when the table has
    none), the rows of the stages named in ``joins`` under their names, and the element's file name; it yields the
    records of that row and counts what it leaves out in ``self.report.skipped``. Each record is checked
    (:meth:`check`) and, when it has no problem, written (:meth:`write`). A ``KeyError``, ``TypeError`` or ``ValueError`` while building or checking the
    records of a row counts that row as one invalid record; the export goes on.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line, shown by ``grand-engine export --help``
    table: ClassVar[str] = "level"  # the stage read: a stage name, or "level" for level3/level4 (``level`` option)
    file_name: ClassVar[str] = ""  # the output's name when DEST is an existing folder
    joins: ClassVar[tuple[str, ...]] = ()
    """Stages whose row of the same element (same unit and ``image_id``) is added to each row under the stage's
    name: ``None`` when the stage has no row for it; a stage without any completed unit is left out of the row."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            EXPORT_FORMATS.register(cls.name, cls)

    def __init__(self, options: ExportOptions, report: ExportReport) -> None:
        self.options = options
        self.report = report

    def stage(self) -> str:
        """The stage whose table is read."""
        return f"level{self.options.level}" if self.table == "level" else self.table

    def missing_hint(self) -> str:
        """What to run when the table has no completed unit."""
        if self.table == "level":
            return f"run levels up to {self.options.level} first"
        return f"run the {self.table} stage first"

    @classmethod
    def default_dest(cls, layout: str) -> str:
        """The output's name inside DEST when DEST is an existing folder."""
        return cls.file_name

    @classmethod
    def writes_folder(cls, layout: str) -> bool:
        """True when the output is a folder (DEST then names it, even when it exists)."""
        return False

    def open(self, dest: Path) -> Writer:
        """The writer of the output at ``dest`` (default: a JSON list)."""
        return JsonListWriter(dest)

    def records(self, row: dict[str, Any], file_name: str) -> Iterator[Any]:
        """The records of one row."""
        raise NotImplementedError

    def check(self, record: Any, row: dict[str, Any]) -> list[str]:
        """Problems of ``record`` (empty: it is written)."""
        return []

    def write(self, writer: Any, record: Any, row: dict[str, Any]) -> None:
        """Write one checked record."""
        writer.add(record)

    def close(self, writer: Any) -> int:
        """Finish the output; return its size in bytes."""
        return writer.close()


def _check_format(name: str, obj: Any) -> None:
    """What an entry point of ``grand_engine.exports`` must load: an :class:`ExportFormat` subclass named ``name``."""
    if not (isinstance(obj, type) and issubclass(obj, ExportFormat)):
        raise TypeError(f"expected a subclass of grand_engine.grandf.formats.ExportFormat, got {obj!r}")
    if obj.name != name:
        raise TypeError(f"the class is named {obj.name!r}, not {name!r}")


EXPORT_FORMATS: Registry[type[ExportFormat]] = Registry("export format", EXPORT_FORMAT_GROUP, check=_check_format)
"""Every export format by name: the built-ins below, and those of the entry-point group ``grand_engine.exports``."""


def get_export_format(name: str) -> type[ExportFormat]:
    """The format class registered as ``name``; ``KeyError`` lists the known names."""
    return EXPORT_FORMATS.get(name)


def export_formats() -> dict[str, type[ExportFormat]]:
    """Every export format by name (loads the formats other packages declare)."""
    return EXPORT_FORMATS.all()


# -- GranD-f GCG lists --------------------------------------------------------------------------------


class GrandF(ExportFormat):
    """GranD-f's GCG list from the ``grandf`` table: one record per image whose ``skip_reason`` is null."""

    name = "grandf"
    description = "GranD-f GCG list (GranDf_HA_GCG_train.json layout), one record per verified dense caption"
    table = "grandf"
    file_name = "GranDf_GCG.json"

    def captions(self, row: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        """``(caption, groundings)`` to export from one ``grandf`` row, counting what is left out."""
        if row.get("skip_reason"):
            self.report.skipped[f"image_{row['skip_reason']}"] += 1
            return []
        self.report.skipped.update(f"phrase_{d['reason']}" for d in row.get("dropped_phrases") or [])
        return [(row["caption"], row.get("groundings") or [])]

    def records(self, row: dict[str, Any], file_name: str) -> Iterator[dict[str, Any]]:
        for caption, groundings in self.captions(row):
            if not groundings:
                self.report.skipped["caption_without_grounding"] += 1
                continue
            yield R.grandf_json(caption, file_name, groundings)

    def check(self, record: dict[str, Any], row: dict[str, Any]) -> list[str]:
        return R.check_gcg(record, row["height"], row["width"])

    def write(self, writer: JsonListWriter, record: dict[str, Any], row: dict[str, Any]) -> None:
        writer.add(record)
        self.report.items["phrases"] += len(record["groundings"])
        self.report.items["masks"] += sum(len(g["rle_masks"]) for g in record["groundings"].values())


class GrandFShort(GrandF):
    """The GranD-f layout, one record per grounded short caption (verification does not gate short captions)."""

    name = "grandf-short"
    description = "the GranD-f layout, one record per grounded short caption"
    file_name = "GranDf_GCG_short.json"

    def captions(self, row: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        shorts = row.get("short_captions") or []
        for s in shorts:
            self.report.skipped.update(f"phrase_{d['reason']}" for d in s.get("dropped_phrases") or [])
        if not shorts:
            self.report.skipped["image_without_short_captions"] += 1
        return [(s["caption"], s["groundings"]) for s in shorts]


# -- per-image formats --------------------------------------------------------------------------------


class PerImageFormat(ExportFormat):
    """A format with one ``{"<file_name>": payload}`` per image, as JSON Lines or one file per image.

    Subclasses implement :meth:`payload` (``None``: nothing to export for this image) and :meth:`check`.
    """

    def payload(self, row: dict[str, Any]) -> Any:
        raise NotImplementedError

    @classmethod
    def default_dest(cls, layout: str) -> str:
        stem = f"grand_{cls.name.replace('-', '_')}"
        return stem if layout == "files" else f"{stem}.jsonl"

    @classmethod
    def writes_folder(cls, layout: str) -> bool:
        return layout == "files"

    def open(self, dest: Path) -> JsonLinesWriter | PerImageFilesWriter:
        if self.options.layout == "jsonl":
            return JsonLinesWriter(dest)
        if self.options.layout == "files":
            return PerImageFilesWriter(dest)
        raise ValueError(f"unknown layout {self.options.layout!r}; use {' or '.join(LAYOUTS)}")

    def records(self, row: dict[str, Any], file_name: str) -> Iterator[dict[str, Any]]:
        payload = self.payload(row)
        if payload is not None:
            yield {file_name: payload}

    def write(self, writer: JsonLinesWriter | PerImageFilesWriter, record: Any, row: dict[str, Any]) -> None:
        if isinstance(writer, PerImageFilesWriter):
            writer.add(row["image_id"], record)
        else:
            writer.add(record)

    @staticmethod
    def payload_of(record: dict[str, Any]) -> Any:
        """The payload of a ``{"<file_name>": payload}`` record."""
        return next(iter(record.values()))


class Grand(PerImageFormat):
    """The released GranD per-image layout, checked against the level's invariants."""

    name = "grand"
    description = "the released GranD per-image layout (spec §8), one record per image"

    def payload(self, row: dict[str, Any]) -> dict[str, Any]:
        return R.grand_record(row)

    def check(self, record: dict[str, Any], row: dict[str, Any]) -> list[str]:
        return R.check_grand(row, self.options.level)


class RefSeg(PerImageFormat):
    """Referring expressions: one entry per (object, referring attribute)."""

    name = "refseg"
    description = "referring expressions (spec §10) with their object's box and mask, per image"

    def payload(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        entries, skipped = R.refseg_entries(row, self.options.include_floating)
        self.report.skipped.update(skipped)
        if not entries:
            self.report.skipped["image_without_referring_expression"] += 1
            return None
        self.report.items["expressions"] += len(entries)
        return entries

    def check(self, record: dict[str, Any], row: dict[str, Any]) -> list[str]:
        return R.check_refseg(self.payload_of(record), row)


class CaptionGrounding(PerImageFormat):
    """Short captions with the span, ids, box and union mask of each grounded phrase."""

    name = "caption-grounding"
    description = "short captions with per-phrase masks (floating objects included), per image"

    def payload(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        captions, dropped = R.caption_grounding(row)
        self.report.skipped.update(dropped)
        if not captions:
            self.report.skipped["image_without_short_captions"] += 1
            return None
        self.report.items["captions"] += len(captions)
        self.report.items["phrases"] += sum(len(c["details"]) for c in captions)
        return captions

    def check(self, record: dict[str, Any], row: dict[str, Any]) -> list[str]:
        return R.check_caption_grounding(self.payload_of(record), row)


# -- COCO ---------------------------------------------------------------------------------------------


@dataclass
class CocoImage:
    """One image of a COCO export: its ``images`` entry, the objects that become annotations, their masks'
    areas and tight boxes (XYWH)."""

    image: dict[str, Any]
    objects: list[dict[str, Any]]
    areas: list[int]
    boxes: list[list[float]]
    problems: list[str]  # found while measuring the masks (an image with problems is not written)


class Coco(ExportFormat):
    """COCO instances; images are numbered 1, 2, … in the order they are read (invalid ones keep their number).

    COCO's ``bbox`` is the tight box of the annotation's mask, so that is what ``bbox`` holds; the object's own
    box (a detector's, which a SAM mask may overflow) is kept as ``grand_bbox``, XYWH as well.
    """

    name = "coco"
    description = "COCO instances (RLE segmentation, the mask's XYWH bbox, area; categories from the labels)"
    file_name = "grand_coco.json"
    info: ClassVar[dict[str, str]] = {"description": "GranD annotations exported by grand-engine", "version": "1"}

    def open(self, dest: Path) -> CocoWriter:
        return CocoWriter(dest, info=self.info)

    def records(self, row: dict[str, Any], file_name: str) -> Iterator[CocoImage]:
        height, width = row["height"], row["width"]
        objects, skipped = R.coco_objects(row, self.options.include_floating)
        self.report.skipped.update(skipped)
        masks = [o["segmentation"] for o in objects]
        areas, problems = R.mask_areas(masks, height, width, "segmentation")
        boxes = [] if problems else [R.xyxy_to_xywh(b) for b in rle.to_bbox_xyxy(masks)]
        image = {
            "id": self.report.images_read,
            "file_name": file_name,
            "width": width,
            "height": height,
            "grand_image_id": row["image_id"],
        }
        yield CocoImage(image, objects, areas, boxes, problems)

    def check(self, record: CocoImage, row: dict[str, Any]) -> list[str]:
        return record.problems

    def write(self, writer: CocoWriter, record: CocoImage, row: dict[str, Any]) -> None:
        writer.add_image(record.image)
        for obj, area, box in zip(record.objects, record.areas, record.boxes, strict=True):
            writer.add_annotation(
                {
                    "id": writer.annotations + 1,
                    "image_id": record.image["id"],
                    "category_id": writer.category_id(R.category_name(obj)),
                    "segmentation": R._rle(obj["segmentation"]),
                    "area": int(area),
                    "bbox": box,
                    "iscrowd": 0,
                    "grand_object_id": int(obj["id"]),
                    "grand_bbox": R.xyxy_to_xywh(obj["bbox"]),
                }
            )

    def close(self, writer: CocoWriter) -> int:
        self.report.items["annotations"] = writer.annotations
        self.report.items["categories"] = len(writer.categories)
        return writer.close()
