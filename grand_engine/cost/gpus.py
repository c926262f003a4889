"""Peak figures of the GPUs the cost model knows: dense BF16 tensor throughput, HBM bandwidth, memory.

The figures are the vendors' datasheet numbers. NVIDIA quotes tensor throughput "with sparsity" (2:4
structured sparsity doubles it); the cost model uses the **dense** figure, half of the quoted one, because none
of the models here is sparse.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator's peaks (``tflops``: dense BF16 tensor TFLOP/s; ``hbm_gb_s``: memory GB/s)."""

    key: str
    name: str
    tflops: float
    hbm_gb_s: float
    memory_gb: float
    source: str

    @property
    def flops(self) -> float:
        """Peak dense BF16 FLOP/s."""
        return self.tflops * 1e12

    @property
    def bytes_per_s(self) -> float:
        return self.hbm_gb_s * 1e9


GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec(
        "h100",
        "NVIDIA H100 SXM5 80 GB",
        989.4,
        3350.0,
        80.0,
        "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with sparsity (989 dense), HBM3 3.35 TB/s, 80 GB",
    ),
    "h200": GpuSpec(
        "h200",
        "NVIDIA H200 SXM 141 GB",
        989.4,
        4800.0,
        141.0,
        "NVIDIA H200 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with sparsity (989 dense), HBM3e 4.8 TB/s, 141 GB",
    ),
    "a100": GpuSpec(
        "a100",
        "NVIDIA A100 SXM 80 GB",
        312.0,
        2039.0,
        80.0,
        "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS dense (624 with sparsity), HBM2e 2,039 GB/s, 80 GB",
    ),
    "l4": GpuSpec(
        "l4",
        "NVIDIA L4 24 GB",
        121.0,
        300.0,
        24.0,
        "NVIDIA L4 Tensor Core GPU datasheet: BF16 242 TFLOPS with sparsity (121 dense), GDDR6 300 GB/s, 24 GB",
    ),
}
"""The GPUs ``grand-engine models cost --gpu`` accepts."""


def gpu(key: str) -> GpuSpec:
    """The spec of ``key`` (``h100``, ``h200``, ``a100``, ``l4``), with a clear error for anything else."""
    try:
        return GPUS[key.lower()]
    except KeyError:
        raise ValueError(f"unknown GPU {key!r}; known: {', '.join(GPUS)}") from None


def gpu_for_device(name: str) -> GpuSpec | None:
    """The spec of a CUDA device from its name (``torch.cuda.get_device_name``), ``None`` when unknown."""
    lowered = name.lower()
    for key in ("h200", "h100", "a100", "l4"):
        if key in lowered:
            return GPUS[key]
    return None
