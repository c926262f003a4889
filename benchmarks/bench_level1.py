"""The ``level1`` merge against the reference's own algorithm: time per image and agreement, 12 to 2,000 boxes.

Each synthetic image has ``n`` detector boxes spread over the six default slots: jittered copies of ``n / 4``
underlying objects (so self-NMS, voting and floating objects all happen) with raw-vocabulary labels. Box corners
are multiples of 0.25 px and scores have two decimals, as the reference stores them: those values are exact in
float32 as in float64, so both codes below see the very same numbers.

* **ours** — the whole ``Level1.process`` call per image on a unit of ``--images`` images, the way the runner
  makes it (inside ``new_objects_gc``), with ``iou_convention: pixel`` as the reference votes: reading the
  Arrow inputs, label normalisation, self-NMS, score filters, voting, affordances, the invariant checks and
  building the output table. ``no checks`` is the same without the invariant checks.
* **reference** — :func:`reference_merge`, a pure-Python rendering of the reference's steps 10a-10b as
  ``docs/reference.md`` describes them (written for this benchmark from that description): per-model self-NMS
  with continuous IoU, the strict score filters, voting with pixel-inclusive IoU ≥ 0.65 and Dice ≥ 0.75 in the
  model priority order, the person rules, ids, affordances and the gender normalisation. It is fed Python lists
  of dicts, as the reference's JSON files give it; reading and writing those files is not timed, while ours
  includes its Arrow input and output. Its per-model IoU loops are quadratic, so it is timed (and the agreement
  checked) on fewer images at the large sizes (``--reference-budget``).

**Agreement.** Every image is merged by both codes and the results compared: objects, floating objects and
floating attributes in order, each with its box, score, labels (normalised the project's way) and attributes.
Labels compare as sets, since the reference keeps them in sets. The project normalises labels and matches
affordances on normalised names, so affordances are not compared. Three columns: ``pixel=ref`` is the project
with ``iou_convention: pixel`` against the reference; ``cont.=ref`` the project with its default continuous IoU
against the reference (the deliberate difference); ``cont.=ref cont.`` the same against the reference with its
voting switched to continuous IoU too, which shows the convention is the only difference.

Times are CPU seconds of this process (``time.process_time``), not wall time: the machines these run on are
shared, and the time a process waits for a core says nothing about either code. Both codes are single-threaded
here, so on an idle machine the two agree.

Targets: ours no slower than the reference at every size; growth from 100 to 2,000 boxes no worse than linear
× 1.3.

    .venv/bin/python benchmarks/bench_level1.py [--sizes 12 30 72 100 500 2000] [--images 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import pyarrow as pa
from common import header

from grand_engine.labels import gender_normalise, normalise_label
from grand_engine.resources import data_file
from grand_engine.runtime.executor import new_objects_gc
from grand_engine.runtime.stage import UnitInput
from grand_engine.schema import DETECTIONS_FIELDS, IMAGES_SCHEMA, table_schema
from grand_engine.stages.level1 import DEFAULT_SOURCES, Level1

WIDTH, HEIGHT = 1500, 1000
RAW_LABELS = ["dog", "person", "wine_glass", "sandal_(type_of_shoe)", "traffic_light", "cup", "man", "baseball_bat"]
DETECTIONS = table_schema(*DETECTIONS_FIELDS)
SAM = table_schema(*DETECTIONS_FIELDS, ("annotation_ids", pa.list_(pa.int64())))
CAPTIONS = table_schema(
    ("boxes", DETECTIONS_FIELDS[0][1]), ("scores", pa.list_(pa.float32())), ("descriptions", pa.list_(pa.string()))
)


# -- synthetic detections -------------------------------------------------------------------------------------


def synthetic_image(n: int, rng: np.random.Generator) -> dict[str, dict]:
    """One image's rows for every slot, ``n`` boxes in total (corners on a 0.25 px grid, 2-decimal scores)."""
    n_objects = max(1, n // 4)
    wh = rng.uniform(20, 200, size=(n_objects, 2))
    xy = rng.uniform(0, 1, size=(n_objects, 2)) * (np.array([WIDTH, HEIGHT]) - wh)
    truth = np.concatenate([xy, xy + wh], axis=1)
    truth_label = rng.integers(len(RAW_LABELS), size=n_objects)
    slot_of = rng.integers(len(DEFAULT_SOURCES), size=n)
    rows = {}
    for s, slot in enumerate(DEFAULT_SOURCES):
        k = int((slot_of == s).sum())
        pick = rng.integers(n_objects, size=k)
        jitter = rng.normal(0, 0.08, size=(k, 4)) * np.repeat(wh[pick], 2, axis=1)
        boxes = np.clip(np.round((truth[pick] + jitter) * 4) / 4, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = np.round(rng.uniform(0.05, 1.0, size=k), 2)
        row = {"boxes": boxes.tolist(), "scores": scores.tolist()}
        if slot == "region_captions":
            row["descriptions"] = [f"a photo of {RAW_LABELS[truth_label[p]].split('_')[0]}" for p in pick]
        else:
            row["labels"] = [RAW_LABELS[truth_label[p]] for p in pick]
        if slot == "sam_classify":
            row["annotation_ids"] = list(range(k))
        rows[slot] = row
    return rows


def build_images(n: int, images: int, seed: int = 0) -> list[tuple[str, dict[str, dict]]]:
    rng = np.random.default_rng(seed)
    return [(f"img{i:04d}", synthetic_image(n, rng)) for i in range(images)]


def unit_of(per_image: list[tuple[str, dict[str, dict]]]) -> UnitInput:
    """The ``level1`` unit of these images (Arrow tables, as the runner hands them over)."""
    per_slot: dict[str, list[dict]] = {slot: [] for slot in DEFAULT_SOURCES}
    for image_id, rows in per_image:
        for slot, row in rows.items():
            per_slot[slot].append({"image_id": image_id, **row})
    schemas = {"region_captions": CAPTIONS, "sam_classify": SAM}
    inputs = {
        slot: pa.Table.from_pylist(rows, schema=schemas.get(slot, DETECTIONS)) for slot, rows in per_slot.items()
    }
    image_rows = [
        {"image_id": i, "file_name": f"{i}.jpg", "width": WIDTH, "height": HEIGHT, "format": "JPEG", "orientation": 1}
        for i, _ in per_image
    ]
    return UnitInput("bench/00000", pa.Table.from_pylist(image_rows, schema=IMAGES_SCHEMA), inputs)


def build_unit(n: int, images: int, seed: int = 0) -> UnitInput:
    """A unit of ``images`` synthetic images of ``n`` boxes each (also used by ``bench_scaling.py``)."""
    return unit_of(build_images(n, images, seed))


# -- the reference's merge, in plain Python -------------------------------------------------------------------

SLOT_TO_MODEL = {
    "detect_lvis": "eva-02-01",
    "detect_closed": "co_detr",
    "sam_classify": "ov_sam",
    "detect_ov": "owl_vit",
    "detect_ov2": "pomp",
    "region_captions": "grit",
}
REF_PRIORITY = ("eva-02-01", "co_detr", "eva-02-02", "ov_sam", "owl_vit", "pomp", "grit")
REF_THRESHOLDS = {"eva-02-01": 0.6, "eva-02-02": 0.6, "co_detr": 0.2, "ov_sam": 0.3, "owl_vit": 0.1, "pomp": 0.3}
REF_THRESHOLDS["grit"] = 0.3
REF_PERSON_MODELS = ("eva-02-01", "co_detr", "eva-02-02")  # person boxes: score filter 0.2, "single person" rule
REF_SINGLE_PERSON = {"eva-02-01": 0.75, "eva-02-02": 0.75, "co_detr": 0.5}
REF_GENDER = ("man", "woman", "men", "women")


def ref_continuous_iou(a: list[float], b: list[float]) -> float:
    """IoU without +1, denominator floored at 1e-5 (the reference's self-NMS)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-5)


def ref_pixel_iou(a: list[float], b: list[float]) -> float:
    """IoU with +1 on every width and height (the reference's voting and matching)."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = w * h
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / float(area_a + area_b - inter)


def ref_pixel_dice(a: list[float], b: list[float]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return 2.0 * w * h / float(area_a + area_b)


def ref_continuous_dice(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return 2.0 * w * h / max((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]), 1e-5)


def ref_self_nms(dets: list[dict], min_score: float = 0.1, iou_above: float = 0.9) -> list[dict]:
    """Step 10a: drop score < 0.1, then greedily keep the best box and drop the rest with IoU > 0.9 to it."""
    left = sorted((d for d in dets if d["score"] >= min_score), key=lambda d: d["score"], reverse=True)
    kept = []
    while left:
        best = left.pop(0)
        kept.append(best)
        left = [d for d in left if ref_continuous_iou(best["bbox"], d["bbox"]) <= iou_above]
    return kept


def ref_keep(model: str, det: dict) -> bool:
    """Step 10b.1: strict score filter; person boxes of the closed-set and LVIS models use 0.2."""
    if model in REF_PERSON_MODELS and det["label"] == "person":
        return det["score"] > 0.2
    return det["score"] > REF_THRESHOLDS[model]


def ref_affordance_index() -> dict[str, list[str]]:
    """Raw table label → affordance categories (the reference matched raw label strings)."""
    index: dict[str, list[str]] = {}
    for entry in json.loads(data_file("affordance_labels.json").read_text(encoding="utf-8")):
        for label in entry["labels"]:
            index.setdefault(label, []).append(entry["category"])
    return index


REF_AFFORDANCES = ref_affordance_index()


def reference_merge(models: dict[str, list[dict]], pixel: bool = True) -> dict[str, Any]:
    """Steps 10a-10b on one image's raw per-model detections (``{model: [{bbox, score, label}]}``).

    ``pixel=False`` switches the voting to continuous IoU and Dice (the project's other convention).
    """
    iou, dice = (ref_pixel_iou, ref_pixel_dice) if pixel else (ref_continuous_iou, ref_continuous_dice)
    data = {}
    for model in REF_PRIORITY:
        if model in models:
            data[model] = [d for d in ref_self_nms(models[model]) if ref_keep(model, d)]
    used: set[tuple[str, int]] = set()
    objects: list[dict] = []
    floating: list[dict] = []
    floating_attributes: list[dict] = []
    for rank, model in enumerate(REF_PRIORITY):
        for j, anchor in enumerate(data.get(model, ())):
            if (model, j) in used:
                continue
            used.add((model, j))
            entry = {"bbox": anchor["bbox"], "score": anchor["score"], "labels": set(), "attributes": set()}
            (entry["attributes"] if model == "grit" else entry["labels"]).add(anchor["label"])
            matched = False
            for other in REF_PRIORITY[rank + 1 :]:
                for k, det in enumerate(data.get(other, ())):
                    if (other, k) in used:
                        continue
                    if iou(anchor["bbox"], det["bbox"]) >= 0.65 and dice(anchor["bbox"], det["bbox"]) >= 0.75:
                        matched = True
                        (entry["attributes"] if other == "grit" else entry["labels"]).add(det["label"])
                        used.add((other, k))
            if matched:
                objects.append(entry)
            elif model == "grit":
                floating_attributes.append(entry)
            elif anchor["label"] == "person":
                if model in REF_PERSON_MODELS and anchor["score"] > REF_SINGLE_PERSON[model]:
                    objects.append(entry)
                elif model in REF_PERSON_MODELS and anchor["score"] > REF_THRESHOLDS[model]:
                    floating.append(entry)
            else:
                floating.append(entry)
            if not entry["attributes"]:
                entry["attributes"] = None
    for i, entry in enumerate(objects + floating):
        entry["id"] = i
    affordances: dict[str, dict] = {}
    for entry in objects + floating:
        for label in entry["labels"]:
            for category in REF_AFFORDANCES.get(label, ()):
                hit = affordances.setdefault(category, {"object_ids": [], "labels": []})
                hit["object_ids"].append(entry["id"])
                hit["labels"].append(label)
    for entry in objects:
        entry["labels"] = ["person" if label.lower() in REF_GENDER else label for label in entry["labels"]]
    return {"objects": objects, "floating_objects": floating, "floating_attributes": floating_attributes}


def reference_inputs(rows: dict[str, dict]) -> dict[str, list[dict]]:
    """One image's slot rows as the reference's per-model lists (GRiT's descriptions become its labels)."""
    models = {}
    for slot, row in rows.items():
        texts = row.get("descriptions") or row.get("labels") or []
        models[SLOT_TO_MODEL[slot]] = [
            {"bbox": list(b), "score": s, "label": t}
            for b, s, t in zip(row["boxes"], row["scores"], texts, strict=True)
        ]
    return models


# -- agreement ------------------------------------------------------------------------------------------------


def _canonical(entries: list[dict] | None, with_labels: bool = True) -> list[tuple]:
    out = []
    for e in entries or []:
        labels = frozenset(gender_normalise(normalise_label(x).name) for x in e.get("labels") or ())
        attributes = frozenset(" ".join(a.split()) for a in e.get("attributes") or ())
        out.append((tuple(e["bbox"]), round(float(e["score"]), 2), labels if with_labels else None, attributes))
    return out


def same_merge(ours: dict[str, Any], ref: dict[str, Any]) -> bool:
    """Objects, floating objects and floating attributes equal, in order (see the module docstring)."""
    return (
        _canonical(ours["objects"]) == _canonical(ref["objects"])
        and _canonical(ours["floating_objects"]) == _canonical(ref["floating_objects"])
        and _canonical(ours["floating_attributes"], False) == _canonical(ref["floating_attributes"], False)
    )


def agreement(per_image: list[tuple[str, dict[str, dict]]], convention: str, reference_pixel: bool) -> int:
    """How many images ours (with ``convention``) and the reference (voting with pixel-inclusive IoU, or with
    continuous IoU) merge identically."""
    stage = Level1.configure({"iou_convention": convention})
    stage.setup()
    result = stage.process(unit_of(per_image))
    if result.errors:
        raise RuntimeError(f"level1 reported errors: {result.errors[:3]}")
    ours = {r["image_id"]: r for r in result.table.to_pylist()}
    return sum(same_merge(ours[i], reference_merge(reference_inputs(rows), reference_pixel)) for i, rows in per_image)


# -- timing ---------------------------------------------------------------------------------------------------


def measure(per_image: list[tuple[str, dict[str, dict]]], ref_count: int, repeat: int) -> dict[str, list[float]]:
    """Seconds per image of ours (with and without the invariant checks) and of the reference, interleaved.

    Ours runs with ``iou_convention: pixel``, as the reference votes, each time on a freshly built unit (built
    outside the timed part) so that no per-unit work is carried over; the reference runs on the first
    ``ref_count`` images. Every repetition runs the three in turn, so a ratio compares neighbours in time.
    """
    stages = {}
    for name, params in (("ours", {}), ("no checks", {"check_invariants": False})):
        stage = Level1.configure({"iou_convention": "pixel", **params})
        stage.setup()
        stages[name] = stage
    units = {name: [unit_of(per_image) for _ in range(repeat + 1)] for name in stages}
    inputs = [reference_inputs(rows) for _, rows in per_image[:ref_count]]

    def ours(name: str) -> None:
        with new_objects_gc():  # as the runner calls a stage
            result = stages[name].process(units[name].pop())
        if result.errors:
            raise RuntimeError(f"level1 reported errors: {result.errors[:3]}")

    variants = {
        "ours": (lambda: ours("ours"), len(per_image)),
        "no checks": (lambda: ours("no checks"), len(per_image)),
        "reference": (lambda: [reference_merge(models) for models in inputs], ref_count),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeat + 1):  # the first round warms up
        for name, (fn, count) in variants.items() if r % 2 else reversed(variants.items()):
            start = time.process_time()
            fn()
            if r:
                times[name].append((time.process_time() - start) / count)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 30, 72, 100, 500, 2000])
    parser.add_argument("--images", type=int, default=128, help="images per unit (one full default unit)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-budget", type=float, default=4e5, help="boxes² per timed reference run")
    args = parser.parse_args()

    header("bench_level1")
    print(
        f"level1: {WIDTH}x{HEIGHT} images, {args.images} per unit, medians of {args.repeat} interleaved runs "
        "(CPU ms per image); ours/ref = median of the per-run ratios"
    )
    print(
        f"{'boxes':>6} {'per slot':>8} {'ours':>8} {'no checks':>9} {'reference':>9} {'ours/ref':>8} "
        f"{'ref imgs':>8} {'pixel=ref':>9} {'cont.=ref':>9} {'cont.=ref cont.':>15}"
    )
    results = {}
    slower: list[int] = []
    slower_merge: list[int] = []
    for n in args.sizes:
        per_image = build_images(n, args.images, seed=n)
        ref_count = max(2, min(len(per_image), int(args.reference_budget // (n * n))))
        times = measure(per_image, ref_count, args.repeat)
        ours, no_checks, ref = (statistics.median(times[k]) for k in ("ours", "no checks", "reference"))
        ratio = statistics.median(a / b for a, b in zip(times["ours"], times["reference"], strict=True))
        ratio_merge = statistics.median(a / b for a, b in zip(times["no checks"], times["reference"], strict=True))
        sample = per_image[:ref_count]
        agree = [agreement(sample, "pixel", True), agreement(sample, "continuous", True)]
        agree.append(agreement(sample, "continuous", False))
        results[n] = ours
        if ratio > 1.0:
            slower.append(n)
        if ratio_merge > 1.0:
            slower_merge.append(n)
        print(
            f"{n:>6} {n / len(DEFAULT_SOURCES):>8.1f} {ours * 1e3:>8.3f} {no_checks * 1e3:>9.3f} {ref * 1e3:>9.3f} "
            f"{ratio:>8.2f} {ref_count:>8} {agree[0]:>5}/{ref_count:<3} {agree[1]:>5}/{ref_count:<3} "
            f"{agree[2]:>11}/{ref_count:<3}"
        )
    print(f"no slower than the reference at every size: {'OK' if not slower else f'NO (at {slower})'}")
    print(
        "the same without the invariant checks (the shared validator, not part of the reference's work): "
        f"{'OK' if not slower_merge else f'NO (at {slower_merge})'}"
    )
    big = [n for n in results if n >= 100]
    if len(big) >= 2:
        lo, hi = min(big), max(big)
        growth = results[hi] / results[lo]
        bound = (hi / lo) * 1.3
        verdict = "OK" if growth <= bound else "ABOVE TARGET"
        print(f"growth {lo} -> {hi} boxes: x{growth:.1f} (target <= linear x1.3 = x{bound:.1f}): {verdict}")


if __name__ == "__main__":
    main()
