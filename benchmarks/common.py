"""Helpers shared by the benchmarks: interleaved, repeated timing; child processes and the command line;
SA-1B-like synthetic shards and masks.

The machines these benchmarks run on are shared and noisy, so every comparison is measured as a ratio in one
process: the variants run interleaved (A, B, A, B, …) for several repetitions and the medians are compared
(:func:`interleaved`). Absolute figures are printed too, but only the ratios are meant to travel between machines.

A benchmark runs as a script (``python benchmarks/bench_x.py``), so this folder is first on ``sys.path`` and
``from common import …`` works; importing this module also puts the repository root on ``sys.path``, so the
benchmarks can import the tests' data builders (``tests.*``) next to ``grand_engine``.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_api

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))  # after this folder: the benchmarks import ``tests.*`` builders

SA1B_WIDTH, SA1B_HEIGHT = 1500, 2250
"""SA-1B's typical image size (W×H; the released images have a short side of 1500 px)."""

SHARD_MTIME = 1_680_307_200
"""Modification time of the members of the synthetic shards (fixed, so a shard's bytes depend on its content)."""


# -- timing --------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Per-variant wall times of an interleaved measurement (seconds, one entry per repetition)."""

    times: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def ratio(self, num: str, den: str) -> float:
        """Median over repetitions of ``time[num] / time[den]`` (each pair measured back to back)."""
        return statistics.median(a / b for a, b in zip(self.times[num], self.times[den], strict=True))


def interleaved(variants: dict[str, Callable[[], Any]], repeat: int = 5, warmup: int = 1) -> Timing:
    """Run every variant once per repetition, in turn (A, B, A, B, …), after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeat):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))  # alternate who goes first
        for name in names:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return Timing(times)


def machine() -> str:
    """A one-line description of this machine (CPU model, cores, memory, Python)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages * size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}"


def commit() -> str:
    """The checked-out commit (short), with ``+dirty`` when the tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(title: str) -> None:
    """Print a benchmark's title line with the date, commit and machine."""
    print(f"{title} — {time.strftime('%Y-%m-%d')}, commit {commit()}, {machine()}")


# -- child processes and the command line ---------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository on ``PYTHONPATH`` (and ``extra`` set), for a child process."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def cli_command(*args: str) -> list[str]:
    """``grand-engine ARGS`` run by this interpreter (``python -m grand_engine.cli``)."""
    return [sys.executable, "-m", "grand_engine.cli", *args]


def tiny_run_command(shards: Path, out: Path, tiny_dir: str | Path, *extra: str) -> list[str]:
    """``grand-engine run`` of levels 1–4 of the tiny manifest, its LLM slots on the tiny random Llama."""
    return cli_command(
        "run", "--shards", str(shards), "--out", str(out), "--levels", "1-4", "--manifest", "tiny",
        "--var", f"llm_dir={tiny_dir}/llama", "--no-progress", *extra,
    )  # fmt: skip


def build_tiny_checkpoints(dest: str | Path, env: dict[str, str], cwd: Path | None = None) -> float:
    """Build the tiny random checkpoints into ``dest`` (``grand-engine models tiny``); return the seconds taken."""
    start = time.perf_counter()
    subprocess.run(cli_command("models", "tiny", str(dest)), env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def last_json_line(cmd: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """Run ``cmd``; return the JSON object on the last line of its stdout (``RuntimeError`` if it failed)."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- synthetic SA-1B shards ---------------------------------------------------------------------------------


def add_member(tar: tarfile.TarFile, name: str, data: bytes, mtime: int = 0) -> None:
    """Add a file ``name`` holding ``data`` to an open tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(data))


def box_rle_counts(height: int, width: int, x1: int, y1: int, w: int, h: int) -> list[int]:
    """Canonical uncompressed column-major COCO run lengths of the box ``[x1, x1+w) × [y1, y1+h)``."""
    if h == height:  # full-height columns: one run of ones
        counts = [x1 * height, w * height]
    else:
        counts = [x1 * height + y1]
        for _ in range(w - 1):
            counts += [h, height - h]
        counts.append(h)
    tail = height * width - sum(counts)
    return counts + [tail] if tail else counts


def photo(index: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photograph-like ``height×width`` RGB image: a scikit-image photo resized, with sensor-like noise.

    Resizing alone leaves the picture too smooth (JPEGs far smaller and faster to decode than SA-1B's);
    the noise brings a quality-85 JPEG to SA-1B's size class (~0.5–1 MB at 1500×2250).
    """
    from skimage import data  # deferred: scikit-image loads its sample photos' registry

    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
    base = getattr(data, names[index % len(names)])()
    img = np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    rng = np.random.default_rng(seed * 100_003 + index)
    noise = rng.normal(0.0, 6.0, size=(height // 2, width // 2, 1)).astype(np.int16)
    noise = np.repeat(np.repeat(noise, 2, axis=0), 2, axis=1)[:height, :width]
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def polygon_annotations(n: int, width: int, height: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``n`` SA-1B annotation dicts whose masks are random star-shaped polygons (compressed COCO RLE).

    Sizes follow SA-1B's spread (many small masks, some large ones); ragged outlines give count strings of
    a few hundred bytes to a few KB, like SAM masks.
    """
    out = []
    for k in range(n):
        scale = float(np.exp(rng.uniform(np.log(0.02), np.log(0.45)))) * min(width, height)
        cx, cy = rng.uniform(scale, width - scale), rng.uniform(scale, height - scale)
        vertices = int(rng.integers(24, 96))
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = scale * rng.uniform(0.45, 1.0, vertices)
        poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        poly[:, 0] = np.clip(poly[:, 0], 0, width - 1)
        poly[:, 1] = np.clip(poly[:, 1], 0, height - 1)
        rle = mask_api.merge(mask_api.frPyObjects([poly.ravel().tolist()], height, width))
        x, y, w, h = (float(v) for v in mask_api.toBbox(rle))
        out.append(
            {
                "id": 1_000_000 + k,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                "bbox": [x, y, w, h],
                "area": int(mask_api.area(rle)),
                "predicted_iou": round(float(rng.uniform(0.85, 1.0)), 6),
                "stability_score": round(float(rng.uniform(0.9, 1.0)), 6),
                "point_coords": [[float(cx), float(cy)]],
                "crop_box": [0.0, 0.0, float(width), float(height)],
            }
        )
    return out


def write_sa1b_shard(
    path: Path,
    images: int,
    *,
    width: int = SA1B_WIDTH,
    height: int = SA1B_HEIGHT,
    masks: int = 100,
    first_id: int = 1,
    seed: int = 0,
) -> Path:
    """Write an SA-1B-format tar (``sa_<n>.jpg`` + ``sa_<n>.json`` pairs) of synthetic images and masks."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(images):
            num = first_id + i
            jpg = jpeg_bytes(photo(i, width, height, seed))
            doc = {
                "image": {"image_id": num, "width": width, "height": height, "file_name": f"sa_{num}.jpg"},
                "annotations": polygon_annotations(masks, width, height, rng),
            }
            add_member(tar, f"sa_{num}.jpg", jpg, SHARD_MTIME)
            add_member(tar, f"sa_{num}.json", json.dumps(doc).encode(), SHARD_MTIME)
    return path


def write_demo_photo_shard(path: Path, images: int) -> Path:
    """An SA-1B-format tar of ``images`` good pairs built from the demo photographs (long side ≤ 640 px).

    Image *k* is demo photo ``k mod 5``, mirrored and/or cropped by ``k div 5`` so that no two images are equal;
    its masks are the demo's classical segmentation regions (:func:`grand_engine.demo.demo_annotation`).
    """
    # deferred: the demo module imports the runtime (half a second), which the lighter benchmarks do not need
    from grand_engine.demo import DEMO_IMAGES, _downscale, _jpeg, demo_annotation
    from grand_engine.io.images import decode_image

    bases = [_downscale(load()) for _, load in DEMO_IMAGES]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for k in range(images):
            arr = bases[k % len(bases)]
            variant = k // len(bases)
            if variant % 2:
                arr = arr[:, ::-1]
            if variant >= 2:
                cut = 8 * (variant // 2)
                arr = arr[cut:, cut:]
            num = k + 1
            jpeg = _jpeg(np.ascontiguousarray(arr))
            doc = demo_annotation(num, decode_image(jpeg), f"sa_{num}.jpg")
            add_member(tar, f"sa_{num}.jpg", jpeg, SHARD_MTIME)
            add_member(tar, f"sa_{num}.json", json.dumps(doc).encode(), SHARD_MTIME)
    return path


# -- running a pipeline's stages in this process --------------------------------------------------------------------


def run_in_process(pipeline: Any, unit: Any, hooks: Any = None) -> dict[str, dict[str, float]]:
    """Run ``pipeline``'s stages on ``unit`` in this process, in topological order, tables kept in memory.

    This is the compute a hand-written script pays: each stage's ``setup()`` and ``process()`` are timed
    separately; every image is decoded once, right after the root stage, and shared by every pixel stage (the
    decode is reported under ``"decode_once"``). Inputs are restricted and aligned exactly as the runner does
    and each result is cast to the stage's schema with its error images dropped (neither is timed). ``hooks``
    may define ``before(name, stage)``, ``after_setup(name, stage)`` and ``after(name, stage, info)``.
    Returns per stage ``{"setup", "process", "images"}`` seconds and counts, plus ``"decode_once"``.
    """
    # deferred: the runtime is half a second of imports, which the lighter benchmarks do not need
    import pyarrow as pa
    import pyarrow.compute as pc

    from grand_engine.runtime.executor import align, load_annotation, load_pixels
    from grand_engine.runtime.pipeline import ROOT_STAGE
    from grand_engine.runtime.stage import UnitInput

    tables: dict[str, pa.Table] = {}
    decoded: dict[tuple[str, int], np.ndarray] = {}
    out: dict[str, dict[str, float]] = {}
    for name in pipeline.order:
        stage = pipeline.stages[name]
        if hooks is not None and hasattr(hooks, "before"):
            hooks.before(name, stage)
        start = time.perf_counter()
        stage.setup()
        setup = time.perf_counter() - start
        if hooks is not None and hasattr(hooks, "after_setup"):
            hooks.after_setup(name, stage)
        if name == ROOT_STAGE:
            unit_input = UnitInput(unit.unit_id, stage.schema.empty_table(), members=unit.members)
        else:
            images = tables[ROOT_STAGE]
            inputs = {req: tables[req] for req in stage.inputs() if req != ROOT_STAGE}
            keep = images.column("image_id")
            for tbl in inputs.values():
                keep = pc.filter(keep, pc.is_in(keep, value_set=tbl.column("image_id")))
            ids = keep.to_pylist()
            unit_input = UnitInput(
                unit.unit_id,
                align(images, ids),
                {req: align(tbl, ids) for req, tbl in inputs.items()},
                pixel_loader=(lambda row: decoded[(row["source"], row["offset"])]) if stage.needs_pixels else None,
                annotation_loader=load_annotation if stage.needs_annotations else None,
            )
        start = time.perf_counter()
        result = stage.process(unit_input)
        seconds = time.perf_counter() - start
        table = result.table.select(stage.schema.names).cast(stage.schema)
        bad = sorted({e.image_id for e in result.errors})
        if bad:
            table = table.filter(pc.invert(pc.is_in(table.column("image_id"), value_set=pa.array(bad))))
        tables[name] = table
        n_images = len(unit.members) if name == ROOT_STAGE else len(unit_input.image_ids)
        out[name] = {"setup": setup, "process": seconds, "images": n_images, "rows": table.num_rows}
        if hooks is not None and hasattr(hooks, "after"):
            hooks.after(name, stage, out[name])
        if name == ROOT_STAGE:
            start = time.perf_counter()
            for row in table.to_pylist():
                decoded[(row["source"], row["offset"])] = load_pixels(row)
            out["decode_once"] = {"setup": 0.0, "process": time.perf_counter() - start, "images": table.num_rows}
    return out
