"""Export formats of the GranD-f sources: the train and val files GLaMM's GCG loaders read, from ``source_gcg``.

GLaMM's ``dataset/gcg_datasets/GranDf_gcg_ds.py`` reads, from ``GranDf/annotations/train/``:

``openpsg-gcg`` → ``OpenPsgGCG_train.json``, ``OpenPsgGCG_val.json``
    The layout of ``GranDf_HA_GCG_train.json`` (the ``grandf`` format's): a JSON list of ``{file_name, caption,
    groundings: {phrase: {token_positives: [start, end], rle_masks: [COCO RLE]}}}``, built with the same record
    builder and checks (:func:`~grand_engine.grandf.records.grandf_json`, :func:`~grand_engine.grandf.records.
    check_gcg`). The loader joins ``file_name`` with ``coco_2017/train2017``.
``refcocog-gcg`` → ``RefCOCOg_GCG_train.json``, ``RefCOCOg_GCG_val.json``
    A JSON list of one-key dicts ``{<record id>: {img_file_name, caption, refs: [{sentence, segmentation, …}]}}``.
    The loader lower-cases the caption, finds each ``sentence`` with ``str.find`` and draws ``segmentation`` with
    ``frPyObjects([polygon], h, w)`` per entry, so ``sentence`` is the lower-case phrase, ``segmentation`` the COCO
    polygons (a crowd mask: one *uncompressed* RLE dict in the list). ``tokens_positive``, ``bbox`` (XYWH) and
    ``ann_id`` are written too, for other readers. Images: ``coco_2014/train2014``.
``flickr-gcg`` → ``flickr_mergedGT_GCG_train.json``, ``flickr_mergedGT_GCG_val.json``
    COCO style, read with ``pycocotools.coco.COCO``: ``images`` ``[{id, file_name, height, width, caption}]`` and
    ``annotations`` ``[{id, image_id, category_id, bbox (XYWH), area, iscrowd, tokens_positive: [[start, end]],
    sam_mask: RLE, phrase}]``, one annotation per grounded phrase. The loader drops images whose caption has fewer
    than three space-separated words or whose shorter side is under 32 pixels, and annotations whose box is
    outside the image or under one pixel wide or high: those are left out here and counted, so every written
    record is used. Images: ``flikcr_30k/train`` (sic, the loader's folder name).

DEST is a folder (created when missing; other files in it are left alone); both files are always written, each
under a temporary name renamed into place when the export completes. Rows of another source are skipped
(``other_source``), as are ``test`` records (``split_test``: GLaMM has no test file for these sources).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from grand_engine.grandf import records as R
from grand_engine.grandf.formats import ExportFormat
from grand_engine.grandf.writers import CocoWriter, JsonListWriter
from grand_engine.io import rle
from grand_engine.sources.spans import overlaps

SPLITS = ("train", "val")
"""The splits GLaMM's loaders have a file for."""

MIN_CAPTION_WORDS = 3  # GLaMM's Flickr30K loader removes captions with fewer space-separated words
MIN_IMAGE_SIDE = 32  # GLaMM's Flickr30K loader removes images whose shorter side is smaller (_filter_images)
MIN_BOX_SIDE = 1.0  # GLaMM's Flickr30K loader skips annotations whose box is narrower or lower


class SplitWriter:
    """One writer per split in a folder: ``<folder>/<names[split]>``; :meth:`close` finishes them all."""

    def __init__(self, folder: Path, names: dict[str, str], factory: Any) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.writers = {split: factory(folder / name) for split, name in names.items()}

    def __getitem__(self, split: str) -> Any:
        return self.writers[split]

    def close(self) -> int:
        return sum(w.close() for w in self.writers.values())

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


class SourceFormat(ExportFormat):
    """A GranD-f source format: one file per split in DEST, from the ``source_gcg`` rows of one source."""

    table = "source_gcg"
    source: ClassVar[str] = ""
    files: ClassVar[dict[str, str]] = {}

    @classmethod
    def writes_folder(cls, layout: str) -> bool:
        return True

    @classmethod
    def default_dest(cls, layout: str) -> str:
        return ""

    def missing_hint(self) -> str:
        return "run the source_gcg stage on a GranD-f source input first (docs/grandf_sources.md)"

    def writer_factory(self) -> Any:
        return JsonListWriter

    def open(self, dest: Path) -> SplitWriter:
        return SplitWriter(Path(dest), self.files, self.writer_factory())

    def payload(self, row: dict[str, Any], file_name: str) -> Any:
        raise NotImplementedError

    def records(self, row: dict[str, Any], file_name: str) -> Iterator[tuple[str, Any]]:
        if row.get("dataset") != self.source:
            self.report.skipped["other_source"] += 1
            return
        split = row.get("split")
        if split not in self.files:
            self.report.skipped[f"split_{split}"] += 1
            return
        self.report.skipped.update(f"phrase_{d['reason']}" for d in row.get("dropped") or [])
        payload = self.payload(row, file_name)
        if payload is not None:
            yield split, payload


class OpenPsgGCG(SourceFormat):
    """OpenPSG GCG files in the GranDf_HA layout."""

    name = "openpsg-gcg"
    description = "GLaMM's OpenPsgGCG_{train,val}.json (GranDf_HA layout) from the source_gcg table, into a folder"
    source = "openpsg"
    files: ClassVar[dict[str, str]] = {"train": "OpenPsgGCG_train.json", "val": "OpenPsgGCG_val.json"}

    def payload(self, row: dict[str, Any], file_name: str) -> dict[str, Any]:
        return R.grandf_json(row["caption"], file_name, row.get("groundings") or [])

    def check(self, record: tuple[str, Any], row: dict[str, Any]) -> list[str]:
        return R.check_gcg(record[1], row["height"], row["width"])

    def write(self, writer: SplitWriter, record: tuple[str, Any], row: dict[str, Any]) -> None:
        split, payload = record
        writer[split].add(payload)
        self.report.items[f"{split}_phrases"] += len(payload["groundings"])


def uncompressed(mask: dict[str, Any]) -> dict[str, Any]:
    """A COCO RLE with its counts as the list of run lengths (what ``frPyObjects`` of a list of dicts reads)."""
    return {"size": [int(v) for v in mask["size"]], "counts": [int(v) for v in rle.run_lengths(mask)]}


def xywh(box: Any) -> list[float]:
    return R.xyxy_to_xywh(box)


class RefCocogGCG(SourceFormat):
    """RefCOCOg GCG files (module docstring)."""

    name = "refcocog-gcg"
    description = "GLaMM's RefCOCOg_GCG_{train,val}.json from the source_gcg table, into a folder"
    source = "refcocog"
    files: ClassVar[dict[str, str]] = {"train": "RefCOCOg_GCG_train.json", "val": "RefCOCOg_GCG_val.json"}

    def payload(self, row: dict[str, Any], file_name: str) -> dict[str, Any]:
        refs = []
        for g in row.get("groundings") or []:
            if g.get("polygons"):
                segmentation: list[Any] = [list(map(float, p)) for p in g["polygons"]]
            else:
                segmentation = [uncompressed(g["rle_masks"][0])]
            refs.append(
                {
                    "sentence": g["key"],
                    "segmentation": segmentation,
                    "tokens_positive": [int(v) for v in g["token_positives"]],
                    "bbox": xywh(g["bbox"]) if g.get("bbox") is not None else None,
                    "ann_id": g.get("object_id"),
                }
            )
        return {row["image_id"]: {"img_file_name": file_name, "caption": row["caption"], "refs": refs}}

    def check(self, record: tuple[str, Any], row: dict[str, Any]) -> list[str]:
        return check_refcocog(next(iter(record[1].values())), row["height"], row["width"])

    def write(self, writer: SplitWriter, record: tuple[str, Any], row: dict[str, Any]) -> None:
        split, payload = record
        writer[split].add(payload)
        self.report.items[f"{split}_phrases"] += len(next(iter(payload.values()))["refs"])


def check_refcocog(entry: dict[str, Any], height: int, width: int) -> list[str]:
    """Problems of one RefCOCOg GCG entry: each sentence lower case and found first at its span in the lower-cased
    caption, spans apart by at least one character, every segmentation entry drawable and the mask non-empty."""
    problems: list[str] = []
    caption = entry.get("caption")
    if not isinstance(caption, str) or not caption or caption != caption.strip('"').strip():
        return ["caption is empty or has surrounding quotes or spaces"]
    lowered = caption.lower()
    spans = []
    if not entry.get("refs"):
        problems.append("no ref")
    for ref in entry.get("refs") or []:
        sentence = ref.get("sentence") or ""
        start, end = ref["tokens_positive"]
        if sentence != sentence.lower():
            problems.append(f"{sentence!r} is not lower case")
        if lowered.find(sentence) != start or end != start + len(sentence):
            problems.append(f"{sentence!r}: first found at {lowered.find(sentence)}, span says [{start}, {end})")
        spans.append((start, end, sentence))
        masks = []
        for seg in ref.get("segmentation") or []:
            if isinstance(seg, dict):
                try:
                    masks.append(rle.normalize(seg))
                except rle.RLEError as exc:
                    problems.append(f"{sentence!r}: {exc}")
            elif isinstance(seg, list) and len(seg) >= 6 and len(seg) % 2 == 0:
                masks.append(rle.from_polygons([seg], height, width))
            else:
                problems.append(f"{sentence!r}: a segmentation entry that is neither a polygon nor an RLE")
        if not masks:
            problems.append(f"{sentence!r}: no segmentation")
            continue
        problems += R.mask_problems(masks, height, width, f"{sentence!r}.segmentation")
    for i, j in overlaps([(start, end) for start, end, _ in spans]):
        problems.append(f"{spans[i][2]!r} and {spans[j][2]!r} overlap or touch")
    return problems


class FlickrGCG(SourceFormat):
    """Flickr30K GCG files, COCO style (module docstring)."""

    name = "flickr-gcg"
    description = "GLaMM's flickr_mergedGT_GCG_{train,val}.json (COCO style) from the source_gcg table, into a folder"
    source = "flickr30k"
    files: ClassVar[dict[str, str]] = {
        "train": "flickr_mergedGT_GCG_train.json",
        "val": "flickr_mergedGT_GCG_val.json",
    }
    info: ClassVar[dict[str, str]] = {"description": "GranD-f Flickr30K GCG records written by grand-engine"}

    def writer_factory(self) -> Any:
        return lambda path: CocoWriter(path, info=self.info)

    def payload(self, row: dict[str, Any], file_name: str) -> dict[str, Any] | None:
        caption = row["caption"]
        if len(caption.split(" ")) < MIN_CAPTION_WORDS:
            self.report.skipped["caption_under_3_words"] += 1
            return None
        if min(int(row["width"]), int(row["height"])) < MIN_IMAGE_SIDE:
            self.report.skipped["image_under_32_px"] += 1
            return None
        annotations = []
        for g in row.get("groundings") or []:
            x, y, w, h = xywh(g["bbox"])
            if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
                self.report.skipped["phrase_box_under_1_px"] += 1
                continue
            annotations.append(
                {
                    "bbox": [x, y, w, h],
                    "area": round(w * h, 3),
                    "iscrowd": 0,
                    "tokens_positive": [[int(v) for v in g["token_positives"]]],
                    "phrase": g["phrase"],
                    "sam_mask": {
                        "size": [int(v) for v in g["rle_masks"][0]["size"]],
                        "counts": g["rle_masks"][0]["counts"],
                    },
                }
            )
        if not annotations:
            self.report.skipped["image_without_usable_box"] += 1
            return None
        image = {
            "file_name": file_name,
            "height": int(row["height"]),
            "width": int(row["width"]),
            "caption": caption,
            "record_id": row["image_id"],
            "source_key": row.get("source_key"),
        }
        return {"image": image, "annotations": annotations}

    def check(self, record: tuple[str, Any], row: dict[str, Any]) -> list[str]:
        payload = record[1]
        caption = payload["image"]["caption"]
        height, width = payload["image"]["height"], payload["image"]["width"]
        problems: list[str] = []
        for ann in payload["annotations"]:
            start, end = ann["tokens_positive"][0]
            if not 0 <= start < end <= len(caption) or caption[start:end] != ann["phrase"]:
                problems.append(f"{ann['phrase']!r}: span [{start}, {end}) selects {caption[start:end]!r}")
            x, y, w, h = ann["bbox"]
            if min(x + w, width) - max(x, 0) <= 0 or min(y + h, height) - max(y, 0) <= 0:
                problems.append(f"{ann['phrase']!r}: box {ann['bbox']} is outside the {width}x{height} image")
            problems += R.mask_problems([ann["sam_mask"]], height, width, f"{ann['phrase']!r}.sam_mask")
        return problems

    def write(self, writer: SplitWriter, record: tuple[str, Any], row: dict[str, Any]) -> None:
        split, payload = record
        coco: CocoWriter = writer[split]
        image = dict(payload["image"], id=coco.images + 1)
        coco.add_image(image)
        category = coco.category_id("object")
        for ann in payload["annotations"]:
            coco.add_annotation(dict(ann, id=coco.annotations + 1, image_id=image["id"], category_id=category))
        self.report.items[f"{split}_phrases"] += len(payload["annotations"])
