"""An independent statement of what GLaMM's GCG loaders do with their annotation files.

GLaMM (mbzuai-oryx/groundingLMM) reads GranD-f in ``dataset/gcg_datasets/GranDf_gcg_ds.py``. Its code cannot be
part of this repository, so this module states, in our own code, what that file's annotation parsing does, step by
step, and the exports are tested against this statement (``test_source_exports.py``). Every function returns what
the loader would hand to its model-side code: the caption, the phrase labels, the ``[start, end)`` token positives
and one ``H×W`` uint8 mask per phrase, in the order the loader produces them.

**GranDf_HA_GCG_train.json and OpenPsgGCG_{train,val}.json** (``GCGBaseDataset._parse_annotations`` and
``process_data``) — a JSON list; for one element:

* reads ``file_name`` (joined with the image folder; the image is opened to get its width and height),
  ``caption`` — stripped as ``caption.strip('"').strip()`` — and ``groundings``, a dict;
* for each ``(phrase, grounding)`` item, in the dict's order: the label is the dict *key*, the token positive is
  ``grounding["token_positives"]`` as stored, and the mask is an ``H×W`` uint8 array of zeros to which
  ``pycocotools.mask.decode(rle).squeeze()`` of every entry of ``grounding["rle_masks"]`` is added (so each RLE must
  decode to exactly ``H×W``);
* an element with no grounding is skipped (``__getitem__`` draws another one);
* ``process_data`` reorders labels, masks and token positives by start offset, stacks the masks (``np.stack``) and
  writes the answer by replacing each span, from the last start to the first, with ``<p> span </p> [SEG]`` —
  one ``[SEG]`` per mask.

**RefCOCOg_GCG_{train,val}.json** (``RefCOCOgGCGDataset``) — a JSON list of one-key dicts; the loader takes the
first value of each:

* reads ``img_file_name`` (image opened for its size), ``caption`` (``.strip('"').strip()``, then lower-cased) and
  ``refs``;
* for each ref, in list order: ``phrase = ref["sentence"]``; only when ``phrase.lower()`` is a substring of the
  lower-cased caption: the label is ``phrase``, the token positive is ``[i, i + len(phrase)]`` with
  ``i = caption.find(phrase)`` on the lower-cased caption (``[-1, -1]`` when that exact-case search fails), and the
  mask adds ``decode(frPyObjects([seg], H, W)).squeeze()`` for each ``seg`` of ``ref["segmentation"]`` (a polygon
  list, or an uncompressed RLE dict);
* labels, masks and token positives are then sorted by start — but the overlap trimming that follows walks the
  token positives in their *original* ref order (the unsorted list, whose inner lists are shared with the sorted
  one): for each ``i`` and the first ``j > i`` with ``tp[i][1] >= tp[j][0]``, it sets ``tp[i][1] = tp[j][0] - 1``
  and the *sorted* label at position ``i`` to ``orig_caption[tp[i][0]: tp[i][1] + 1]``. Refs written in caption
  order with spans at least one character apart are left untouched; any other order corrupts spans;
* the caption handed on is the lower-cased one.

**flickr_mergedGT_GCG_{train,val}.json** (``Flickr30kGCGDataset``) — read with ``pycocotools.coco.COCO``:

* images in ``getImgIds()`` order; an image whose ``caption.split(' ')`` has fewer than 3 items is removed, then
  images whose shorter side (``min(width, height)``) is under 32; annotation ids must be unique (asserted);
* for each annotation of an image (``getAnnIds(imgIds=id)`` order): skipped when ``ignore`` is true, or when the
  XYWH ``bbox`` has no overlap with the image, ``area <= 0``, ``w < 1`` or ``h < 1``; otherwise the label is
  ``caption[s:e]`` of the first entry of ``tokens_positive``, the token positive is that first entry, and the mask
  is ``decode(ann["sam_mask"])``;
* the caption is used unchanged; ``process_data`` then sorts and tags as above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_api

MIN_WORDS = 3
MIN_SIDE = 32


@dataclass
class Parsed:
    """What a loader hands on for one record."""

    file_name: str
    caption: str
    labels: list[str] = field(default_factory=list)
    tokens_positive: list[list[int]] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)

    def answer(self) -> str:
        """``process_data``'s tagged answer: spans replaced from the last start to the first."""
        caption = self.caption
        for start, end in sorted(self.tokens_positive, key=lambda t: t[0], reverse=True):
            caption = f"{caption[:start]}<p> {caption[start:end]} </p> [SEG]{caption[end:]}"
        return caption

    def by_start(self) -> Parsed:
        """``process_data``'s reordering by start offset (a stable sort)."""
        order = sorted(range(len(self.tokens_positive)), key=lambda i: self.tokens_positive[i][0])
        return Parsed(
            self.file_name,
            self.caption,
            [self.labels[i] for i in order],
            [self.tokens_positive[i] for i in order],
            [self.masks[i] for i in order],
        )


def _image_size(image_dir: Path, name: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(image_dir / name) as im:
        width, height = im.size
    return height, width


def parse_gcg_base(element: dict[str, Any], image_dir: Path) -> Parsed | None:
    """GranDf_HA / OpenPSG: one list element (``None``: skipped for having no grounding)."""
    height, width = _image_size(image_dir, element["file_name"])
    out = Parsed(element["file_name"], element["caption"].strip('"').strip())
    for phrase, grounding in element["groundings"].items():
        out.labels.append(phrase)
        out.tokens_positive.append(grounding["token_positives"])
        binary = np.zeros((height, width), dtype=np.uint8)
        for rle in grounding["rle_masks"]:
            binary += mask_api.decode(rle).astype(np.uint8).squeeze()
        out.masks.append(binary)
    return out.by_start() if out.labels else None


def parse_refcocog(element: dict[str, Any], image_dir: Path) -> Parsed | None:
    """RefCOCOg: one list element, a one-key dict (``None``: skipped for having no label)."""
    info = next(iter(element.values()))
    height, width = _image_size(image_dir, info["img_file_name"])
    original = info["caption"].strip('"').strip()
    caption = original.lower()
    labels: list[str] = []
    tokens: list[list[int]] = []
    masks: list[np.ndarray] = []
    for ref in info["refs"]:
        phrase = ref["sentence"]
        if phrase.lower() not in caption:
            continue
        labels.append(phrase)
        start = caption.find(phrase)
        tokens.append([start, start + len(phrase) if start != -1 else -1])
        binary = np.zeros((height, width), dtype=np.uint8)
        for seg in ref["segmentation"]:
            binary += mask_api.decode(mask_api.frPyObjects([seg], height, width)).astype(np.uint8).squeeze()
        masks.append(binary)
    order = sorted(range(len(tokens)), key=lambda i: tokens[i][0])
    sorted_tokens = [tokens[i] for i in order]
    sorted_labels = [labels[i] for i in order]
    sorted_masks = [masks[i] for i in order]
    for i in range(len(tokens)):  # the trimming walks the unsorted list (module docstring)
        for j in range(i + 1, len(tokens)):
            if tokens[i][1] >= tokens[j][0]:
                tokens[i][1] = tokens[j][0] - 1
                sorted_labels[i] = original[tokens[i][0] : tokens[i][1] + 1]
                break
    if not labels:
        return None
    return Parsed(info["img_file_name"], caption, sorted_labels, sorted_tokens, sorted_masks)


def parse_flickr(path: Path) -> list[Parsed]:
    """Flickr30K: the whole file, as the dataset's ``data_infos`` after its filters, each image parsed."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
        coco = COCO(str(path))
    infos = []
    ann_ids: list[int] = []
    for img_id in coco.getImgIds():
        info = dict(coco.loadImgs([img_id])[0])
        if len(info["caption"].split(" ")) < MIN_WORDS:
            continue
        info["height"], info["width"] = int(info["height"]), int(info["width"])
        infos.append(info)
        ann_ids.extend(coco.getAnnIds(imgIds=[img_id]))
    assert len(set(ann_ids)) == len(ann_ids), "non-unique annotation ids"
    infos = [i for i in infos if min(i["width"], i["height"]) >= MIN_SIDE]
    out = []
    for info in infos:
        parsed = Parsed(info["file_name"], info["caption"])
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=info["id"])):
            if ann.get("ignore", False):
                continue
            x1, y1, w, h = ann["bbox"]
            inter_w = max(0, min(x1 + w, info["width"]) - max(x1, 0))
            inter_h = max(0, min(y1 + h, info["height"]) - max(y1, 0))
            if inter_w * inter_h == 0 or ann["area"] <= 0 or w < 1 or h < 1:
                continue
            first = ann["tokens_positive"][0]
            parsed.labels.append(info["caption"][first[0] : first[1]])
            parsed.tokens_positive.append(first)
            parsed.masks.append(mask_api.decode(ann["sam_mask"]).astype(np.uint8))
        out.append(parsed.by_start())
    return out


def load_list(path: Path) -> list[Any]:
    """A JSON list file, as ``json.load`` reads it."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    assert isinstance(data, list), f"{path} is not a JSON list"
    return data
