"""Per-stage and end-to-end throughput, GPU memory and SM utilisation, and a co-residency plan for one GPU card.

Runs a manifest's stages in this process, one after the other on the same images with the manifest's batch
sizes (the engine's stage code, without the runner), and measures for each stage:

* images/s of ``process()`` (``setup()`` timed apart; the first batch includes CUDA kernel selection, so give a
  few hundred images for it to amortise);
* GPU memory: allocated after ``setup()`` (the weights) and the peak during ``process()`` (``torch.cuda``);
* SM utilisation: mean and max of ``nvidia-smi`` (or NVML) samples every 100 ms while the stage runs.

Then it prints the end-to-end images/s (every stage in turn on one device) and a co-residency plan for one card
of ``--card-gb`` (80 GB): each GPU stage's share of the GPU time per image as its Ray ``num_gpus`` fraction,
whether the stages' peak memories fit together, and the images/s of one card running them all.

On a machine without CUDA it runs on CPU — with the tiny manifest, on demo-photo images — so that it keeps
working in CI-like settings; every figure is then labelled as a CPU figure and the plan is only a worked example.

``--dummy`` measures without checkpoints (:mod:`grand_engine.cost.measure`): every model role is built at full size
from its shipped configuration with random weights and runs the calls the cost model counts for each image (its
input sizes, crops, queries, prompt and output tokens, batches); it prints per role and per stage images/s, weight
and peak GPU memory, and the measured time over the cost model's floor on this GPU. Every figure is labelled
"dummy weights: throughput only". Without CUDA it measures the tiny manifest's configurations on CPU. With
``--plan`` (a ``grand-engine models cost --json`` file) it needs only torch, transformers and timm: no manifest
parsing, no Ray, no vLLM (vLLM serves the roles a plan gives it, with ``load_format="dummy"``, when installed).

    # a GPU machine with the real checkpoints, 256 SA-1B images
    python benchmarks/gpu_throughput.py --manifest grand --shards /data/sa1b/sa_000000.tar --max-images 256
    # anywhere (CPU, tiny random checkpoints built into a temporary folder)
    python benchmarks/gpu_throughput.py --manifest tiny --images 8
    # full-size models, random weights, no checkpoints (a GPU machine; CPU measures the tiny configurations)
    python benchmarks/gpu_throughput.py --dummy --manifest grand --images 32 --stages depth,masks --json out.json
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))  # a GPU machine runs this from a checkout without installing the package


class UtilSampler:
    """Samples GPU SM utilisation (%) in a background thread: NVML when importable, else ``nvidia-smi``."""

    def __init__(self, device: int = 0, period_s: float = 0.1) -> None:
        self.device, self.period = device, period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._nvml_reader() or self._smi_reader()

    def _nvml_reader(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - NVML missing or unusable: fall back to nvidia-smi
            return None

    def _smi_reader(self):
        if shutil.which("nvidia-smi") is None:
            return None
        cmd = ["nvidia-smi", f"--id={self.device}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

        def read() -> float | None:
            try:
                return float(subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip())
            except (ValueError, OSError, subprocess.SubprocessError):
                return None

        return read

    @property
    def available(self) -> bool:
        return self._read is not None

    def start(self) -> None:
        self.samples = []
        if not self.available:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.period)

    def stop(self) -> tuple[float | None, float | None]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if not self.samples:
            return None, None
        return statistics.fmean(self.samples), max(self.samples)


class GpuHooks:
    """Per-stage GPU memory and utilisation around ``run_in_process``; frees each stage's models after it."""

    def __init__(self, cuda: bool, sampler: UtilSampler | None) -> None:
        self.cuda, self.sampler = cuda, sampler
        self.stats: dict[str, dict[str, Any]] = {}

    def before(self, name: str, stage: Any) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()

    def after_setup(self, name: str, stage: Any) -> None:
        entry = self.stats.setdefault(name, {})
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            entry["weights_gb"] = (torch.cuda.memory_allocated() - self.base) / 1e9
            torch.cuda.reset_peak_memory_stats()
        if self.sampler is not None:
            self.sampler.start()

    def after(self, name: str, stage: Any, info: dict[str, float]) -> None:
        entry = self.stats.setdefault(name, {})
        if self.sampler is not None:
            entry["sm_mean"], entry["sm_max"] = self.sampler.stop()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            entry["peak_gb"] = (torch.cuda.max_memory_allocated() - self.base) / 1e9
        release(stage)
        if self.cuda:
            import torch

            torch.cuda.empty_cache()


def release(stage: Any) -> None:
    """Drop what ``setup()`` attached to a stage (its models), keeping its parameters and configuration."""
    import dataclasses

    keep = {f.name for f in dataclasses.fields(stage)} | {"models", "resources"}
    for key in [k for k in vars(stage) if k not in keep]:
        delattr(stage, key)
    gc.collect()


def plan_card(rows: list[dict[str, Any]], card_gb: float) -> list[str]:
    """A co-residency plan for one card: ``num_gpus`` ∝ GPU seconds per image, memory check, images/s."""
    gpu_rows = [r for r in rows if r["gpu"]]
    lines = []
    if not gpu_rows:
        return ["no stage asks for a GPU in this manifest: nothing to place on a card"]
    busy = sum(r["s_per_image"] for r in gpu_rows)
    mem = sum(r.get("peak_gb") or 0.0 for r in gpu_rows)
    lines.append(f"{'stage':<20} {'s/image':>8} {'share':>6} {'num_gpus':>9} {'peak GB':>8}")
    for r in sorted(gpu_rows, key=lambda r: -r["s_per_image"]):
        share = r["s_per_image"] / busy if busy else 0.0
        fraction = max(0.05, math.ceil(share * 20) / 20)  # in steps of 0.05, at least 0.05
        peak = f"{r['peak_gb']:.1f}" if r.get("peak_gb") is not None else "-"
        lines.append(f"{r['name']:<20} {r['s_per_image']:>8.3f} {share:>6.1%} {fraction:>9.2f} {peak:>8}")
    measured = any(r.get("peak_gb") is not None for r in gpu_rows)
    cards = max(1, math.ceil(mem / (0.9 * card_gb))) if mem else 1
    if not measured:
        fit = "memory not measured (no CUDA device)"
    elif cards == 1:
        fit = f"peak memories add up to {mem:.1f} GB of {card_gb:.0f} GB: they fit together on one card"
    else:
        fit = (
            f"peak memories add up to {mem:.1f} GB: split them over {cards} cards of {card_gb:.0f} GB, or run in turn"
        )
    lines.append(
        f"one card busy {busy:.3f} s per image for all GPU stages -> {1 / busy if busy else float('inf'):.2f} images/s "
        f"per card if they share it at full use; {fit}"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="tiny", help="packaged manifest name or YAML path (default tiny)")
    parser.add_argument("--shards", nargs="+", help="SA-1B tar(s); default: a demo-photo shard of --images")
    parser.add_argument("--images", type=int, default=8, help="images of the demo-photo shard (default 8)")
    parser.add_argument("--max-images", type=int, default=None, help="use at most this many images of --shards")
    parser.add_argument("--levels", default="1-4")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--card-gb", type=float, default=80.0)
    parser.add_argument("--tiny-dir", default=None, help="tiny checkpoints (default: build fresh ones in a temp dir)")
    parser.add_argument("--dummy", action="store_true", help="full-size models with random weights (no checkpoints)")
    parser.add_argument("--plan", default=None, help="--dummy: roles and calls from a `models cost --json` file")
    parser.add_argument("--stages", default=None, help="--dummy: only these stages (comma-separated)")
    parser.add_argument("--mfu", type=float, default=0.4, help="--dummy: utilisation of the projected figures")
    parser.add_argument("--json", default=None, help="--dummy: also write the figures to this JSON file")
    args = parser.parse_args()
    if args.dummy:
        return dummy_main(args)
    # the synthetic-shard helpers need pycocotools and the engine: imported for the checkpoint runs only
    from common import header, run_in_process, write_demo_photo_shard

    header("gpu_throughput")

    import torch

    cuda = torch.cuda.is_available()
    sampler = UtilSampler() if cuda else None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        print(
            f"device: {props.name}, {props.total_memory / 1e9:.0f} GB; SM sampling: {bool(sampler and sampler.available)}"
        )
    else:
        print(
            "NO CUDA DEVICE: every figure below is a CPU FIGURE (tiny random checkpoints when --manifest tiny); it "
            "says nothing about GPU throughput, memory or utilisation, and the plan is only a worked example."
        )

    with tempfile.TemporaryDirectory(prefix="gpu-throughput-") as tmp:
        variables = dict(v.split("=", 1) for v in args.var)
        if args.manifest == "tiny":
            use_tiny_checkpoints(args, tmp, variables)
        from grand_engine.config import load_manifest
        from grand_engine.io.sa1b import index_shard, list_shards
        from grand_engine.runtime.pipeline import build_pipeline, parse_levels
        from grand_engine.runtime.plan import make_units

        manifest = load_manifest(args.manifest, overrides=args.set, variables=variables)
        pipeline = build_pipeline(manifest, levels=parse_levels(args.levels))
        if args.shards:
            members = [m for p in list_shards(args.shards) for m in index_shard(p).members]
        else:
            members = index_shard(write_demo_photo_shard(Path(tmp) / "sa_000000.tar", args.images)).members
        members = members[: args.max_images] if args.max_images else members
        (unit,) = make_units([_single_index(members)], unit_size=max(1, len(members)))
        hooks = GpuHooks(cuda, sampler)
        start = time.perf_counter()
        stats = run_in_process(pipeline, unit, hooks)
        wall = time.perf_counter() - start
        decode = stats.pop("decode_once")

    kind = "GPU" if cuda else "CPU"
    rows = []
    for name, s in stats.items():
        stage = pipeline.stages[name]
        n = max(1, int(s["images"]))
        rows.append(
            {
                "name": name,
                # On CPU the stages with models stand in for the GPU stages, so the plan below is a worked example.
                "gpu": stage.resources.gpus > 0 or (not cuda and bool(stage.model_slots)),
                "batch": stage.resources.batch_size,
                "images": int(s["images"]),
                "setup": s["setup"],
                "s_per_image": s["process"] / n,
                **hooks.stats.get(name, {}),
            }
        )
    print(f"\n{len(unit.members)} images, manifest {args.manifest}; {kind} figures (process() only, setup apart)")
    print(
        f"{'stage':<20} {'dev':>4} {'batch':>5} {'images':>6} {'setup s':>8} {'img/s':>9} {'weights GB':>10} "
        f"{'peak GB':>8} {'SM % mean/max':>14}"
    )
    for r in rows:
        ips = f"{1 / r['s_per_image']:>9.2f}" if r["s_per_image"] > 0 else f"{'-':>9}"
        weights = f"{r['weights_gb']:>10.2f}" if r.get("weights_gb") is not None else f"{'-':>10}"
        peak = f"{r['peak_gb']:>8.2f}" if r.get("peak_gb") is not None else f"{'-':>8}"
        sm = f"{r['sm_mean']:.0f}/{r['sm_max']:.0f}" if r.get("sm_mean") is not None else "-"
        dev = "gpu" if pipeline.stages[r["name"]].resources.gpus > 0 and cuda else "cpu"
        print(
            f"{r['name']:<20} {dev:>4} {r['batch']:>5} {r['images']:>6} {r['setup']:>8.2f} {ips} {weights} {peak} "
            f"{sm:>14}"
        )
    total = sum(r["s_per_image"] for r in rows) + decode["process"] / max(1, decode["images"])
    print(
        f"end to end ({kind}, one stage after another on one device): {1 / total:.3f} images/s "
        f"({total:.2f} s per image; wall {wall:.1f} s with model loading)"
    )
    print(f"\nco-residency plan for one {args.card_gb:.0f} GB card ({kind} figures):")
    for line in plan_card(rows, args.card_gb):
        print("  " + line)
    if not cuda:
        print("  (CPU run: the stages with models stand in for GPU stages and their CPU seconds for GPU seconds)")
    return 0


def use_tiny_checkpoints(args: argparse.Namespace, tmp: str, variables: dict[str, str]) -> str:
    """Point ``GRAND_TINY_DIR`` at tiny checkpoints (``--tiny-dir``, or fresh ones built into ``tmp``)."""
    tiny = args.tiny_dir or os.environ.get("GRAND_TINY_DIR_FOR_BENCH")
    if tiny is None:
        tiny = str(Path(tmp) / "models" / "tiny")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        subprocess.run(
            [sys.executable, "-m", "grand_engine.cli", "models", "tiny", tiny],
            env=env,
            cwd=tmp,
            capture_output=True,
            check=True,
        )
    os.environ["GRAND_TINY_DIR"] = tiny
    variables.setdefault("llm_dir", f"{tiny}/llama")  # the random tiny Llama: SmolLM2 would dominate
    return tiny


def dummy_main(args: argparse.Namespace) -> int:
    """``--dummy``: every role at full size with random weights, timed on the cost model's calls."""
    import json

    import torch

    from grand_engine.cost.gpus import gpu_for_device
    from grand_engine.cost.measure import LABEL, format_measurements, measure_plan

    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name(0) if cuda else "CPU"
    stages = [s.strip() for s in (args.stages or "").split(",") if s.strip()] or None
    with tempfile.TemporaryDirectory(prefix="gpu-dummy-") as tmp:
        if args.plan:
            plan = json.loads(Path(args.plan).read_text())
            source = f"plan {args.plan}"
        else:
            manifest = args.manifest
            variables = dict(v.split("=", 1) for v in args.var)
            if not cuda and manifest != "tiny":
                print(
                    f"NO CUDA DEVICE: full-size {manifest} models would take hours on CPU; measuring the tiny "
                    "manifest's configurations instead (CPU figures)"
                )
                manifest = "tiny"
            if manifest == "tiny":
                use_tiny_checkpoints(args, tmp, variables)
            from grand_engine.cost import cost_manifest

            spec = gpu_for_device(device_name) if cuda else None
            report = cost_manifest(manifest, gpu_key=spec.key if spec else "h100", mfu=args.mfu, variables=variables)
            plan = report.to_dict()
            source = f"manifest {manifest}"

        def save(rows: list) -> None:
            import transformers

            data = {
                "label": LABEL,
                "device": device_name,
                "cuda": cuda,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "source": source,
                "images": args.images,
                "mfu": args.mfu,
                "roles": [r.to_dict() for r in rows],
            }
            Path(args.json).write_text(json.dumps(data, indent=1) + "\n")

        print(f"{source}, {args.images} images per role, {device_name}", flush=True)
        rows = measure_plan(plan, images=args.images, stages=stages, mfu=args.mfu, on_row=save if args.json else None)
    print(format_measurements(rows, device_name))
    if not cuda:
        print(f"CPU run: tiny configurations on CPU; these figures say nothing about a GPU ({LABEL})")
    if args.json:
        print(f"wrote {args.json}")
    return 1 if any(r.error for r in rows) else 0


def _single_index(members: list[Any]) -> Any:
    """A shard index holding ``members`` (possibly from several shards) so they form one unit."""
    from grand_engine.io.sa1b import ShardIndex

    return ShardIndex(shard="bench", path="", kind="tar", size=0, mtime_ns=0, members=list(members))


if __name__ == "__main__":
    sys.exit(main())
