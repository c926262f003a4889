"""Read path: images/s of the SA-1B reader against a bare ``tarfile`` + Pillow + pycocotools loop, same shard.

A synthetic SA-1B shard is written first (``--images`` pairs of SA-1B size: 1500×2250 JPEGs of ~0.6 MB and
``--masks`` polygon masks per image as compressed RLE, ~0.4 MB of JSON). Then, interleaved and repeated:

* **bare** — ``tarfile`` streaming (``r|``), pairing ``.jpg``/``.json`` by stem, Pillow decode to an RGB array,
  ``json.loads``, ``pycocotools.mask.decode`` of every mask. No checks of any kind.
* **engine reader** — what the engine does for the same work: :func:`index_shard` (header scan, pairing,
  every bad-member check), :class:`LocatorReader` reads, :func:`decode_image` (header probe, bomb guard, EXIF
  orientation), :func:`parse_annotations` (the ``sa1b`` stage's full validation of every field and RLE) and
  :func:`grand_engine.io.rle.decode` of every mask.
* **engine stages** — the real ``images`` and ``sa1b`` stages through the runner (``UnitRunner``: Parquet
  tables written atomically, schema checks), then a consumer stage that takes each image's pixels from the
  runner and decodes every mask of its ``sa1b`` row: the path to a model's input in a run. The ``images``
  stage decodes every image once to reject corrupt data early, so this path decodes each JPEG twice.

Prints images/s of each, the ratios to bare (target ≥ 0.9×) and a per-image breakdown of the three parts; then
the time three pixel stages run by one runner take per image with the runner's decoded-image cache and without.

    .venv/bin/python benchmarks/bench_read.py [--images 8] [--masks 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from common import SA1B_HEIGHT, SA1B_WIDTH, header, interleaved, write_sa1b_shard
from PIL import Image
from pycocotools import mask as mask_api

from grand_engine.io import rle
from grand_engine.io.images import decode_image
from grand_engine.io.sa1b import LocatorReader, index_shard
from grand_engine.io.store import OutputStore
from grand_engine.runtime.executor import UnitRunner, pixel_cache_budget
from grand_engine.runtime.plan import make_units
from grand_engine.runtime.stage import Stage, UnitInput
from grand_engine.schema import table_schema
from grand_engine.stages.images import ImagesStage
from grand_engine.stages.sa1b import SA1BStage, parse_annotations


def bare(shard: Path) -> int:
    """tarfile streaming + Pillow + json + pycocotools; returns the number of images read."""
    pending: dict[str, dict[str, bytes]] = {}
    done = 0
    with tarfile.open(shard, "r|") as tar:
        for member in tar:
            stem, _, ext = member.name.rpartition(".")
            entry = pending.setdefault(stem, {})
            entry[ext] = tar.extractfile(member).read()
            if "jpg" in entry and "json" in entry:
                del pending[stem]
                pixels = np.asarray(Image.open(io.BytesIO(entry["jpg"])).convert("RGB"))
                doc = json.loads(entry["json"])
                segs = [
                    {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
                    for a in doc["annotations"]
                ]
                masks = mask_api.decode(segs)
                assert masks.shape[:2] == pixels.shape[:2]
                done += 1
    return done


def engine_reader(shard: Path) -> int:
    """The engine's reader API on the same work, with every check it makes."""
    index = index_shard(shard)
    done = 0
    with LocatorReader() as reader:
        for member in index.good:
            pixels = decode_image(reader.read(member.image))
            height, width = pixels.shape[:2]
            parsed = parse_annotations(reader.read(member.annotation), width, height, source=member.file_name)
            masks = rle.decode([a["segmentation"] for a in parsed["annotations"]])
            assert masks.shape[1:] == pixels.shape[:2]
            done += 1
    return done


@dataclass
class ConsumeStage(Stage):
    """What a model stage does before its model runs: pixels from the runner, every SA-1B mask decoded."""

    name = "bench_consume"
    requires = ("images", "sa1b")
    schema = table_schema(("pixels", pa.int64()), ("mask_pixels", pa.int64()))
    needs_pixels = True

    def process_image(self, unit: UnitInput, image_id: str) -> dict:
        pixels = unit.pixels(image_id)
        anns = unit.input_row("sa1b", image_id)["annotations"]
        masks = rle.decode([a["segmentation"] for a in anns])
        assert masks.shape[1:] == pixels.shape[:2]
        return {"image_id": image_id, "pixels": int(pixels.shape[0] * pixels.shape[1]), "mask_pixels": len(anns)}


@dataclass
class _PixelsOnly(Stage):
    """A model stage's input side only: the runner's pixels of every image (mean of one channel, to touch them)."""

    requires = ("images",)
    schema = table_schema(("mean", pa.float64()))
    needs_pixels = True

    def process_image(self, unit: UnitInput, image_id: str) -> dict:
        return {"image_id": image_id, "mean": float(unit.pixels(image_id)[::64, ::64, 0].mean())}


@dataclass
class PixelsA(_PixelsOnly):
    name = "bench_pixels_a"


@dataclass
class PixelsB(_PixelsOnly):
    name = "bench_pixels_b"


@dataclass
class PixelsC(_PixelsOnly):
    name = "bench_pixels_c"


def pixel_sharing(shard: Path, out: Path, repeat: int) -> tuple[float, float, int]:
    """Seconds per image of three pixel stages on one runner, with the decoded-image cache and without it."""
    (unit,) = make_units([index_shard(shard)], unit_size=10_000)

    def runner(budget: int) -> UnitRunner:
        stages = {"images": ImagesStage.configure()}
        for cls in (PixelsA, PixelsB, PixelsC):
            stages[cls.name] = cls.configure()
        r = UnitRunner(OutputStore(out), stages, dict.fromkeys(stages, "bench"), pixel_cache_bytes=budget)
        r.run("images", unit)
        return r

    def consume(budget: int) -> None:
        r = runner(budget)
        for name in ("bench_pixels_a", "bench_pixels_b", "bench_pixels_c"):
            if r.run(name, unit).status != "done":
                raise RuntimeError(f"{name} failed")

    timing = interleaved(
        {"cache": lambda: consume(pixel_cache_budget()), "no cache": lambda: consume(0)}, repeat=repeat, warmup=0
    )
    n = len(unit.members)
    return timing.median("cache") / n, timing.median("no cache") / n, pixel_cache_budget() >> 20


def engine_stages(shard: Path, out: Path) -> int:
    """``images`` → ``sa1b`` → consumer through the runner (tables written to ``out``)."""
    stages = {"images": ImagesStage.configure(), "sa1b": SA1BStage.configure(), "bench_consume": ConsumeStage()}
    stages["bench_consume"].models, stages["bench_consume"].resources = {}, ConsumeStage.default_resources
    runner = UnitRunner(OutputStore(out), stages, dict.fromkeys(stages, "bench"))
    (unit,) = make_units([index_shard(shard)], unit_size=10_000)
    for name in stages:
        record = runner.run(name, unit)
        if record.status != "done" or record.errors:
            raise RuntimeError(f"{name}: {record.status} {record.message} ({record.errors} error rows)")
    return record.rows


def breakdown(shard: Path, repeat: int) -> list[tuple[str, float, float]]:
    """(part, bare ms, engine ms) per image for the first image pair, best of ``repeat``."""
    with tarfile.open(shard) as tar:
        jpg_member, json_member = tar.getmembers()[:2]
        jpg, raw = tar.extractfile(jpg_member).read(), tar.extractfile(json_member).read()
    doc = json.loads(raw)
    segs = [a["segmentation"] for a in doc["annotations"]]
    coco = [{"size": s["size"], "counts": s["counts"].encode()} for s in segs]

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times) * 1e3

    return [
        (
            "JPEG decode",
            best(lambda: np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))),
            best(lambda: decode_image(jpg)),
        ),
        (
            "JSON parse (+ engine validation)",
            best(lambda: json.loads(raw)),
            best(lambda: parse_annotations(raw, SA1B_WIDTH, SA1B_HEIGHT)),
        ),
        ("decode every mask", best(lambda: mask_api.decode(coco)), best(lambda: rle.decode(segs))),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--masks", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    header("bench_read")
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        shard = write_sa1b_shard(root / "sa_000000.tar", args.images, masks=args.masks)
        size_mb = shard.stat().st_size / 1e6
        print(
            f"shard: {args.images} images of {SA1B_WIDTH}x{SA1B_HEIGHT}, {args.masks} masks each, "
            f"{size_mb / args.images:.2f} MB per pair (built in {time.perf_counter() - start:.1f} s)"
        )
        counts = {"bare": bare(shard), "engine reader": engine_reader(shard), "engine stages": 0}
        counts["engine stages"] = engine_stages(shard, root / "out-check")
        if len(set(counts.values())) != 1 or counts["bare"] != args.images:
            print(f"variants read different numbers of images: {counts}")
            return 1
        timing = interleaved(
            {
                "bare": lambda: bare(shard),
                "engine reader": lambda: engine_reader(shard),
                "engine stages": lambda: engine_stages(shard, root / "out"),
            },
            repeat=args.repeat,
            warmup=0,
        )
        print(f"interleaved, {args.repeat} repetitions, medians (images/s; ratio = engine speed / bare speed)")
        print(f"{'variant':<15} {'images/s':>9} {'s/image':>8} {'ratio':>6}  target >= 0.9x")
        for name in timing.times:
            rate = args.images / timing.median(name)
            ratio = timing.ratio("bare", name)
            verdict = "" if name == "bare" else ("OK" if ratio >= 0.9 else "BELOW TARGET")
            print(f"{name:<15} {rate:>9.2f} {timing.median(name) / args.images:>8.3f} {ratio:>6.2f}  {verdict}")
        print("per image, best of 3 (ms):")
        print(f"  {'part':<34} {'bare':>8} {'engine':>8}")
        for part, b, e in breakdown(shard, 3):
            print(f"  {part:<34} {b:>8.1f} {e:>8.1f}")
        cached, plain, budget = pixel_sharing(shard, root / "out-pixels", args.repeat)
        print(
            f"three pixel stages in one process (inline / fused Ray segment), ms per image of the three: "
            f"{cached * 1e3:.1f} with the decoded-image cache ({budget} MiB), {plain * 1e3:.1f} without "
            f"(x{plain / cached:.2f})"
        )
        spread = {n: f"{min(t):.2f}-{max(t):.2f}" for n, t in timing.times.items()}
        print(
            f"spread of the repetitions (s): {spread}; stdev of bare {statistics.pstdev(timing.times['bare']):.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
