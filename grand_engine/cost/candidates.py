"""The checkpoints a 2026 profile can choose from, each costed in the GranD roles it could play.

Each candidate is put in place of the baseline manifest's model in a role (stage, slot) — the stage, its
parameters and its batch stay the baseline's — and costed exactly as a manifest's role. The table shows it next to
the baseline's model in the same role, so that a profile can be chosen by the numbers: fewer, stronger models
that fit on one card, at the lowest cost per image.

Qwen-VL candidates read images at their native resolution; their visual-token budget is the assumption
``vlm_max_visual_tokens`` (the ``max_pixels`` option their role would set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grand_engine.config import ModelSpec
from grand_engine.cost.estimate import ModelCache, RoleCost, cost_role
from grand_engine.cost.gpus import GpuSpec, gpu
from grand_engine.cost.workload import Workload

Role = tuple[str, str]

VLM_ROLES: tuple[Role, ...] = (
    ("landmark", "vlm"),
    ("caption_vlm", "vlm"),
    ("caption_blip2", "vlm"),
    ("region_captions", "vlm"),
    ("region_attributes", "vlm"),
)
LLM_ROLES: tuple[Role, ...] = (("dense_caption", "llm"), ("verify", "llm"), ("extra_context", "llm"))
CLIP_ROLES: tuple[Role, ...] = (("tagging", "clip"), ("sam_classify", "clip"), ("label_assign", "clip"))


@dataclass(frozen=True)
class Candidate:
    """A checkpoint and the roles it could play (``pixels_per_token``: the side of a visual token, Qwen-VL)."""

    model_id: str
    family: str
    roles: tuple[Role, ...]
    backend: str | None = None
    pixels_per_token: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def spec(self, workload: Workload) -> ModelSpec:
        options = dict(self.options)
        if self.pixels_per_token:
            options["max_pixels"] = int(workload["vlm_max_visual_tokens"]) * self.pixels_per_token**2
        return ModelSpec(id=self.model_id, family=self.family, backend=self.backend, options=options)


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("facebook/sam3", "sam3", (("detect_lvis", "detector"), ("detect_ov", "detector"))),
    Candidate("google/owlv2-large-patch14-ensemble", "owl", (("detect_lvis", "detector"), ("detect_ov", "detector"))),
    Candidate("google/owlv2-base-patch16-ensemble", "owl", (("detect_lvis", "detector"), ("detect_ov", "detector"))),
    Candidate(
        "IDEA-Research/grounding-dino-base",
        "grounding_dino",
        (("detect_ov2", "detector"), ("ground_phrases", "grounder")),
    ),
    Candidate(
        "IDEA-Research/grounding-dino-tiny",
        "grounding_dino",
        (("detect_ov2", "detector"), ("ground_phrases", "grounder")),
    ),
    Candidate("ustc-community/dfine-xlarge-obj2coco", "detector", (("detect_closed", "detector"),)),
    Candidate("ustc-community/dfine-large-obj2coco-e25", "detector", (("detect_closed", "detector"),)),
    Candidate("facebook/sam2.1-hiera-large", "sam", (("masks", "sam"),)),
    Candidate("syscv-community/sam-hq-vit-huge", "sam", (("masks", "sam"),)),
    Candidate("Qwen/Qwen2.5-VL-7B-Instruct", "vlm", VLM_ROLES, pixels_per_token=28),
    Candidate("Qwen/Qwen3-VL-8B-Instruct", "vlm", VLM_ROLES, pixels_per_token=32),
    Candidate("Qwen/Qwen3-VL-4B-Instruct", "vlm", VLM_ROLES, pixels_per_token=32),
    Candidate("Qwen/Qwen3-VL-2B-Instruct", "vlm", VLM_ROLES, pixels_per_token=32),
    Candidate(
        "florence-community/Florence-2-large",
        "vlm",
        (("region_captions", "vlm"), ("region_attributes", "vlm"), ("ground_phrases", "grounder")),
    ),
    Candidate(
        "florence-community/Florence-2-base",
        "vlm",
        (("region_captions", "vlm"), ("region_attributes", "vlm"), ("ground_phrases", "grounder")),
    ),
    Candidate("depth-anything/Depth-Anything-V2-Large-hf", "depth", (("depth", "depth"),)),
    Candidate("apple/DepthPro-hf", "depth", (("depth", "depth"),)),
    Candidate("google/siglip2-so400m-patch14-384", "clip", CLIP_ROLES),
    Candidate("google/siglip2-base-patch16-224", "clip", CLIP_ROLES),
    Candidate("Qwen/Qwen3-8B", "llm", LLM_ROLES, backend="vllm"),
    Candidate("Qwen/Qwen3-14B", "llm", LLM_ROLES, backend="vllm"),
    Candidate("Qwen/Qwen3-4B", "llm", LLM_ROLES, backend="vllm"),
    Candidate("Qwen/Qwen3-1.7B", "llm", LLM_ROLES, backend="vllm"),
)
"""Issue 16's candidates for the 2026 profile (and the 2023 models they would replace, for comparison)."""


@dataclass
class CandidateRow:
    candidate: str
    role: Role
    cost: RoleCost
    baseline: RoleCost | None


@dataclass
class CandidateReport:
    baseline_manifest: str
    gpu: GpuSpec
    mfu: float
    mbu: float
    rows: list[CandidateRow]

    def to_dict(self) -> dict[str, Any]:
        def one(r: RoleCost | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {
                "model": r.model_id,
                "params": r.params,
                "weight_gb": r.weight_gb,
                "gflops_per_image": r.flops_per_image / 1e9,
                "floor_ms_per_image": r.seconds_per_image(self.gpu) * 1e3,
                "ms_per_image_at_utilisation": r.seconds_per_image(self.gpu, self.mfu, self.mbu) * 1e3,
                "error": r.error,
                "notes": r.notes,
            }

        return {
            "baseline_manifest": self.baseline_manifest,
            "gpu": self.gpu.key,
            "mfu": self.mfu,
            "mbu": self.mbu,
            "rows": [
                {
                    "candidate": row.candidate,
                    "role": ".".join(row.role),
                    "cost": one(row.cost),
                    "baseline": one(row.baseline),
                }
                for row in self.rows
            ],
        }

    def format(self) -> str:
        u = f"{self.mfu:.0%}"
        lines = [
            f"2026 candidates on {self.gpu.name}, each in the roles it could play (stage settings of manifest "
            f"{self.baseline_manifest}); ms at 100 % and at {u} MFU / {self.mbu:.0%} HBM",
            "",
            f"{'role':<24} {'candidate':<42} {'params':>7} {'GB':>6} {'GFLOPs/img':>11} {'ms @100%':>9} "
            f"{'ms @' + u:>8}   {'baseline model':<36} {'GFLOPs':>9} {'ms @' + u:>8}",
        ]
        for row in sorted(self.rows, key=lambda r: (r.role, r.cost.flops_per_image)):
            c, b = row.cost, row.baseline
            role = ".".join(row.role)
            if c.error:
                lines.append(f"{role:<24} {row.candidate:<42} not costed: {c.error}")
                continue
            base = ""
            if b is not None and b.error is None:
                base = (
                    f"   {b.model_id[-36:]:<36} {b.flops_per_image / 1e9:>9,.0f} "
                    f"{b.seconds_per_image(self.gpu, self.mfu, self.mbu) * 1e3:>8.2f}"
                )
            lines.append(
                f"{role:<24} {row.candidate[-42:]:<42} {c.params / 1e9:>6.2f}B {c.weight_gb:>6.2f} "
                f"{c.flops_per_image / 1e9:>11,.0f} {c.seconds_per_image(self.gpu) * 1e3:>9.2f} "
                f"{c.seconds_per_image(self.gpu, self.mfu, self.mbu) * 1e3:>8.2f}{base}"
            )
        return "\n".join(lines)


def cost_candidates(
    baseline: str = "grand",
    gpu_key: str = "h100",
    mfu: float = 0.4,
    mbu: float = 0.8,
    assume: dict[str, float] | None = None,
    candidates: tuple[Candidate, ...] = CANDIDATES,
    cache: ModelCache | None = None,
) -> CandidateReport:
    """Cost every candidate in each of its roles, next to the baseline manifest's model in that role."""
    from grand_engine.config import load_manifest
    from grand_engine.runtime.pipeline import build_pipeline

    spec = gpu(gpu_key)
    card = min(80.0, spec.memory_gb)
    pipeline = build_pipeline(load_manifest(baseline))
    workload = Workload(assume)
    cache = cache or ModelCache()
    baselines: dict[Role, RoleCost] = {}
    rows = []
    for cand in candidates:
        for stage_name, slot in cand.roles:
            stage = pipeline.stages.get(stage_name)
            if stage is None:
                continue
            role = (stage_name, slot)
            if role not in baselines and slot in stage.models:
                baselines[role] = cost_role(stage, slot, stage.models[slot], pipeline.stages, workload, cache, card)
            cost = cost_role(stage, slot, cand.spec(workload), pipeline.stages, workload, cache, card)
            rows.append(CandidateRow(cand.model_id, role, cost, baselines.get(role)))
    return CandidateReport(pipeline.manifest.name, spec, mfu, mbu, rows)
