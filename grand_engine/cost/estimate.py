"""The physical limit of a manifest: FLOPs and bytes per image of every model role, and what they cost on a GPU.

For every (stage, slot) with a model, :func:`cost_role` builds the model from its configuration on the meta device,
asks the stage's workload program (:mod:`.workload`) which calls one image costs, and counts each call's FLOPs
with ``FlopCounterMode`` at the manifest's input sizes:

* a vision or text pass: the FLOPs of the pass;
* a generation: the vision tower, the prefill of the prompt (with a prefix shared by every image left out when
  the backend caches prefixes, as vLLM's automatic prefix caching does), and ``new_tokens`` decoding steps,
  each counted as one step at the mean context length (the attention term is linear in the context, so the mean
  step times the number of steps is exact for it, and the rest does not depend on the context).

Time per image at a model-FLOPs utilisation ``mfu`` is FLOPs / (peak × mfu), except the decoding steps, which
take the longer of their compute time and their **decode bound**: every step reads the language model's weights
once for the whole batch plus each sequence's key/value cache, so one token of one sequence costs
``(weight bytes + batch × KV bytes at the mean context) / batch`` bytes at the HBM bandwidth × ``mbu``.
The batch is the role's: the stage's ``batch_size`` capped by the backend's concurrent sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grand_engine.cost.archs import Arch, Florence2, Generative, Runtime, Size, UnsupportedCall, arch_for
from grand_engine.cost.configs import config_key, find_config
from grand_engine.cost.counting import count_flops, count_params, run_promoted
from grand_engine.cost.gpus import GpuSpec
from grand_engine.cost.workload import Call, Context, Workload, stage_calls

if TYPE_CHECKING:  # the manifest schema needs pydantic, which a bare GPU machine lacks
    from grand_engine.config import ModelSpec

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
NOT_TENSOR_FAMILIES = {"spacy": "a spaCy pipeline (CPU, not a tensor model)"}
VLLM_MAX_SEQS = 256
"""vLLM's default ``max_num_seqs`` (concurrent sequences of one engine)."""
HF_GENERATE_BATCH = {"llm": 16, "vlm": 8}
"""The engine's adapters' default batch per ``generate`` (``max_num_seqs`` / ``max_batch_size`` options)."""


def role_dtype(spec: ModelSpec) -> str:
    """The dtype a GPU worker runs the model in: the manifest's, or bf16 for ``auto`` (the adapters' GPU choice)."""
    return "bfloat16" if spec.dtype == "auto" else spec.dtype


@dataclass
class CallCost:
    """FLOPs (per call, by part) and decode figures of one :class:`~.workload.Call`."""

    call: Call
    input_size: Size | None = None
    image_tokens: int = 0
    flops: dict[str, float] = field(default_factory=dict)
    decode_tokens: int = 0
    decode_step_flops: float = 0.0
    decode_bytes_per_token: float = 0.0
    batch: int = 1

    @property
    def total_flops(self) -> float:
        return sum(self.flops.values())

    def seconds(self, gpu: GpuSpec, mfu: float, mbu: float) -> float:
        """Seconds of one call at utilisations ``mfu`` (FLOPs) and ``mbu`` (HBM bandwidth)."""
        rest = self.total_flops - self.flops.get("decode", 0.0)
        t = rest / (gpu.flops * mfu)
        if self.decode_tokens:
            step = max(
                self.decode_step_flops / (gpu.flops * mfu), self.decode_bytes_per_token / (gpu.bytes_per_s * mbu)
            )
            t += self.decode_tokens * step
        return t

    def to_dict(self) -> dict[str, Any]:
        c = self.call
        return {
            "kind": c.kind,
            "what": c.what,
            "per_image": c.per_image,
            "image": c.image,
            "input_size": list(self.input_size) if self.input_size else None,
            "image_tokens": self.image_tokens,
            "queries": c.queries,
            "text_tokens": c.text_tokens,
            "prompt_tokens": c.prompt_tokens,
            "shared_tokens": c.shared_tokens,
            "new_tokens": c.new_tokens,
            "boxes": c.boxes,
            "long_side": c.long_side,
            "vision_reused": c.vision_reused,
            "image_prefix_cached": c.image_prefix_cached,
            "batched": c.batched,
            "gflops_per_call": {k: v / 1e9 for k, v in self.flops.items()},
            "decode_bytes_per_token": self.decode_bytes_per_token,
            "decode_step_gflops": self.decode_step_flops / 1e9,
            "decode_batch": self.batch,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallCost:
        """The call back from :meth:`to_dict` (what a measurement needs to recompute its floor on any GPU)."""
        fields = {k: data[k] for k in Call.__dataclass_fields__ if k in data}
        flops = {k: v * 1e9 for k, v in data.get("gflops_per_call", {}).items()}
        size = data.get("input_size")
        return cls(
            Call(**fields),
            input_size=tuple(size) if size else None,
            image_tokens=int(data.get("image_tokens", 0)),
            flops=flops,
            decode_tokens=int(data.get("new_tokens", 0)) if "decode" in flops else 0,
            decode_step_flops=float(data.get("decode_step_gflops", 0.0)) * 1e9,
            decode_bytes_per_token=float(data.get("decode_bytes_per_token", 0.0)),
            batch=int(data.get("decode_batch", 1)),
        )


@dataclass
class RoleCost:
    """One model in one stage slot: its size, its calls per image and what they cost."""

    stage: str
    slot: str
    model_id: str
    dtype: str = "bfloat16"
    key: str | None = None
    gpu: bool = True
    batch: int = 1
    batch_cap: int = 0
    stage_batch: int = 1
    backend: str | None = None
    memory_budget_gb: float = 0.0
    params: int = 0
    decode_params: int = 0
    kv_bytes_per_token: int = 0
    kv_element_bytes: int = 0
    kv_cache_gb: float = 0.0
    setup_flops: float = 0.0
    prefix_caching: bool = False
    calls: list[CallCost] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    tensor_model: bool = True

    @property
    def failed(self) -> bool:
        """A tensor model that could not be costed (its configuration is missing or cannot be built)."""
        return self.error is not None and self.tensor_model

    @property
    def name(self) -> str:
        return f"{self.stage}.{self.slot}"

    @property
    def weight_gb(self) -> float:
        return self.params * DTYPE_BYTES[self.dtype] / 1e9

    @property
    def flops_per_image(self) -> float:
        return sum(c.call.per_image * c.total_flops for c in self.calls)

    def seconds_per_image(self, gpu: GpuSpec, mfu: float = 1.0, mbu: float = 1.0) -> float:
        return sum(c.call.per_image * c.seconds(gpu, mfu, mbu) for c in self.calls)

    def to_dict(self, gpu: GpuSpec, mfu: float, mbu: float) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "slot": self.slot,
            "model": self.model_id,
            "config": self.key,
            "dtype": self.dtype,
            "gpu_stage": self.gpu,
            "error": self.error,
            "tensor_model": self.tensor_model,
            "notes": self.notes,
            "params": self.params,
            "weight_gb": self.weight_gb,
            "decode_batch": self.batch,
            "stage_batch": self.stage_batch,
            "backend": self.backend,
            "prefix_caching": self.prefix_caching,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_cache_gb": self.kv_cache_gb,
            "setup_gflops_per_worker": self.setup_flops / 1e9,
            "gflops_per_image": self.flops_per_image / 1e9,
            "floor_ms_per_image": self.seconds_per_image(gpu) * 1e3,
            "ms_per_image_at_utilisation": self.seconds_per_image(gpu, mfu, mbu) * 1e3,
            "calls": [c.to_dict() for c in self.calls],
        }


class ModelCache:
    """Meta-device models and counted calls, shared by every role that uses the same checkpoint."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], tuple[Arch, Any]] = {}
        self.counts: dict[tuple[Any, ...], float] = {}

    def model(self, spec: ModelSpec, dtype: str) -> tuple[Arch, Any]:
        import torch

        mc = find_config(spec)
        if mc is None:
            raise LookupError(
                f"no configuration shipped for checkpoint {spec.id!r} (looked for "
                f"grand_engine/models/configs/{config_key(spec.id)}/config.json)"
            )
        cache_key = (str(mc.where), dtype)
        if cache_key not in self.models:
            arch = arch_for(mc)
            model = arch.build("meta", getattr(torch, dtype)).requires_grad_(False)
            if hasattr(arch, "set_built"):
                arch.set_built(model)
            self.models[cache_key] = (arch, model)
        arch, model = self.models[cache_key]
        return arch, model

    def count(self, key: tuple[Any, ...], fn: Any) -> float:
        if key not in self.counts:
            self.counts[key] = float(count_flops(fn))
        return self.counts[key]


def kv_cache_element_bytes(spec: ModelSpec, dtype: str) -> int:
    """Bytes per key/value element: 1 for an FP8 cache (vLLM's ``kv_cache_dtype: fp8``, in the role's options or
    its ``engine_kwargs``), else the model's dtype."""
    opts = spec.options
    kv = str(opts.get("kv_cache_dtype") or (opts.get("engine_kwargs") or {}).get("kv_cache_dtype") or "auto")
    return 1 if kv.startswith("fp8") else DTYPE_BYTES[dtype]


def decode_cap(spec: ModelSpec) -> int:
    """Sequences the backend decodes together at most (``max_num_seqs`` / ``max_batch_size`` or its default)."""
    opts = spec.options
    if spec.backend == "vllm":
        return int(opts.get("max_num_seqs") or VLLM_MAX_SEQS)
    return int(opts.get("max_num_seqs") or opts.get("max_batch_size") or HF_GENERATE_BATCH.get(spec.family, 8))


def decode_batch(spec: ModelSpec, batch_size: int) -> int:
    """Sequences decoded together for one call per image: the stage's batch, capped by the backend's concurrency."""
    return max(1, min(int(batch_size or 1), decode_cap(spec)))


def _with_options(arch: Arch, spec: ModelSpec, workload: Workload) -> Arch:
    """The role's view of the architecture: image-size options of the manifest (``max_pixels``) applied."""
    pre = dict(arch.pre)
    if "max_pixels" in spec.options:
        pre["max_pixels"] = int(spec.options["max_pixels"])
    if "min_pixels" in spec.options:
        pre["min_pixels"] = int(spec.options["min_pixels"])
    if pre != arch.pre:
        view = object.__new__(type(arch))
        view.__dict__.update(arch.__dict__)
        view.pre = pre
        return view
    return arch


def _crop_side(workload: Workload) -> int:
    area = workload["image_height"] * workload["image_width"] * workload["crop_fraction"]
    return max(28, int(math.sqrt(area)))


def cost_call(
    arch: Arch, model: Any, call: Call, role: RoleCost, workload: Workload, cache: ModelCache, tag: str
) -> CallCost:
    """Count one call (batch 1 on the meta device) and its decode figures."""
    import torch

    rt = Runtime("meta", getattr(torch, role.dtype))
    h, w = int(workload["image_height"]), int(workload["image_width"])
    if call.image == "crop":
        h = w = _crop_side(workload)
    elif call.long_side and max(h, w) > call.long_side:  # the stage's own resize before the processor
        scale = call.long_side / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    size = arch.input_size(h, w, crop=call.image == "crop")
    out = CallCost(call)
    key = (tag, role.dtype, call.kind, call.image, size, call.queries, call.text_tokens, call.boxes)
    if call.kind == "pooled":
        out.input_size = size
        out.flops["image"] = cache.count(key, lambda: arch.pooled(model, rt, 1, size, call.boxes))
        return out
    if call.kind == "image":
        out.input_size = size
        if call.queries and hasattr(arch, "prompt"):  # SAM 3: the backbone once, the detector once per prompt
            vision = run_promoted(lambda: model.get_vision_features(pixel_values=rt.floats(1, 3, *size)))
            out.flops["image"] = cache.count(key + ("vision",), lambda: arch.image(model, rt, 1, size, None))
            one = cache.count(key + ("prompt",), lambda: arch.prompt(model, rt, vision))
            out.flops["prompts"] = one * call.queries
        else:
            out.flops["image"] = cache.count(key, lambda: arch.image(model, rt, 1, size, call))
        if call.queries and "text" in arch.kinds:
            role.setup_flops += cache.count(
                (tag, role.dtype, "setup", call.queries), lambda: arch.setup_text(model, rt, call.queries)
            )
        return out
    if call.kind == "text":
        out.flops["text"] = cache.count(key, lambda: arch.text(model, rt, 1, call.text_tokens))
        return out
    if call.kind == "boxes":
        out.input_size = size
        embedding = run_promoted(lambda: arch.embed_image(model, rt, 1, size))
        out.flops["boxes"] = cache.count(key, lambda: arch.boxes(model, rt, embedding, call.boxes))
        return out
    if call.kind != "generate" or not isinstance(arch, Generative):
        raise UnsupportedCall(f"{type(arch).__name__} cannot run a {call.kind!r} call")
    return _cost_generate(arch, model, call, role, rt, size, cache, key)


def count_decoder(arch: Generative, model: Any, cache: ModelCache, key: tuple, fn: Any) -> float:
    """FLOPs of ``fn`` (which runs the decoder) over the whole stack, from one- and two-layer copies."""
    total = arch.n_layers()
    if total <= 2:
        return cache.count(key, fn)
    with arch.truncated(model, 1):
        one = cache.count(key + (1,), fn)
    with arch.truncated(model, 2):
        two = cache.count(key + (2,), fn)
    return one + (total - 1) * (two - one)


def _cost_generate(
    arch: Generative, model: Any, call: Call, role: RoleCost, rt: Runtime, size: Size, cache: ModelCache, key: tuple
) -> CallCost:
    out = CallCost(call)
    with_image = call.image != "none" and arch.has_vision()
    image_cached = with_image and call.image_prefix_cached and role.prefix_caching
    if with_image:
        out.input_size = size
        out.image_tokens = arch.image_tokens(size)
        if not (call.vision_reused or image_cached):
            out.flops["vision"] = cache.count(key + ("vision",), lambda: arch.vision(model, rt, 1, size))
    prompt = out.image_tokens + call.prompt_tokens
    new = int(call.new_tokens)
    shared = call.shared_tokens if role.prefix_caching else 0
    # a prefix already in the cache for this image (the image and what precedes it): attended to, not prefilled
    held = out.image_tokens if image_cached else 0
    gkey = key + (prompt, shared, new, held)
    bytes_ = DTYPE_BYTES[role.dtype]
    kv_bytes = role.kv_element_bytes or bytes_

    def run(tokens: int, context: int, enc: int = 0) -> Any:
        """Append ``tokens`` to a cache of ``context`` (built inside, so it matches the truncated decoder)."""
        return lambda: arch.extend(model, rt, 1, tokens, arch.make_cache(model, rt, 1, context, enc), enc)

    if isinstance(arch, Florence2):
        enc = max(1, prompt)
        out.flops["encoder"] = cache.count(gkey + ("enc",), lambda: arch.encode(model, rt, 1, enc))
        out.flops["prefill"] = count_decoder(arch, model, cache, gkey + ("pre",), run(1, 0, enc))
        mid = 1 + new // 2
        cross = arch.kv_bytes_per_token(kv_bytes) * enc
    else:
        enc = 0
        out.flops["prefill"] = count_decoder(
            arch, model, cache, gkey + ("pre",), run(max(1, prompt - shared - held), shared + held)
        )
        if shared:
            role.setup_flops += count_decoder(arch, model, cache, gkey + ("shared",), run(shared, 0))
        mid = prompt + new // 2
        cross = 0
    # sequences decoded together: the role's batch, as many as the card's memory left after the weights holds
    # (a cached prefix is stored once for all of them)
    per_sequence = arch.kv_bytes_per_token(kv_bytes) * (prompt - shared + new) + cross
    prefix = arch.kv_bytes_per_token(kv_bytes) * shared
    # the stage sends a call for every image of its batch at once (``batched``), or one at a time
    wanted = max(1, int(role.stage_batch * call.per_image) if call.batched else math.ceil(call.per_image))
    wanted = min(wanted, role.batch_cap or wanted)
    fit = int((role.memory_budget_gb * 1e9 - prefix) // per_sequence) if per_sequence else wanted
    out.batch = max(1, min(wanted, fit))
    if fit < wanted:
        role.notes.append(
            f"{call.what}: the KV cache of {per_sequence / 1e9:.2f} GB per sequence lets {out.batch} of {wanted} "
            f"sequences share the card"
        )
    if new:
        step = count_decoder(arch, model, cache, gkey + ("step",), run(1, mid, enc))
        out.decode_tokens = new
        out.decode_step_flops = step
        out.flops["decode"] = step * new
        weights = role.decode_params * bytes_
        kv = arch.kv_bytes_per_token(kv_bytes) * mid + cross
        out.decode_bytes_per_token = (weights + out.batch * kv) / out.batch
    role.kv_cache_gb = max(role.kv_cache_gb, (prefix + out.batch * per_sequence) / 1e9)
    return out


def cost_role(
    stage: Any,
    slot: str,
    spec: ModelSpec,
    stages: dict[str, Any],
    workload: Workload,
    cache: ModelCache,
    card_gb: float = 80.0,
) -> RoleCost:
    """Cost one model role; a role whose configuration is missing or cannot be built gets ``error`` set.

    ``card_gb`` bounds the decode batch: the KV caches of the sequences decoded together must fit in the card's
    memory (the share ``gpu_memory_utilization`` of the role's options, 0.9 by default, as vLLM) minus the weights.
    """
    role = RoleCost(stage.name, slot, spec.id, role_dtype(spec))
    role.gpu = bool((getattr(stage.resources, "gpus", 0) or 0) > 0)
    if spec.family in NOT_TENSOR_FAMILIES:
        role.error = f"{NOT_TENSOR_FAMILIES[spec.family]}: not costed"
        role.tensor_model = False
        return role
    try:
        arch, model = cache.model(spec, role.dtype)
    except (LookupError, ValueError, OSError, ImportError) as exc:
        role.error = f"{exc}; the other roles are costed"
        return role
    role.key = arch.mc.key
    arch = _with_options(arch, spec, workload)
    role.params = count_params(model)
    role.stage_batch = int(getattr(stage.resources, "batch_size", 1) or 1)
    role.batch = decode_batch(spec, role.stage_batch)
    role.batch_cap = decode_cap(spec)
    role.backend = spec.backend
    role.prefix_caching = spec.backend == "vllm"
    role.memory_budget_gb = card_gb * float(spec.options.get("gpu_memory_utilization", 0.9)) - role.weight_gb
    if isinstance(arch, Generative):
        role.decode_params = sum(count_params(m) for m in arch.decode_modules(model))
        role.kv_element_bytes = kv_cache_element_bytes(spec, role.dtype)
        role.kv_bytes_per_token = arch.kv_bytes_per_token(role.kv_element_bytes)
        if role.prefix_caching:
            role.notes.append("vLLM caches prompt prefixes: the shared in-context prefix is prefilled once per worker")
    ctx = Context(stage, slot, spec, stages, workload, arch.kinds)
    calls = stage_calls(ctx)
    role.notes.extend(ctx.notes)
    tag = str(arch.mc.where)
    for call in calls:
        try:
            role.calls.append(cost_call(arch, model, call, role, workload, cache, tag))
        except UnsupportedCall as exc:
            role.notes.append(f"{call.what}: {exc}")
    return role
