"""OpenPSG (panoptic scene graphs on COCO) → *relation* records.

``psg.json`` holds ``thing_classes`` + ``stuff_classes`` (one 0-based category list, ``category_id`` indexes it),
``predicate_classes`` (0-based), ``test_image_ids`` and ``data``: per image ``file_name`` and
``pan_seg_file_name`` (both relative to the COCO root), ``height``, ``width``, ``image_id``, ``segments_info``
(``id``, ``category_id``, …) and ``relations`` — ``[subject index, object index, predicate index]`` into
``segments_info``. A segment's mask is the set of pixels of the panoptic PNG whose colour encodes its id
(``R + 256·G + 256²·B``, the COCO panoptic convention).

Each image becomes one record ``psg_<image_id>``:

* **entity names** ``<label>-<n>``: the label is the category name made readable (:func:`readable_label`:
  ``tree-merged`` → ``tree``, ``wall-brick`` → ``brick wall``, ``window-blind`` → ``window blind``), ``n`` counts
  the image's segments of that label from 1 in ``segments_info`` order (``person-1``, ``person-2``, ``table-1``).
  Only entities named by a relation are kept; each carries its segment's mask as COCO RLE;
* **relations**: the triples with the predicate's name (``person-1``, ``sitting on``, ``chair-1``);
* **base captions**: the COCO captions of the image (``--captions`` files, matched by file name), at most
  ``max_captions``;
* **split**: ``val`` for the images of ``test_image_ids`` (GLaMM's OpenPSG loader has a train and a val file),
  ``train`` otherwise;
* ``file_name`` is the image's base name: GLaMM's OpenPSG loader joins it with its ``coco_2017/train2017`` folder.

Bad input becomes a record with an error (``MissingPanoptic``: the PNG is missing or unreadable;
``PanopticSizeMismatch``; ``NoRelation`` via :func:`~grand_engine.sources.records.check_record`) or a dropped
entity (a segment id the PNG does not contain: ``empty_mask``; a category index out of range: ``unknown_entity``).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.io import rle
from grand_engine.sources.records import Entity, Relation, SourceRecord, check_record

MAX_CAPTIONS = 5
"""Base captions per image given to the LLM (COCO has five per image)."""

_SUFFIXES = ("-merged", "-other", "-stuff")
_MATERIAL_OF = ("wall-", "floor-")


def readable_label(name: str) -> str:
    """A COCO panoptic category name as words (see the module docstring)."""
    label = name.strip().replace("_", " ")
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if label.endswith(suffix):
                label, changed = label[: -len(suffix)], True
    for prefix in _MATERIAL_OF:
        if label.startswith(prefix):
            label = f"{label[len(prefix) :]} {prefix[:-1]}"
    return " ".join(label.replace("-", " ").split())


def load_captions(paths: Iterable[str | Path]) -> dict[str, list[str]]:
    """``{image base name: [caption, …]}`` from COCO caption files (``images`` + ``annotations``)."""
    out: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        names = {img["id"]: Path(img["file_name"]).name for img in doc.get("images", [])}
        for ann in doc.get("annotations", []):
            name = names.get(ann.get("image_id"))
            text = " ".join(str(ann.get("caption") or "").split())
            if name and text:
                out[name].append(text)
    return dict(out)


def panoptic_ids(png: Path) -> np.ndarray:
    """The segment id of every pixel of a COCO panoptic PNG (``R + 256·G + 256²·B``)."""
    from PIL import Image  # deferred: only the reader needs Pillow here

    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _image_record(
    item: dict[str, Any],
    classes: list[str],
    predicates: list[str],
    test_ids: set[str],
    coco_root: Path,
    panoptic_root: Path,
    captions: dict[str, list[str]],
    max_captions: int,
) -> SourceRecord:
    image_id = str(item.get("image_id"))
    file_name = str(item.get("file_name") or "")
    record = SourceRecord(
        record_id=f"psg_{image_id}",
        source="openpsg",
        kind="relation",
        split="val" if image_id in test_ids else "train",
        file_name=Path(file_name).name,
        image_path=str(coco_root / file_name) if file_name else None,
        width=item.get("width"),
        height=item.get("height"),
        source_key=image_id,
        captions=captions.get(Path(file_name).name, [])[:max_captions],
    )
    segments = list(item.get("segments_info") or [])
    relations = list(item.get("relations") or [])
    if not relations:
        return record.fail("NoRelation", "the image has no relation in psg.json")
    names: list[str | None] = []
    counts: Counter[str] = Counter()
    for seg in segments:
        cat = seg.get("category_id")
        if not isinstance(cat, int) or not 0 <= cat < len(classes):
            names.append(None)
            continue
        label = readable_label(classes[cat])
        counts[label] += 1
        names.append(f"{label}-{counts[label]}")
    used: set[int] = set()
    for rel in relations:
        if not (isinstance(rel, list) and len(rel) == 3 and all(isinstance(v, int) for v in rel)):
            record.drop(str(rel), "unknown_entity")
            continue
        s, o, p = rel
        subject = names[s] if 0 <= s < len(names) else None
        obj = names[o] if 0 <= o < len(names) else None
        if subject is None or obj is None or not 0 <= p < len(predicates):
            record.drop(f"{subject or s} {p} {obj or o}", "unknown_entity")
            continue
        record.relations.append(Relation(subject, " ".join(predicates[p].split()), obj))
        used.update((s, o))
    png = panoptic_root / str(item.get("pan_seg_file_name") or "")
    try:
        ids = panoptic_ids(png)
    except (OSError, ValueError) as exc:
        return record.fail("MissingPanoptic", f"cannot read the panoptic PNG {png}: {exc}")
    if record.width and record.height and ids.shape != (record.height, record.width):
        return record.fail(
            "PanopticSizeMismatch",
            f"the panoptic PNG {png} is {ids.shape[1]}x{ids.shape[0]}, psg.json says {record.width}x{record.height}",
        )
    height, width = ids.shape
    for index in sorted(used):
        seg = segments[index]
        mask = ids == seg.get("id")
        x1, y1, x2, y2 = _box_of(mask)
        record.entities.append(
            Entity(
                key=names[index],  # type: ignore[arg-type]
                label=readable_label(classes[seg["category_id"]]),
                object_id=int(seg["id"]) if isinstance(seg.get("id"), int) else None,
                bbox=[x1, y1, x2, y2] if x2 > x1 else None,
                segmentation=rle.encode(mask),
            )
        )
    record.width, record.height = width, height
    return check_record(record)


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0, 0.0, 0.0, 0.0
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def read_openpsg(
    psg_json: str | Path,
    coco_root: str | Path,
    *,
    panoptic_root: str | Path | None = None,
    captions: Iterable[str | Path] = (),
    max_captions: int = MAX_CAPTIONS,
    limit: int | None = None,
) -> Iterator[SourceRecord]:
    """One relation record per image of ``psg_json`` (see the module docstring), in file order.

    ``coco_root`` is the folder ``file_name`` is relative to; ``panoptic_root`` the folder ``pan_seg_file_name`` is
    relative to (default: ``coco_root``, OpenPSG's layout); ``captions`` are COCO caption files; ``limit`` stops
    after that many images.
    """
    doc = json.loads(Path(psg_json).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError(f"{psg_json}: not an OpenPSG file (no 'data' list)")
    classes = list(doc.get("thing_classes") or []) + list(doc.get("stuff_classes") or [])
    predicates = list(doc.get("predicate_classes") or [])
    if not classes or not predicates:
        raise ValueError(f"{psg_json}: thing_classes/stuff_classes and predicate_classes are required")
    test_ids = {str(i) for i in doc.get("test_image_ids") or []}
    coco_root = Path(coco_root)
    pan_root = Path(panoptic_root) if panoptic_root is not None else coco_root
    caption_index = load_captions(captions)
    for n, item in enumerate(doc["data"]):
        if limit is not None and n >= limit:
            return
        if not isinstance(item, dict):
            continue
        yield _image_record(item, classes, predicates, test_ids, coco_root, pan_root, caption_index, max_captions)
