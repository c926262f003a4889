"""Two runs over the same images, compared stage by stage: what a change of manifest, threshold or model did.

For two outputs *A* and *B* (``grand-engine compare OUT_A OUT_B``), only done units count on each side. Images
are matched by ``image_id``; images present in one output only are counted and listed, and every figure below is
computed on the images both have. Per stage present in both:

* **rows**: images with a row in A, in B, in both, and **changed**: images of both whose rows differ in any column
  (DuckDB ``EXCEPT`` over the two tables, nested columns included);
* **boxes** (objects and floating objects, detections, regions, masks' boxes): counts in A and B, and the greedy
  one-to-one pairing of :func:`grand_engine.quality.gcg.miou_pairs` on the A × B box IoU matrix — pairs with IoU ≥
  0.5 are *matched* (the rest of A *removed*, of B *added*), ``matched_iou`` is their mean IoU and ``miou`` the
  GLaMM-style mean over images of each image's mean paired IoU (0 for an image whose boxes pair with nothing);
  *labels agree* counts matched pairs with the same label;
* **masks**: the same on mask IoU (:func:`grand_engine.quality.gcg.iou_matrix`, computed on the RLEs);
* **captions** (each caption slot: a stage's ``caption``, each short caption, the dense caption, the extra context):
  identical ones, and the similarity of the two captions — the cosine of the phrase encoder of
  :mod:`grand_engine.quality.text_similarity` (1 for identical captions) — and their lengths in words;
* **phrases** (grounded phrases of the captions, ``ground_phrases`` phrases, ``grandf`` groundings): per image, the
  multiset of phrases (lower case, stripped) in A and B, those in both, added and removed;
* **verification**: how the dense captions' verification status moved from A to B.

Finally the GCG figures of B against A: A's ``grandf`` records (usable ones) are the pseudo ground truth and B's the
predictions (:func:`grand_engine.quality.gcg.evaluate_gcg`); an image A has a record for and B not is scored as an
empty prediction. ``run.json`` of both outputs is compared too, so the report starts with what was changed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grand_engine import geometry
from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.quality.gcg import IOU_THRESHOLD, iou_matrix, miou_pairs
from grand_engine.quality.stats import ROOT_STAGE, connect, done_records, iter_tables
from grand_engine.runtime.manifests import data_path
from grand_engine.runtime.records import RecordBook

COMPARE_FORMAT = "grand-engine-compare/1"
MATCH_IOU = IOU_THRESHOLD
"""IoU at which two boxes or masks count as the same region (GCG's recall threshold, 0.5)."""
LISTED_IMAGES = 20
"""Images present in one output only that the console lists by id (the JSON lists all)."""


class CompareError(LookupError):
    """The two outputs cannot be compared; the message says why."""


# -- reading -----------------------------------------------------------------------------------------------------


@dataclass
class RunSide:
    """One output: its store, record book, configuration and done stages."""

    store: OutputStore
    book: RecordBook
    config: dict[str, Any] | None
    stages: set[str]

    @classmethod
    def open(cls, out: str | OutputStore) -> RunSide:
        store = out if isinstance(out, OutputStore) else OutputStore(out)
        book = RecordBook.load(store)
        if len(book) == 0:
            raise CompareError(f"{store.uri} has no completion record (_manifests/): is it the output of a run?")
        try:
            config = json.loads(store.read_text("run.json"))
        except (FileNotFoundError, ValueError):
            config = None
        done = book.table.filter(pc.equal(book.table["status"], "done"))
        return cls(store, book, config, set(done["stage"].to_pylist()))

    def table(self, stage: str) -> pa.Table:
        """The stage's rows over all done units (one table)."""
        records = done_records(self.book, stage)
        paths = [r.output or data_path(stage, r.unit_id) for r in records]
        tables = [t for _, t in iter_tables(self.store, paths)]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})

    def image_ids(self) -> set[str]:
        if ROOT_STAGE not in self.stages:
            raise CompareError(f"{self.store.uri} has no completed unit of the {ROOT_STAGE!r} table")
        records = done_records(self.book, ROOT_STAGE)
        paths = [r.output or data_path(ROOT_STAGE, r.unit_id) for r in records]
        return {i for _, t in iter_tables(self.store, paths, ["image_id"]) for i in t["image_id"].to_pylist()}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k in sorted(value):
            _flatten(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    else:
        out[prefix] = value


CONFIG_KEYS = ("manifest", "input", "seed", "unit_size")
"""Top-level ``run.json`` keys compared besides each stage's class, version, parameters and models."""


def config_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``[{"key", "a", "b"}]`` for every configuration value that differs (a stage on one side only included)."""
    if a is None or b is None:
        return []

    def flat(config: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in CONFIG_KEYS:
            if key in config:
                out[key] = config[key]
        for stage, spec in (config.get("stages") or {}).items():
            for part in ("class", "version", "params", "models"):
                if part in spec:
                    _flatten(f"{stage}.{part}", spec[part], out)
        return out

    fa, fb = flat(a), flat(b)
    missing = object()
    diffs = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if va != vb:
            diffs.append({"key": key, "a": None if va is missing else va, "b": None if vb is missing else vb})
    return diffs


def stage_order(config: dict[str, Any] | None, stages: Iterable[str]) -> list[str]:
    """``stages`` in pipeline order (each after its inputs, by ``run.json``), ties and unknown stages by name."""
    wanted = sorted(set(stages))
    specs = (config or {}).get("stages") or {}
    inputs = {s: [i for i in (specs.get(s) or {}).get("inputs", []) if i in wanted] for s in wanted}
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(wanted):
        ready = [s for s in wanted if s not in placed and all(i in placed for i in inputs[s])]
        if not ready:  # a cycle cannot happen in a pipeline; place the rest by name rather than loop
            ready = [s for s in wanted if s not in placed]
        order.append(ready[0])
        placed.add(ready[0])
    return order


# -- what a row holds ----------------------------------------------------------------------------------------------


def regions_of(row: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]] | None:
    """``(boxes, labels, masks)`` of a row's regions (a mask or label may be None), or None when the row has none."""
    if "objects" in row:
        entries = list(row.get("objects") or []) + list(row.get("floating_objects") or [])
        labels = [o.get("label") or next(iter(o.get("labels") or []), None) for o in entries]
        return [o.get("bbox") for o in entries], labels, [o.get("segmentation") for o in entries]
    if "boxes" in row:
        boxes = list(row.get("boxes") or [])
        labels = list(row.get("labels") or row.get("descriptions") or [None] * len(boxes))
        masks = list(row.get("masks") or [None] * len(boxes))
        return boxes, labels, masks
    for column in ("annotations", "masks"):  # sa1b / sam_masks annotations; the masks stage's entries
        value = row.get(column)
        if column in row and (not value or isinstance(value[0], dict) and "segmentation" in value[0]):
            entries = list(value or [])
            return [e.get("bbox") for e in entries], [None] * len(entries), [e.get("segmentation") for e in entries]
    return None


def captions_of(row: dict[str, Any]) -> dict[str, str]:
    """The row's captions by slot (``caption``, ``short 0``, ``short 1``, ``dense``, ``text``, ``additional
    context``)."""
    out: dict[str, str] = {}
    if isinstance(row.get("caption"), str):
        out["caption"] = row["caption"]
    for i, c in enumerate(row.get("captions") or []):
        if isinstance(c, str):
            out[f"short {i}"] = c
    for i, s in enumerate(row.get("short_captions") or []):
        if isinstance(s, dict) and isinstance(s.get("caption"), str):
            out[f"short {i}"] = s["caption"]
    dense = row.get("dense_caption")
    if isinstance(dense, dict) and isinstance(dense.get("caption"), str):
        out["dense"] = dense["caption"]
    for column, slot in (("text", "text"), ("additional_context", "additional context")):
        if isinstance(row.get(column), str):
            out[slot] = row[column]
    return out


def phrases_of(row: dict[str, Any]) -> list[str] | None:
    """The row's grounded phrases (lower case, stripped), or None when the row has no phrase column."""
    found: list[str] | None = None

    def take(entries: Any) -> None:
        nonlocal found
        found = found if found is not None else []
        found += [str(e["phrase"]).strip().lower() for e in entries or [] if isinstance(e, dict) and e.get("phrase")]

    for s in row.get("short_captions") or []:
        take(s.get("details") if "details" in s else s.get("groundings"))
    if "short_captions" in row and found is None:
        found = []
    if "dense_caption" in row:
        take((row.get("dense_caption") or {}).get("details"))
    for column in ("phrases", "groundings"):
        if column in row:
            take(row.get(column))
    return found


def status_of(row: dict[str, Any]) -> str | None:
    """The dense caption's verification status of a row, if the row carries one."""
    if isinstance(row.get("verification"), dict):
        return row["verification"].get("status")
    dense = row.get("dense_caption")
    if isinstance(dense, dict) and isinstance(dense.get("verification"), dict):
        return dense["verification"].get("status")
    return row.get("verification_status")


def _has_status(columns: list[str]) -> bool:
    return bool({"verification", "dense_caption", "verification_status"} & set(columns))


# -- agreements --------------------------------------------------------------------------------------------------


@dataclass
class Agreement:
    """Region agreement (boxes or masks) over images: counts, greedy pairs, matched IoU, label agreement."""

    a: int = 0
    b: int = 0
    matched: int = 0
    matched_iou_sum: float = 0.0
    images: int = 0
    image_miou_sum: float = 0.0
    labels_compared: int = 0
    labels_agree: int = 0
    unreadable: int = 0

    def add(self, iou: np.ndarray, labels_a: list[Any] | None = None, labels_b: list[Any] | None = None) -> None:
        n_a, n_b = iou.shape
        self.a += n_a
        self.b += n_b
        if n_a == 0 and n_b == 0:
            return
        pairs = miou_pairs(iou)
        values = [float(iou[i, j]) for i, j in pairs]
        self.images += 1
        self.image_miou_sum += float(np.mean(values)) if values else 0.0
        for (i, j), v in zip(pairs, values, strict=True):
            if v < MATCH_IOU:
                continue
            self.matched += 1
            self.matched_iou_sum += v
            if labels_a is not None and labels_b is not None:
                self.labels_compared += 1
                self.labels_agree += int(labels_a[i] is not None and labels_a[i] == labels_b[j])

    def summary(self, labels: bool) -> dict[str, Any]:
        out = {
            "a": self.a,
            "b": self.b,
            "matched": self.matched,
            "removed": self.a - self.matched,
            "added": self.b - self.matched,
            "matched_iou": self.matched_iou_sum / self.matched if self.matched else None,
            "miou": self.image_miou_sum / self.images if self.images else None,
            "images": self.images,
        }
        if labels:
            out["labels_compared"] = self.labels_compared
            out["labels_agree"] = self.labels_agree
        if self.unreadable:
            out["unreadable_images"] = self.unreadable
        return out


@dataclass
class CaptionPairs:
    """Captions of one stage paired slot by slot."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    only_a: int = 0
    only_b: int = 0

    def add(self, a: dict[str, str], b: dict[str, str]) -> None:
        for slot in a.keys() & b.keys():
            self.pairs.append((a[slot], b[slot]))
        self.only_a += len(a.keys() - b.keys())
        self.only_b += len(b.keys() - a.keys())

    def summary(self, encoder: Any) -> dict[str, Any]:
        identical = sum(x == y for x, y in self.pairs)
        words_a = [len(x.split()) for x, _ in self.pairs]
        words_b = [len(y.split()) for _, y in self.pairs]
        out: dict[str, Any] = {
            "pairs": len(self.pairs),
            "identical": identical,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "words_a": float(np.mean(words_a)) if words_a else None,
            "words_b": float(np.mean(words_b)) if words_b else None,
            "similarity": None,
            "min_similarity": None,
        }
        if self.pairs and (encoder is not None or identical == len(self.pairs)):
            sims = caption_similarities(self.pairs, encoder)
            out["similarity"] = float(np.mean(sims))
            out["min_similarity"] = float(np.min(sims))
        return out


def caption_similarities(pairs: list[tuple[str, str]], encoder: Any) -> np.ndarray:
    """Cosine of the encoder's vectors of each caption pair (exactly 1 for identical captions)."""
    sims = np.ones(len(pairs))
    different = [k for k, (x, y) in enumerate(pairs) if x != y]
    if different:
        texts = list(dict.fromkeys(t for k in different for t in pairs[k]))
        vectors = dict(zip(texts, encoder.embed(texts), strict=True))
        for k in different:
            x, y = pairs[k]
            sims[k] = float(np.dot(vectors[x].astype(np.float64), vectors[y].astype(np.float64)))
    return sims


@dataclass
class PhraseCounts:
    a: int = 0
    b: int = 0
    common: int = 0
    images_changed: int = 0

    def add(self, a: list[str], b: list[str]) -> None:
        ca, cb = Counter(a), Counter(b)
        common = sum((ca & cb).values())
        self.a += len(a)
        self.b += len(b)
        self.common += common
        self.images_changed += int(ca != cb)

    def summary(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "common": self.common,
            "removed": self.a - self.common,
            "added": self.b - self.common,
            "images_changed": self.images_changed,
        }


def _box_iou(boxes_a: list[Any], boxes_b: list[Any]) -> np.ndarray:
    """Box IoU of every pair; a box identical to another counts as IoU 1 even when it has no area (a degenerate box
    has IoU 0 with itself, and unchanged output must not read as changed)."""
    a = geometry.as_boxes(np.asarray(boxes_a, dtype=np.float64))
    b = geometry.as_boxes(np.asarray(boxes_b, dtype=np.float64))
    iou = geometry.iou_matrix(a, b)
    same = (a[:, None, :] == b[None, :, :]).all(axis=2)
    iou[same] = 1.0
    return iou


def _mask_iou(masks_a: list[Any], masks_b: list[Any]) -> np.ndarray:
    """Mask IoU of every pair (on the RLEs); identical masks count as IoU 1, empty ones included."""
    if not masks_a or not masks_b:
        return np.zeros((len(masks_a), len(masks_b)))
    iou = iou_matrix(masks_a, masks_b)

    def key(mask: dict[str, Any]) -> tuple[Any, ...]:
        return (mask.get("counts"), *[int(v) for v in mask.get("size") or ()])

    positions: dict[tuple[Any, ...], list[int]] = {}
    for j, mb in enumerate(masks_b):
        positions.setdefault(key(mb), []).append(j)
    for i, ma in enumerate(masks_a):
        iou[i, positions.get(key(ma), [])] = 1.0
    return iou


def _present(boxes: list[Any], labels: list[Any]) -> tuple[list[Any], list[Any]]:
    keep = [k for k, box in enumerate(boxes) if box is not None]
    return [boxes[k] for k in keep], [labels[k] if k < len(labels) else None for k in keep]


# -- one stage ---------------------------------------------------------------------------------------------------


def _comparable(ta: pa.Table, tb: pa.Table) -> tuple[pa.Table, pa.Table, list[str]]:
    """Both tables reduced to the columns they share (B cast to A's types); the columns left out, and why."""
    left_out = []
    keep_a, keep_b = [], []
    for name in ta.column_names:
        if name not in tb.column_names:
            left_out.append(f"{name} (only in A)")
            continue
        col_b = tb[name]
        if col_b.type != ta[name].type:
            try:
                col_b = col_b.cast(ta[name].type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                left_out.append(f"{name} (types differ: {ta[name].type} / {tb[name].type})")
                continue
        keep_a.append((name, ta[name]))
        keep_b.append((name, col_b))
    left_out += [f"{name} (only in B)" for name in tb.column_names if name not in ta.column_names]
    return (
        pa.table(dict(keep_a)),
        pa.table(dict(keep_b)),
        left_out,
    )


def compare_stage(stage: str, ta: pa.Table, tb: pa.Table, images: set[str], encoder: Any) -> dict[str, Any]:
    """The comparison of one stage's tables on ``images`` (the images both outputs have)."""
    value_set = pa.array(sorted(images), pa.string())
    ta = ta.filter(pc.is_in(ta["image_id"], value_set=value_set))
    tb = tb.filter(pc.is_in(tb["image_id"], value_set=value_set))
    ids_a, ids_b = set(ta["image_id"].to_pylist()), set(tb["image_id"].to_pylist())
    both = sorted(ids_a & ids_b)
    out: dict[str, Any] = {
        "stage": stage,
        "rows_a": len(ids_a),
        "rows_b": len(ids_b),
        "images": len(both),
        "rows_only_a": len(ids_a - ids_b),
        "rows_only_b": len(ids_b - ids_a),
    }
    ca, cb, left_out = _comparable(ta, tb)
    con = connect()
    con.register("ta", ca.filter(pc.is_in(ca["image_id"], value_set=pa.array(both, pa.string()))))
    con.register("tb", cb)
    changed = con.sql("SELECT count(*) FROM (SELECT * FROM ta EXCEPT SELECT * FROM tb)").fetchall()[0][0]
    out["changed"] = int(changed)
    if left_out:
        out["columns_not_compared"] = left_out

    rows_a = {r["image_id"]: r for r in ta.to_pylist()}
    rows_b = {r["image_id"]: r for r in tb.to_pylist()}
    boxes, masks = Agreement(), Agreement()
    captions, phrases = CaptionPairs(), PhraseCounts()
    statuses: Counter = Counter()
    has = {"regions": False, "masks": False, "captions": False, "phrases": False}
    columns = ta.column_names
    for image_id in both:
        a, b = rows_a[image_id], rows_b[image_id]
        ra, rb = regions_of(a), regions_of(b)
        if ra is not None and rb is not None:
            has["regions"] = True
            box_a, lab_a = _present(ra[0], ra[1])
            box_b, lab_b = _present(rb[0], rb[1])
            boxes.add(_box_iou(box_a, box_b), lab_a, lab_b)
            mask_a = [m for m in ra[2] if m is not None]
            mask_b = [m for m in rb[2] if m is not None]
            if mask_a or mask_b:
                has["masks"] = True
                try:
                    masks.add(_mask_iou(mask_a, mask_b))
                except (rle.RLEError, ValueError):
                    masks.unreadable += 1
        cap_a, cap_b = captions_of(a), captions_of(b)
        if cap_a or cap_b:
            has["captions"] = True
            captions.add(cap_a, cap_b)
        pa_, pb_ = phrases_of(a), phrases_of(b)
        if pa_ is not None and pb_ is not None:
            has["phrases"] = True
            phrases.add(pa_, pb_)
        if _has_status(columns):
            sa, sb = status_of(a), status_of(b)
            if sa is not None or sb is not None:
                statuses[(sa or "none", sb or "none")] += 1
    labelled = "labels" in columns or "descriptions" in columns or "objects" in columns
    if has["regions"]:
        out["boxes"] = boxes.summary(labels=labelled)
    if has["masks"]:
        out["masks"] = masks.summary(labels=False)
    if has["captions"]:
        out["captions"] = captions.summary(encoder)
    if has["phrases"]:
        out["phrases"] = phrases.summary()
    if statuses:
        out["verification"] = [
            {"a": sa, "b": sb, "images": n} for (sa, sb), n in sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
    return out


# -- GCG of B against A ------------------------------------------------------------------------------------------


def gcg_b_against_a(side_a: RunSide, side_b: RunSide, images: set[str], encoder: Any, meteor: Any) -> dict[str, Any]:
    """GCG figures of B's ``grandf`` records with A's as pseudo ground truth, on the images both outputs have."""
    from grand_engine.quality.gcg import evaluate_gcg  # pulls in pycocotools and the caption scorers
    from grand_engine.quality.gcg_inputs import (
        GCGInputError,
        ground_truth_from_images,
        match_to_ground_truth,
        read_grandf_run,
    )

    if "grandf" not in side_a.stages or "grandf" not in side_b.stages:
        missing = [s.store.uri for s in (side_a, side_b) if "grandf" not in s.stages]
        return {"skipped": f"no completed grandf unit in {', '.join(missing)} (run level 4 and the grandf stage)"}
    try:
        records_a, skipped_a = read_grandf_run(side_a.store.uri)
        records_b, skipped_b = read_grandf_run(side_b.store.uri)
    except GCGInputError as exc:
        return {"skipped": str(exc)}
    gt_images: dict[Hashable, Any] = {r.image_id: r for r in records_a if r.image_id in images}
    if not gt_images:
        return {"skipped": "A has no usable grandf record (skip_reason null) on the images both outputs have"}
    gt = ground_truth_from_images(gt_images, f"{side_a.store.uri} (grandf, pseudo ground truth)")
    preds, _ = match_to_ground_truth([r for r in records_b if r.image_id in images], gt, side_b.store.uri)
    result = evaluate_gcg(gt.images, preds, gt.coco, encoder=encoder, meteor=meteor)
    missing = [k for k in gt.images if k not in preds]
    out = result.as_dict()
    out["ground_truth_images"] = len(gt.images)
    out["predictions_missing"] = [str(k) for k in missing]
    out["records_b_without_ground_truth"] = sum(1 for r in records_b if r.image_id in images) - len(preds)
    out["skipped_rows"] = {"a": skipped_a, "b": skipped_b}
    if missing:
        out["notes"].insert(
            0, f"{len(missing)} images with a record in A have none in B and are scored as empty predictions"
        )
    return out


# -- the whole comparison ----------------------------------------------------------------------------------------


def compare_runs(
    a: str | OutputStore,
    b: str | OutputStore,
    encoder: Any = None,
    meteor: Any = True,
    gcg: bool = True,
    stages: list[str] | None = None,
) -> dict[str, Any]:
    """Compare two outputs (see the module docstring); a JSON-ready dict.

    ``encoder``: a loaded :class:`~grand_engine.quality.text_similarity.TextEncoder` for caption similarity and
    GCG recall (None: caption similarity is left out unless captions are identical, and GCG loads the default);
    ``meteor``: passed to :func:`~grand_engine.quality.gcg.evaluate_gcg`; ``gcg``: compute the GCG figures;
    ``stages``: compare only these stages (default: every stage done in both).
    """
    side_a, side_b = RunSide.open(a), RunSide.open(b)
    ids_a, ids_b = side_a.image_ids(), side_b.image_ids()
    both = ids_a & ids_b
    only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
    common = side_a.stages & side_b.stages
    if stages is not None:
        unknown = sorted(set(stages) - common)
        if unknown:
            raise CompareError(
                f"stages {unknown} are not done in both outputs (done in both: {sorted(common) or 'none'})"
            )
        common = set(stages)
    result: dict[str, Any] = {
        "format": COMPARE_FORMAT,
        "a": side_a.store.uri,
        "b": side_b.store.uri,
        "config_differences": config_differences(side_a.config, side_b.config),
        "images": {
            "both": len(both),
            "only_a": len(only_a),
            "only_b": len(only_b),
            "only_a_ids": only_a,
            "only_b_ids": only_b,
        },
        "stages_only_a": sorted(side_a.stages - side_b.stages),
        "stages_only_b": sorted(side_b.stages - side_a.stages),
        "stages": [],
        "text_model": getattr(encoder, "description", None),
    }
    for stage in stage_order(side_a.config or side_b.config, common):
        result["stages"].append(compare_stage(stage, side_a.table(stage), side_b.table(stage), both, encoder))
    if gcg:
        result["gcg"] = gcg_b_against_a(side_a, side_b, both, encoder, meteor)
    return result
