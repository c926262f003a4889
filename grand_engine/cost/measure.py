"""Full-size throughput without weights: every role built at full size with random weights, timed on the calls
that the cost model counts.

The compute of a model does not depend on its weight values, so a model built from its configuration with random
weights runs at the speed of the real one (except where the output decides the work: every generation here runs
exactly its planned number of tokens, as vLLM's ``ignore_eos`` does). Each role of a cost plan
(``grand-engine models cost --json``, or :func:`grand_engine.cost.cost_manifest` in process) is built on the
device, its calls run for ``images`` images at the plan's input sizes, batches and token counts, and the report
gives images/s, weight and peak memory, and the ratio of the measured time to the cost model's floor on this GPU.
Every figure is labelled :data:`LABEL`.

Only torch, transformers and timm are needed (plus vLLM for the roles a plan serves with it, when installed): a
plan file lets a bare GPU machine run this without the manifest schema's dependencies.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from grand_engine.cost.archs import Generative, Runtime, UnsupportedCall, arch_for
from grand_engine.cost.configs import find_config
from grand_engine.cost.counting import promoted
from grand_engine.cost.estimate import CallCost
from grand_engine.cost.gpus import GPUS, GpuSpec, gpu_for_device

LABEL = "dummy weights: throughput only"
"""Attached to every figure this module produces: random weights say nothing about the outputs' quality."""
TEXT_BATCH = 64
"""Texts per batch of a text-encoder call."""


@dataclass
class RoleMeasurement:
    """One role run at full size with random weights (``seconds``: the timed calls for ``images`` images)."""

    stage: str
    slot: str
    model: str
    device: str = "cpu"
    dtype: str = "float32"
    backend: str = "transformers"
    images: int = 0
    seconds: float = 0.0
    build_s: float = 0.0
    weights_gb: float | None = None
    peak_gb: float | None = None
    floor_ms: float | None = None
    projected_ms: float | None = None
    floor_gpu: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.stage}.{self.slot}"

    @property
    def ms_per_image(self) -> float | None:
        return self.seconds * 1e3 / self.images if self.images and self.seconds > 0 else None

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.images and self.seconds > 0 else None

    @property
    def ratio(self) -> float | None:
        """Measured time over the cost model's floor (100 % of the GPU's peaks)."""
        ms = self.ms_per_image
        return ms / self.floor_ms if ms and self.floor_ms else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": LABEL,
            "stage": self.stage,
            "slot": self.slot,
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "backend": self.backend,
            "images": self.images,
            "seconds": self.seconds,
            "build_s": self.build_s,
            "images_per_s": self.images_per_s,
            "ms_per_image": self.ms_per_image,
            "weights_gb": self.weights_gb,
            "peak_gb": self.peak_gb,
            "floor_ms_per_image": self.floor_ms,
            "projected_ms_per_image": self.projected_ms,
            "floor_gpu": self.floor_gpu,
            "measured_over_floor": self.ratio,
            "calls": self.calls,
            "notes": self.notes,
            "error": self.error,
        }


def plan_report(plan: dict[str, Any]) -> dict[str, Any]:
    """The cost report of a plan: a ``CostReport.to_dict()``, or the ``models cost --json`` file holding one."""
    return plan["manifest"] if isinstance(plan.get("manifest"), dict) else plan


def plan_roles(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return list(plan_report(plan).get("roles", []))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _chunks(total: int, size: int) -> list[int]:
    size = max(1, size)
    return [min(size, total - start) for start in range(0, total, size)]


class _Runner:
    """Runs one role's calls on the device: ``run(call, n)`` does ``n`` inputs of the call in batches."""

    def __init__(self, arch: Any, model: Any, rt: Runtime, role: dict[str, Any]) -> None:
        self.arch, self.model, self.rt, self.role = arch, model, rt, role
        self.embedding: Any = None

    def inputs(self, call: dict[str, Any], images: int) -> int:
        return max(1, round(float(call["per_image"]) * images))

    def batch(self, call: dict[str, Any]) -> int:
        if call["kind"] == "generate":
            return int(call.get("decode_batch") or 1)
        if call["kind"] == "text":
            return TEXT_BATCH
        if call["kind"] == "boxes":
            return 1
        return int(self.role.get("stage_batch") or 1)

    def run(self, call: dict[str, Any], n: int) -> None:
        arch, model, rt = self.arch, self.model, self.rt
        size = tuple(call["input_size"]) if call.get("input_size") else None
        c = SimpleNamespace(**call)
        for b in _chunks(n, self.batch(call)):
            if call["kind"] == "image":
                arch.image(model, rt, b, size, c)
            elif call["kind"] == "text":
                arch.text(model, rt, b, int(call.get("text_tokens") or 16))
            elif call["kind"] == "boxes":
                if self.embedding is None:  # the image embedding is the role's separate image call
                    self.embedding = arch.embed_image(model, rt, 1, size)
                arch.boxes(model, rt, self.embedding, int(call["boxes"]))
            elif call["kind"] == "pooled":
                arch.pooled(model, rt, b, size, int(call["boxes"]))
            elif call["kind"] == "generate" and isinstance(arch, Generative):
                image = size if call.get("image") != "none" else None
                prefix = bool(call.get("image_prefix_cached"))  # the image and what precedes it are in the cache
                arch.generate(
                    model,
                    rt,
                    b,
                    image,
                    int(call["prompt_tokens"]),
                    int(call["new_tokens"]),
                    vision=not (prefix or call.get("vision_reused")),
                    cached=int(call.get("image_tokens") or 0) if prefix else 0,
                )
            else:
                raise UnsupportedCall(f"{type(arch).__name__} cannot run a {call['kind']!r} call")


def _floor(role: dict[str, Any], gpu: GpuSpec, mfu: float, mbu: float) -> tuple[float, float]:
    costs = [CallCost.from_dict(c) for c in role.get("calls", [])]
    floor = sum(c.call.per_image * c.seconds(gpu, 1.0, 1.0) for c in costs)
    projected = sum(c.call.per_image * c.seconds(gpu, mfu, mbu) for c in costs)
    return floor * 1e3, projected * 1e3


def _vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def measure_role(
    role: dict[str, Any],
    images: int,
    device: str,
    gpu: GpuSpec | None = None,
    mfu: float = 0.4,
    mbu: float = 0.8,
    warmup: bool = True,
) -> RoleMeasurement:
    """Build one role of a plan at full size with random weights on ``device`` and time its calls (``meta``: a dry
    run of the same path, shapes only, to check a plan before a GPU is there)."""
    import torch

    m = RoleMeasurement(role["stage"], role["slot"], role["model"], device=device)
    if role.get("error"):
        m.error = f"not in the plan: {role['error']}"
        return m
    if not role.get("calls"):
        m.notes.append("no calls per image in the plan: nothing to run")
        return m
    cuda = device.startswith("cuda")
    if cuda:  # the floor on this card when it is known, else on the plan's
        spec = gpu or GPUS.get(str((role.get("gpu") or {}).get("key", "h100")), GPUS["h100"])
        m.floor_ms, m.projected_ms = _floor(role, spec, mfu, mbu)
        m.floor_gpu = spec.name
    m.dtype = role.get("dtype", "bfloat16") if cuda else "float32"
    dtype = getattr(torch, m.dtype)
    text_only = all(c.get("image") == "none" for c in role["calls"] if c["kind"] == "generate")
    if cuda and role.get("backend") == "vllm" and _vllm_available() and text_only:
        return _measure_vllm(role, images, m)
    if role.get("backend") == "vllm" and not text_only:
        m.notes.append("a VLM served by vLLM is measured through transformers here (token prompts only for vLLM)")
    mc = find_config(SimpleNamespace(id=role["model"]))
    if mc is None:
        m.error = f"no configuration for {role['model']!r}"
        return m
    try:
        arch = arch_for(mc)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        model = arch.build(device, dtype).requires_grad_(False)
        if hasattr(arch, "set_built"):
            arch.set_built(model)
        _sync(device)
        m.build_s = time.perf_counter() - start
        if cuda:
            m.weights_gb = (torch.cuda.memory_allocated() - base) / 1e9
            torch.cuda.reset_peak_memory_stats()
        rt = Runtime(device, dtype)
        runner = _Runner(arch, model, rt, role)
        # on the meta device the whole path runs as a dry run (shapes only), as the cost model counts
        with promoted() if device == "meta" else torch.inference_mode():
            if warmup:  # kernel selection and allocator growth, on one batch of each call
                for call in role["calls"]:
                    runner.run(call, min(runner.inputs(call, images), runner.batch(call)))
            for call in role["calls"]:
                n = runner.inputs(call, images)
                _sync(device)
                t0 = time.perf_counter()
                runner.run(call, n)
                _sync(device)
                took = time.perf_counter() - t0
                m.seconds += took
                m.calls.append({"what": call["what"], "kind": call["kind"], "inputs": n, "seconds": took})
        m.images = images
        if cuda:
            m.peak_gb = (torch.cuda.max_memory_allocated() - base) / 1e9
        if any(c.get("shared_tokens") for c in role["calls"] if c["kind"] == "generate"):
            m.notes.append("transformers prefills the shared prompt prefix for every sequence; the floor caches it")
        del model, runner
    except (UnsupportedCall, ImportError, ValueError, RuntimeError) as exc:
        m.error = f"{type(exc).__name__}: {exc}"
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return m


def _measure_vllm(role: dict[str, Any], images: int, m: RoleMeasurement) -> RoleMeasurement:
    """An LLM role through vLLM with dummy weights: token-id prompts (no tokenizer), ``ignore_eos``, the plan's
    output lengths and its shared prefix, with prefix caching on."""
    import random

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    m.backend = "vllm"
    mc = find_config(SimpleNamespace(id=role["model"]))
    if mc is None or mc.where is None:
        m.error = f"no configuration for {role['model']!r}"
        return m
    calls = [c for c in role["calls"] if c["kind"] == "generate"]
    longest = max(int(c["prompt_tokens"]) + int(c["new_tokens"]) for c in calls)
    start = time.perf_counter()
    engine = LLM(
        model=str(mc.where),
        load_format="dummy",
        skip_tokenizer_init=True,
        dtype=m.dtype,
        enable_prefix_caching=True,
        max_model_len=longest + 16,
        gpu_memory_utilization=0.85,
        seed=0,
    )
    m.build_s = time.perf_counter() - start
    vocab = int(mc.config.get("vocab_size") or 32000)
    rng = random.Random(0)
    for call in calls:
        n = max(1, round(float(call["per_image"]) * images))
        shared = [rng.randrange(100, vocab) for _ in range(int(call.get("shared_tokens") or 0))]
        own = int(call["prompt_tokens"]) - len(shared)
        prompts = [
            TokensPrompt(prompt_token_ids=shared + [rng.randrange(100, vocab) for _ in range(own)]) for _ in range(n)
        ]
        params = SamplingParams(
            max_tokens=int(call["new_tokens"]), min_tokens=int(call["new_tokens"]), ignore_eos=True, detokenize=False
        )
        engine.generate(prompts[:1], params, use_tqdm=False)  # warm-up
        t0 = time.perf_counter()
        engine.generate(prompts, params, use_tqdm=False)
        took = time.perf_counter() - t0
        m.seconds += took
        m.calls.append({"what": call["what"], "kind": "generate", "inputs": n, "seconds": took})
    m.images = images
    del engine
    return m


def measure_plan(
    plan: dict[str, Any],
    images: int,
    device: str | None = None,
    stages: list[str] | None = None,
    mfu: float = 0.4,
    mbu: float = 0.8,
    on_row: Callable[[list[RoleMeasurement]], None] | None = None,
) -> list[RoleMeasurement]:
    """Measure every GPU role of a plan (or only those of ``stages``), one after another on one device;
    ``on_row`` sees the rows so far after each role (to save partial results of a run cut short)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = gpu_for_device(torch.cuda.get_device_name(0)) if device.startswith("cuda") else None
    out = []
    for role in plan_roles(plan):
        if stages and role["stage"] not in stages:
            continue
        if role.get("tensor_model") is False or not role.get("calls") and not role.get("error"):
            continue
        if device.startswith("cuda") and not role.get("gpu_stage", True):
            continue  # a CPU stage; on CPU every role with a model stands in for a GPU one
        role = {**role, "gpu": plan_report(plan).get("gpu")}
        out.append(measure_role(role, images, device, gpu=gpu, mfu=mfu, mbu=mbu))
        if on_row is not None:
            on_row(out)
    return out


def format_measurements(rows: list[RoleMeasurement], device_name: str) -> str:
    """The table: per role images/s, memory, ms per image against the floor; per stage images/s."""
    lines = [
        f"{LABEL.upper()} — full-size models with random weights on {device_name}",
        f"{'stage.slot':<26} {'model':<40} {'img/s':>8} {'ms/img':>9} {'floor ms':>9} {'× floor':>8} "
        f"{'weights GB':>10} {'peak GB':>8} {'build s':>8}",
    ]
    for r in rows:
        if r.error:
            lines.append(f"{r.name:<26} {r.model[-40:]:<40} not measured: {r.error}")
            continue
        if r.ms_per_image is None:
            lines.append(f"{r.name:<26} {r.model[-40:]:<40} {'; '.join(r.notes)}")
            continue
        weights = f"{r.weights_gb:.2f}" if r.weights_gb is not None else "-"
        peak = f"{r.peak_gb:.2f}" if r.peak_gb is not None else "-"
        floor = f"{r.floor_ms:.2f}" if r.floor_ms else "-"
        ratio = f"{r.ratio:.1f}" if r.ratio else "-"
        lines.append(
            f"{r.name:<26} {r.model[-40:]:<40} {r.images_per_s:>8.2f} {r.ms_per_image:>9.2f} {floor:>9} "
            f"{ratio:>8} {weights:>10} {peak:>8} {r.build_s:>8.1f}"
        )
    stages: dict[str, float] = {}
    for r in rows:
        if r.ms_per_image:
            stages[r.stage] = stages.get(r.stage, 0.0) + r.ms_per_image
    if stages:
        lines.append(f"per stage ({LABEL}): " + ", ".join(f"{s} {1e3 / ms:.2f} img/s" for s, ms in stages.items()))
        total = sum(stages.values())
        lines.append(
            f"the measured stages one after another on one device: {1e3 / total:.3f} images/s ({LABEL})"
            + (
                f"; floors are the cost model's at 100 % of the {rows[0].floor_gpu}'s peaks"
                if rows[0].floor_gpu
                else ""
            )
        )
    notes = sorted({f"{r.name}: {n}" for r in rows for n in r.notes if r.ms_per_image})
    lines += [f"  note {n}" for n in notes]
    return "\n".join(lines)
