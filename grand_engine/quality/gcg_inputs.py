"""Inputs of the GCG evaluation: ground truth and predictions, checked and turned into :class:`GCGImage` records.

Ground truth, GLaMM's layout (``DIR/{split}_gcg_coco_mask_gt.json`` and ``DIR/{split}_gcg_coco_caption_gt.json``):

* the mask file is COCO instances: ``images`` (``id``, ``height``, ``width``, ``file_name``) and ``annotations``
  (``id``, ``image_id``, ``category_id``, ``segmentation`` as RLE, ``area``, ``iscrowd``);
* the caption file lists the same ``images`` and ``annotations`` with ``image_id``, ``caption`` and ``labels``
  (the grounded phrases); the evaluated images are the caption file's, in its order. Every caption annotation of an
  image is a reference caption; the first one's ``labels`` are the image's phrases, and label ``i`` goes with the
  image's ``i``-th mask annotation (file order), as in GLaMM's evaluator.

Predictions, one of:

* GLaMM's layout: a folder with ``<image_id>.json`` per ground-truth image, holding ``caption``, ``phrases`` and
  ``pred_masks`` (RLE, mask ``i`` for phrase ``i``) at the top level or under one key;
* a GranD-f export of this project (``grand-engine export OUT f.json --format grandf``): a JSON list of
  ``{file_name, caption, groundings: {phrase: {token_positives, rle_masks}}}``, matched to the ground truth by
  file name; a phrase's masks are united into one;
* a run's output folder (local or ``s3://``): its ``grandf`` table (rows with a null ``skip_reason``), matched by
  image id or file name.

A malformed file is refused with :class:`GCGInputError`, which lists every problem found with the file (and record)
named: a missing key, a value of the wrong type, an RLE that does not decode, a mask whose size is not its image's,
phrase and mask counts that differ (recall pairs them by position; ``allow_count_mismatch`` pairs them anyway).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from grand_engine.grandf.reader import MissingStageError, iter_rows, read_unit, require_units
from grand_engine.grandf.records import union_mask
from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.quality.gcg import AP_CATEGORY, GCGImage

SPLITS = ("val", "test")
"""GLaMM's GCG evaluation splits."""
MAX_LISTED = 20
"""Problems listed in a :class:`GCGInputError` message (the rest are counted)."""
MISSING_POLICIES = ("error", "empty")


class GCGInputError(ValueError):
    """Ground truth or predictions that cannot be evaluated; ``problems`` names each file and what is wrong."""

    def __init__(self, what: str, problems: list[str], hint: str = "") -> None:
        self.problems = list(problems)
        listed = "\n  ".join(self.problems[:MAX_LISTED])
        more = len(self.problems) - MAX_LISTED
        text = f"{what}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}\n  {listed}"
        if more > 0:
            text += f"\n  … and {more} more"
        if hint:
            text += f"\n{hint}"
        super().__init__(text)


# -- shared checks ----------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise GCGInputError(what, [f"{path}: file not found"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GCGInputError(what, [f"{path}: not valid JSON ({exc})"]) from None


def _valid_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _one_mask(
    mask: Any, where: str, size: tuple[int, int] | None, problems: list[str]
) -> tuple[dict[str, Any] | None, tuple[int, int] | None]:
    """A normalised RLE that must have ``size`` (any size when None), or None with a problem appended."""
    try:
        norm = rle.normalize(mask)
    except rle.RLEError as exc:
        problems.append(f"{where}: {exc}")
        return None, size
    h, w = norm["size"]
    if size is not None and (h, w) != tuple(size):
        problems.append(f"{where}: mask size [{h}, {w}] differs from the image's [{size[0]}, {size[1]}] (H, W)")
        return None, size
    return norm, (h, w)


def _masks(
    masks: Any, where: str, size: tuple[int, int] | None, problems: list[str]
) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """Normalised RLEs of a list of masks that must all have ``size`` (or one common size when None).

    Appends a problem per bad mask; zero-area masks are allowed (a model may predict an empty mask).
    """
    if not isinstance(masks, list):
        problems.append(f"{where}: expected a list of RLE masks, got {type(masks).__name__}")
        return [], size
    out: list[dict[str, Any]] = []
    for k, mask in enumerate(masks):
        norm, size = _one_mask(mask, f"{where}[{k}]", size, problems)
        if norm is not None:
            out.append(norm)
    return out, size


def _strings(value: Any, where: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}: expected a list of strings, got {_describe(value)}")
        return []
    return list(value)


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _count_problem(
    where: str, phrases: int, masks: int, allow: bool, noun: str = "phrase", of: str = ""
) -> str | None:
    if phrases == masks or allow:
        return None
    return (
        f"{where}: {phrases} {noun}s but {masks} masks{of}; recall pairs {noun} i with mask i "
        "(--allow-count-mismatch pairs them by position anyway)"
    )


# -- ground truth -----------------------------------------------------------------------------------------------


@dataclass
class GroundTruth:
    """Evaluated images (in order) and the COCO instances dict AP50 is computed on."""

    images: dict[Hashable, GCGImage]
    coco: dict[str, Any]
    source: str
    file_names: dict[Hashable, str] = field(default_factory=dict)

    def keys(self) -> dict[str, Hashable]:
        """Names a prediction may use for each image: its id, file name and file stem (unambiguous ones only)."""
        seen: dict[str, set[Hashable]] = {}
        for image_id in self.images:
            names = {str(image_id)}
            name = self.file_names.get(image_id)
            if name:
                names |= {name, PurePosixPath(name).stem}
            for n in names:
                seen.setdefault(n, set()).add(image_id)
        return {n: next(iter(ids)) for n, ids in seen.items() if len(ids) == 1}


def coco_from_images(images: Mapping[Hashable, GCGImage]) -> dict[str, Any]:
    """COCO instances of ground-truth records (every mask category 1, ``iscrowd`` 0): for pseudo ground truth."""
    coco_images, annotations = [], []
    for image_id, image in images.items():
        entry: dict[str, Any] = {"id": image_id}
        size = (image.height, image.width) if image.height and image.width else None
        if size is None and image.masks:
            size = tuple(image.masks[0]["size"])
        if size is not None:
            entry["height"], entry["width"] = int(size[0]), int(size[1])
        coco_images.append(entry)
        areas = rle.area(list(image.masks)) if image.masks else []
        for mask, area in zip(image.masks, areas, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": AP_CATEGORY,
                    "segmentation": mask,
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    return {"images": coco_images, "annotations": annotations, "categories": [{"id": AP_CATEGORY, "name": "object"}]}


def ground_truth_from_images(images: Mapping[Hashable, GCGImage], source: str) -> GroundTruth:
    """A :class:`GroundTruth` from records (e.g. one run's output used as pseudo ground truth for another)."""
    return GroundTruth(
        images=dict(images),
        coco=coco_from_images(images),
        source=source,
        file_names={k: v.file_name for k, v in images.items() if v.file_name},
    )


def glamm_ground_truth_paths(gt_dir: str | Path, split: str) -> tuple[Path, Path]:
    """``(mask file, caption file)`` of a split in GLaMM's layout."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; GLaMM's GCG evaluation has {', '.join(SPLITS)}")
    root = Path(gt_dir)
    return root / f"{split}_gcg_coco_mask_gt.json", root / f"{split}_gcg_coco_caption_gt.json"


def _coco_lists(data: Any, path: Path, problems: list[str]) -> tuple[list[Any], list[Any]]:
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a COCO JSON object, got {type(data).__name__}")
        return [], []
    lists = []
    for key in ("images", "annotations"):
        value = data.get(key)
        if not isinstance(value, list):
            problems.append(f"{path}: {key!r} is {'missing' if value is None else 'not a list'}")
            value = []
        lists.append(value)
    return lists[0], lists[1]


def load_glamm_ground_truth(gt_dir: str | Path, split: str, allow_count_mismatch: bool = False) -> GroundTruth:
    """The ground truth of ``split`` in GLaMM's layout, checked; :class:`GCGInputError` lists what is wrong."""
    mask_path, caption_path = glamm_ground_truth_paths(gt_dir, split)
    what = f"ground truth {gt_dir} ({split})"
    mask_data = _read_json(mask_path, what)
    caption_data = _read_json(caption_path, what)
    problems: list[str] = []

    mask_images, mask_anns = _coco_lists(mask_data, mask_path, problems)
    sizes, file_names = _mask_images(mask_images, mask_path, problems)
    masks, coco_anns = _mask_annotations(mask_anns, mask_path, sizes, problems)
    cap_images, cap_anns = _coco_lists(caption_data, caption_path, problems)
    order = _caption_images(cap_images, caption_path, mask_path.name, sizes, file_names, problems)
    captions, labels = _caption_annotations(cap_anns, caption_path, order, problems)

    images: dict[Hashable, GCGImage] = {}
    for image_id in order:
        if not captions[image_id]:
            problems.append(f"{caption_path}: image {image_id!r} has no caption annotation")
            continue
        phrases = labels.get(image_id, [])
        issue = _count_problem(
            f"{caption_path}: image {image_id!r}",
            len(phrases),
            len(masks[image_id]),
            allow_count_mismatch,
            noun="label",
            of=f" in {mask_path.name}",
        )
        if issue:
            problems.append(issue)
        size = sizes[image_id]
        images[image_id] = GCGImage(
            image_id=image_id,
            captions=tuple(captions[image_id]),
            phrases=tuple(phrases),
            masks=tuple(masks[image_id]),
            height=size[0] if size else None,
            width=size[1] if size else None,
            file_name=file_names.get(image_id),
        )
    if not order and not problems:
        problems.append(f"{caption_path}: no images")
    if problems:
        raise GCGInputError(what, problems)
    coco = {
        "images": [img for img in mask_images if isinstance(img, dict)],
        "annotations": coco_anns,
        "categories": list(mask_data.get("categories") or [{"id": AP_CATEGORY, "name": "object"}]),
    }
    return GroundTruth(images=images, coco=coco, source=f"{mask_path} + {caption_path.name}", file_names=file_names)


def _mask_images(
    mask_images: list[Any], mask_path: Path, problems: list[str]
) -> tuple[dict[Hashable, tuple[int, int] | None], dict[Hashable, str]]:
    """The mask file's images: each id's ``(height, width)`` (``None`` when not given) and file name."""
    sizes: dict[Hashable, tuple[int, int] | None] = {}
    file_names: dict[Hashable, str] = {}
    for n, img in enumerate(mask_images):
        if not isinstance(img, dict) or not _valid_id(img.get("id")):
            problems.append(f"{mask_path}: images[{n}] needs an integer or string 'id'")
            continue
        if img["id"] in sizes:
            problems.append(f"{mask_path}: image id {img['id']!r} is listed twice")
        h, w = img.get("height"), img.get("width")
        sizes[img["id"]] = (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None
        if isinstance(img.get("file_name"), str):
            file_names[img["id"]] = img["file_name"]
    if len({type(k) for k in sizes}) > 1:
        problems.append(f"{mask_path}: image ids mix integers and strings (COCOeval sorts them)")
    return sizes, file_names


def _mask_annotations(
    mask_anns: list[Any],
    mask_path: Path,
    sizes: dict[Hashable, tuple[int, int] | None],
    problems: list[str],
) -> tuple[dict[Hashable, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Each image's checked RLE masks and the COCO annotations for the AP; an image without a size takes its
    masks' size (``sizes`` is updated)."""
    masks: dict[Hashable, list[dict[str, Any]]] = {k: [] for k in sizes}
    coco_anns = []
    for n, ann in enumerate(mask_anns):
        where = f"{mask_path}: annotations[{n}]"
        if not isinstance(ann, dict):
            problems.append(f"{where}: expected an object, got {type(ann).__name__}")
            continue
        image_id = ann.get("image_id")
        if image_id not in sizes:
            problems.append(f"{where}: image_id {image_id!r} is not in 'images'")
            continue
        if "id" not in ann:
            problems.append(f"{where}: 'id' is missing")
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            problems.append(f"{where}: segmentation is a polygon; GCG ground truth masks are RLE")
            continue
        mask, size = _one_mask(seg, f"{where}.segmentation", sizes[image_id], problems)
        if mask is None:
            continue
        sizes[image_id] = size
        area = int(rle.area(mask)[0])
        if area == 0:
            problems.append(f"{where}: the mask is empty (zero area)")
            continue
        masks[image_id].append(mask)
        coco_anns.append(
            {**ann, "segmentation": mask, "area": ann.get("area", area), "iscrowd": ann.get("iscrowd", 0)}
        )
    return masks, coco_anns


def _caption_images(
    cap_images: list[Any],
    caption_path: Path,
    mask_name: str,
    sizes: dict[Hashable, tuple[int, int] | None],
    file_names: dict[Hashable, str],
    problems: list[str],
) -> list[Hashable]:
    """The caption file's image ids in order (each must be in the mask file); a file name the mask file lacks
    is added to ``file_names``."""
    order: list[Hashable] = []
    for n, img in enumerate(cap_images):
        if not isinstance(img, dict) or not _valid_id(img.get("id")):
            problems.append(f"{caption_path}: images[{n}] needs an integer or string 'id'")
            continue
        image_id = img["id"]
        if image_id not in sizes:
            problems.append(f"{caption_path}: image {image_id!r} is not in {mask_name}")
            continue
        if image_id in order:
            problems.append(f"{caption_path}: image id {image_id!r} is listed twice")
            continue
        order.append(image_id)
        if isinstance(img.get("file_name"), str):
            file_names.setdefault(image_id, img["file_name"])
    return order


def _caption_annotations(
    cap_anns: list[Any], caption_path: Path, order: list[Hashable], problems: list[str]
) -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """Each image's captions in file order, and the labels (phrases) of its first caption annotation."""
    captions: dict[Hashable, list[str]] = {k: [] for k in order}
    labels: dict[Hashable, list[str]] = {}
    for n, ann in enumerate(cap_anns):
        where = f"{caption_path}: annotations[{n}]"
        if not isinstance(ann, dict):
            problems.append(f"{where}: expected an object, got {type(ann).__name__}")
            continue
        image_id = ann.get("image_id")
        if image_id not in captions:
            problems.append(f"{where}: image_id {image_id!r} is not in 'images'")
            continue
        if not isinstance(ann.get("caption"), str):
            problems.append(f"{where}: 'caption' is {'missing' if 'caption' not in ann else 'not a string'}")
            continue
        captions[image_id].append(ann["caption"])
        if image_id not in labels:
            labels[image_id] = _strings(ann.get("labels"), f"{where}.labels", problems)
    return captions, labels


# -- predictions ------------------------------------------------------------------------------------------------


@dataclass
class Predictions:
    """Predictions keyed by ground-truth image id, where they came from, and what did not match."""

    images: dict[Hashable, GCGImage]
    source: str
    missing: list[Hashable] = field(default_factory=list)
    unmatched: int = 0
    skipped: int = 0

    def notes(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} ground-truth images have no prediction and were scored as empty")
        if self.unmatched:
            out.append(f"{self.unmatched} prediction records match no ground-truth image and were ignored")
        if self.skipped:
            out.append(f"{self.skipped} grandf rows have no usable GCG record (skip_reason set)")
        return out


def glamm_prediction_fields(data: Any) -> dict[str, Any] | None:
    """The object holding ``caption``/``phrases``/``pred_masks``: the file's top level or its one nested object."""
    if not isinstance(data, dict):
        return None
    if "caption" in data or "pred_masks" in data:
        return data
    nested = [v for v in data.values() if isinstance(v, dict) and ("caption" in v or "pred_masks" in v)]
    return nested[0] if len(nested) == 1 else None


def parse_glamm_prediction(
    data: Any, where: str, image_id: Hashable, size: tuple[int, int] | None, allow_count_mismatch: bool = False
) -> tuple[GCGImage | None, list[str]]:
    """One GLaMM prediction file's content as a record, or the problems that prevent it."""
    problems: list[str] = []
    fields = glamm_prediction_fields(data)
    if fields is None:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        return None, [
            f"{where}: no 'caption', 'phrases' and 'pred_masks' at the top level or under one key (found {keys})"
        ]
    missing = [k for k in ("caption", "phrases", "pred_masks") if k not in fields]
    if missing:
        return None, [f"{where}: {', '.join(repr(k) for k in missing)} missing (keys: {sorted(map(str, fields))})"]
    if not isinstance(fields["caption"], str):
        problems.append(f"{where}: 'caption' must be a string, got {_describe(fields['caption'])}")
    phrases = _strings(fields["phrases"], f"{where}: 'phrases'", problems)
    masks, _ = _masks(fields["pred_masks"], f"{where}: pred_masks", size, problems)
    if not problems:
        issue = _count_problem(where, len(phrases), len(masks), allow_count_mismatch)
        if issue:
            problems.append(issue)
    if problems:
        return None, problems
    image = GCGImage(image_id, (fields["caption"],), tuple(phrases), tuple(masks), *(size or (None, None)))
    return image, []


def _size_of(image: GCGImage) -> tuple[int, int] | None:
    return (image.height, image.width) if image.height and image.width else None


def _read_glamm_folder(
    folder: Path, gt: GroundTruth, allow_count_mismatch: bool
) -> tuple[dict[Hashable, GCGImage], list[Hashable], list[str]]:
    images: dict[Hashable, GCGImage] = {}
    missing: list[Hashable] = []
    problems: list[str] = []
    for image_id, truth in gt.images.items():
        path = folder / f"{image_id}.json"
        if not path.is_file():
            missing.append(image_id)
            continue
        try:
            data = _read_json(path, str(folder))
        except GCGInputError as exc:
            problems.extend(exc.problems)
            continue
        image, issues = parse_glamm_prediction(data, str(path), image_id, _size_of(truth), allow_count_mismatch)
        problems.extend(issues)
        if image is not None:
            images[image_id] = image
    return images, missing, problems


def _grounded_record(
    image_id: str,
    file_name: str | None,
    caption: Any,
    groundings: Iterable[tuple[Any, Any]],
    where: str,
    size: tuple[int, int] | None,
    problems: list[str],
) -> GCGImage | None:
    """A record from GranD-f groundings ``(phrase, rle_masks)``: each phrase's masks united into one."""
    count = len(problems)
    if not isinstance(caption, str):
        problems.append(f"{where}: 'caption' must be a string, got {_describe(caption)}")
    phrases, masks = [], []
    for phrase, rle_masks in groundings:
        if not isinstance(phrase, str):
            problems.append(f"{where}: a grounding phrase is {_describe(phrase)}, not a string")
            continue
        checked, size = _masks(rle_masks, f"{where}: {phrase!r} rle_masks", size, problems)
        if not checked and isinstance(rle_masks, list) and not rle_masks:
            problems.append(f"{where}: {phrase!r} has no mask")
        if checked and len(checked) == len(rle_masks):
            phrases.append(phrase)
            masks.append(union_mask(checked))
    if len(problems) > count:
        return None
    return GCGImage(image_id, (caption,), tuple(phrases), tuple(masks), *(size or (None, None)), file_name=file_name)


def read_grandf_export(path: str | Path) -> list[GCGImage]:
    """The records of a GranD-f export (``--format grandf``), image id = file stem; malformed ones are listed."""
    path = Path(path)
    data = _read_json(path, str(path))
    if not isinstance(data, list):
        raise GCGInputError(str(path), [f"{path}: expected a JSON list of GranD-f records, got {type(data).__name__}"])
    problems: list[str] = []
    out = []
    for n, rec in enumerate(data):
        where = f"{path} record {n}"
        if not isinstance(rec, dict):
            problems.append(f"{where}: expected an object, got {type(rec).__name__}")
            continue
        name = rec.get("file_name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: 'file_name' is missing or not a string")
            continue
        where = f"{path} record {n} ({name})"
        groundings = rec.get("groundings")
        if not isinstance(groundings, dict):
            problems.append(f"{where}: 'groundings' must be an object {{phrase: {{rle_masks}}}}")
            continue
        pairs = []
        for phrase, g in groundings.items():
            if not isinstance(g, dict) or "rle_masks" not in g:
                problems.append(f"{where}: grounding {phrase!r} has no 'rle_masks'")
                continue
            pairs.append((phrase, g["rle_masks"]))
        image = _grounded_record(PurePosixPath(name).stem, name, rec.get("caption"), pairs, where, None, problems)
        if image is not None:
            out.append(image)
    if problems:
        raise GCGInputError(str(path), problems)
    return out


def read_grandf_run(out: str | Path) -> tuple[list[GCGImage], int]:
    """``(records, rows skipped)`` of a run's ``grandf`` table (rows with a ``skip_reason`` are skipped)."""
    store = OutputStore(out)
    try:
        units = require_units(store, "grandf", "run the grandf stage (level 4) first")
    except MissingStageError as exc:
        raise GCGInputError(str(out), [str(exc)]) from None
    problems: list[str] = []
    records, skipped = [], 0
    rows = ((unit_id, row) for unit_id in units for row in iter_rows(read_unit(store, "grandf", unit_id)))
    for unit_id, row in rows:
        if row.get("skip_reason"):
            skipped += 1
            continue
        where = f"{store.uri} grandf {unit_id} image {row.get('image_id')!r}"
        h, w = row.get("height"), row.get("width")
        size = (int(h), int(w)) if h and w else None
        pairs = [(g.get("phrase"), list(g.get("rle_masks") or [])) for g in row.get("groundings") or []]
        image = _grounded_record(
            str(row["image_id"]), row.get("file_name"), row.get("caption"), pairs, where, size, problems
        )
        if image is not None:
            records.append(image)
    if problems:
        raise GCGInputError(str(out), problems)
    return records, skipped


def match_to_ground_truth(
    records: Iterable[GCGImage], gt: GroundTruth, source: str
) -> tuple[dict[Hashable, GCGImage], int]:
    """``({gt image id: record}, unmatched count)``: records matched by image id, file name or file stem.

    A record whose masks do not have its ground-truth image's size, or two records for one image, are errors.
    """
    keys = gt.keys()
    problems: list[str] = []
    out: dict[Hashable, GCGImage] = {}
    unmatched = 0
    for image in records:
        names = [str(image.image_id)]
        if image.file_name:
            names += [image.file_name, PurePosixPath(image.file_name).stem]
        target = next((keys[n] for n in names if n in keys), None)
        if target is None:
            unmatched += 1
            continue
        if target in out:
            problems.append(
                f"{source}: two records for ground-truth image {target!r} ({image.file_name or image.image_id})"
            )
            continue
        truth = _size_of(gt.images[target])
        if truth and image.masks and tuple(image.masks[0]["size"]) != truth:
            problems.append(
                f"{source}: image {image.image_id!r}: mask size {list(image.masks[0]['size'])} differs from "
                f"the ground truth's [{truth[0]}, {truth[1]}] (H, W)"
            )
            continue
        out[target] = replace(image, image_id=target)
    if problems:
        raise GCGInputError(source, problems)
    return out, unmatched


def prediction_kind(path: str | Path) -> str:
    """``"run"`` (an output folder or ``s3://`` URI), ``"grandf"`` (an export file) or ``"glamm"`` (a folder)."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return "run"
    p = Path(text.removeprefix("file://"))
    if p.is_file():
        return "grandf"
    if p.is_dir():
        return "run" if (p / "_manifests").is_dir() or (p / "run.json").is_file() else "glamm"
    raise GCGInputError(text, [f"{text}: no such file or folder"])


def load_predictions(
    path: str | Path, gt: GroundTruth, missing: str = "error", allow_count_mismatch: bool = False
) -> Predictions:
    """Predictions for ``gt`` from any accepted source (see the module docstring).

    ``missing``: ``"error"`` refuses predictions that leave ground-truth images without one, ``"empty"`` scores
    those images as empty predictions (reported in :meth:`Predictions.notes`).
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    kind = prediction_kind(path)
    unmatched = skipped = 0
    if kind == "glamm":
        folder = Path(str(path).removeprefix("file://"))
        images, absent, problems = _read_glamm_folder(folder, gt, allow_count_mismatch)
        if problems:
            raise GCGInputError(f"predictions {folder}", problems)
        source = f"{folder} (GLaMM layout, one <image_id>.json per image)"
        names = {k: str(folder / f"{k}.json") for k in absent}
    else:
        if kind == "grandf":
            records = read_grandf_export(path)
            source = f"{path} (GranD-f export)"
        else:
            records, skipped = read_grandf_run(path)
            source = f"{path} (grandf table of a run)"
        images, unmatched = match_to_ground_truth(records, gt, str(path))
        absent = [k for k in gt.images if k not in images]
        names = {k: repr(k) for k in absent}
    if absent and missing == "error":
        raise GCGInputError(
            f"predictions {path}",
            [f"no prediction for ground-truth image {gt.images[k].image_id!r}: {names[k]}" for k in absent],
            hint="pass --missing empty to score images without a prediction as empty predictions",
        )
    return Predictions(images=images, source=source, missing=absent, unmatched=unmatched, skipped=skipped)
