"""RefCOCOg (referring expressions on COCO-2014 train) → *phrase* records.

Inputs: the COCO instances file (``images``: ``id``, ``file_name``, ``width``, ``height``; ``annotations``:
``id``, ``image_id``, ``category_id``, ``bbox`` XYWH, ``segmentation`` polygons or RLE; ``categories``) and the
refs (``refs(umd).p`` read by :func:`~grand_engine.sources.safe_pickle.load_refs`, or its JSON/Parquet copy): a
list of ``{ref_id, ann_id, image_id, split, category_id, sentences: [{sent, raw, …}], …}``.

The refs of one image and split become one record ``refcocog_<image id>_<split>``; each ref gives one phrase:
its first sentence whose ``sent`` (else ``raw``) is not blank, lower-cased with whitespace collapsed (GLaMM's
RefCOCOg loader lower-cases the caption and then searches each sentence as written, so a sentence with an upper-case
letter would never be found). The phrase's region is its annotation's polygons as COCO wrote them (GLaMM's loader
reads polygons), or, for a crowd annotation, its RLE mask; its box is the annotation's box.

A ref whose annotation is not in the instances file is dropped (``unknown_annotation``); an image missing from
it makes the record an error (``UnknownImage``). ``splits`` keeps only the refs of those splits (GLaMM writes
train and val files).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from grand_engine.io import rle
from grand_engine.sources.records import SPLITS, Entity, SourceRecord, check_record
from grand_engine.sources.safe_pickle import load_refs
from grand_engine.sources.spans import collapse


def ref_sentence(ref: dict[str, Any]) -> str:
    """The phrase a ref contributes: its first non-blank sentence, lower case, whitespace collapsed."""
    for sentence in ref.get("sentences") or []:
        if not isinstance(sentence, dict):
            continue
        for key in ("sent", "raw"):
            text = collapse(str(sentence.get(key) or ""))
            if text:
                return text.lower()
    return ""


def _region(ann: dict[str, Any], height: int, width: int) -> tuple[list[list[float]] | None, dict[str, Any] | None]:
    """``(polygons, rle)`` of an annotation's segmentation (one of them is set)."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        return [[float(v) for v in poly] for poly in seg if isinstance(poly, list)], None
    if isinstance(seg, dict) and "counts" in seg:
        try:
            return None, rle.normalize({"size": seg.get("size") or [height, width], "counts": seg["counts"]})
        except rle.RLEError:
            return None, None
    return None, None


def read_refcocog(
    instances_json: str | Path,
    refs_path: str | Path,
    images_dir: str | Path,
    *,
    splits: Iterable[str] = SPLITS,
    limit: int | None = None,
) -> Iterator[SourceRecord]:
    """One phrase record per (image, split) of the refs, in order of first appearance (module docstring)."""
    coco = json.loads(Path(instances_json).read_text(encoding="utf-8"))
    if not isinstance(coco, dict) or not isinstance(coco.get("annotations"), list):
        raise ValueError(f"{instances_json}: not a COCO instances file (no 'annotations' list)")
    images = {img["id"]: img for img in coco.get("images", []) if isinstance(img, dict) and "id" in img}
    anns = {a["id"]: a for a in coco["annotations"] if isinstance(a, dict) and "id" in a}
    categories = {c["id"]: str(c.get("name", "")) for c in coco.get("categories", []) if isinstance(c, dict)}
    wanted = set(splits)
    groups: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for ref in load_refs(refs_path):
        split = str(ref.get("split", ""))
        if split not in wanted:
            continue
        groups.setdefault((ref.get("image_id"), split), []).append(ref)
    images_dir = Path(images_dir)
    for n, ((image_id, split), refs) in enumerate(groups.items()):
        if limit is not None and n >= limit:
            return
        yield _record(image_id, split, refs, images.get(image_id), anns, categories, images_dir)


def _record(
    image_id: Any,
    split: str,
    refs: list[dict[str, Any]],
    image: dict[str, Any] | None,
    anns: dict[Any, dict[str, Any]],
    categories: dict[Any, str],
    images_dir: Path,
) -> SourceRecord:
    file_name = str((image or {}).get("file_name") or refs[0].get("file_name") or f"{image_id}.jpg")
    record = SourceRecord(
        record_id=f"refcocog_{image_id}_{split}",
        source="refcocog",
        kind="phrase",
        split=split,
        file_name=file_name,
        image_path=str(images_dir / file_name),
        width=(image or {}).get("width"),
        height=(image or {}).get("height"),
        source_key=str(image_id),
    )
    if image is None:
        return record.fail("UnknownImage", f"COCO image {image_id} is not in the instances file")
    for ref in refs:
        phrase = ref_sentence(ref)
        ann = anns.get(ref.get("ann_id"))
        if ann is None:
            record.drop(phrase, "unknown_annotation")
            continue
        polygons, mask = _region(ann, int(image["height"]), int(image["width"]))
        x, y, w, h = (float(v) for v in (ann.get("bbox") or [0, 0, 0, 0]))
        record.entities.append(
            Entity(
                key=phrase,
                label=categories.get(ann.get("category_id"), ""),
                object_id=int(ann["id"]),
                bbox=[x, y, x + w, y + h] if w > 0 and h > 0 else None,
                segmentation=mask,
                polygons=polygons,
            )
        )
    return check_record(record)
