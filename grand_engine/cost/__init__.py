"""The physical limit of a manifest, from its models' configurations alone (``grand-engine models cost``).

The compute of a model does not depend on its weight values: every role of a manifest is built from its
checkpoint's configuration (shipped in ``grand_engine/models/configs``) on PyTorch's meta device, run on meta
tensors of the manifest's real input sizes, and its FLOPs counted. With the per-image workload of each stage
(:mod:`.workload`) and a GPU's peaks (:mod:`.gpus`) that gives each role's floor in ms per image and the whole
pipeline's floor in images/s per GPU (:mod:`.report`). :mod:`.candidates` costs the checkpoints a 2026 profile
can choose from, in the GranD roles each could play.
"""

from __future__ import annotations

from grand_engine.cost.estimate import ModelCache, RoleCost, cost_role
from grand_engine.cost.gpus import GPUS, GpuSpec, gpu
from grand_engine.cost.report import CostReport
from grand_engine.cost.workload import ASSUMPTIONS, Workload

__all__ = [
    "ASSUMPTIONS",
    "GPUS",
    "CostReport",
    "GpuSpec",
    "ModelCache",
    "RoleCost",
    "Workload",
    "cost_manifest",
    "cost_role",
    "gpu",
]

DEFAULT_MFU = 0.40
"""The model-FLOPs utilisation the projection assumes: 40 %, a typical large-batch bf16 inference figure."""
DEFAULT_MBU = 0.80
"""Share of peak HBM bandwidth a decoding kernel reaches (memory-bound GEMV-like steps reach 70-90 %)."""


def cost_manifest(
    manifest: str,
    gpu_key: str = "h100",
    mfu: float = DEFAULT_MFU,
    mbu: float = DEFAULT_MBU,
    assume: dict[str, float] | None = None,
    variables: dict[str, str] | None = None,
    levels: list[int] | None = None,
    card_gb: float | None = None,
    cache: ModelCache | None = None,
) -> CostReport:
    """Cost every model role of a manifest (packaged name or path) on ``gpu_key``."""
    from grand_engine.config import load_manifest
    from grand_engine.runtime.pipeline import build_pipeline

    spec = gpu(gpu_key)
    card = card_gb if card_gb is not None else min(80.0, spec.memory_gb)
    pipeline = build_pipeline(load_manifest(manifest, variables=variables), levels=levels)
    workload = Workload(assume)
    cache = cache or ModelCache()
    roles: list[RoleCost] = []
    for stage in pipeline.stages.values():
        for slot, model in stage.models.items():
            roles.append(cost_role(stage, slot, model, pipeline.stages, workload, cache, card_gb=card))
    return CostReport(pipeline.manifest.name, spec, mfu, mbu, workload, roles, card_gb=card)
