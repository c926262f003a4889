"""The inline backend: the same plan run in one process (debugging and fast tests)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from grand_engine.io.store import OutputStore
from grand_engine.runtime.executor import UnitRunner
from grand_engine.runtime.manifests import StageRecord
from grand_engine.runtime.plan import Plan, Unit, unit_fingerprint


@dataclass
class StageEvent:
    """Live news of a (stage, unit) from a backend, for the progress display: it started (``record`` None), or it
    ended with ``record`` (not yet committed: the driver commits records as they reach it). ``gpu_bytes`` is the most
    CUDA memory the process that ran it has held (0 without a GPU); ``at`` is when it happened (``time.time()`` where
    it ran: a Ray worker's news reaches the driver in batches)."""

    stage: str
    unit_id: str
    record: StageRecord | None = None
    gpu_bytes: int = 0
    at: float = field(default_factory=time.time)


OnEvent = Callable[[StageEvent], None]


def cuda_peak_bytes() -> int:
    """The most CUDA memory this process has reserved so far; 0 when torch never set CUDA up here."""
    torch = sys.modules.get("torch")  # never import torch for this: a CPU-only process has not loaded it
    try:
        if torch is None or not torch.cuda.is_initialized():
            return 0
        return int(max(torch.cuda.max_memory_reserved(d) for d in range(torch.cuda.device_count())))
    except (RuntimeError, AttributeError, ValueError):  # a torch build without CUDA, or no device left
        return 0


def skipped_record(name: str, unit: Unit, fingerprint: str, failed_inputs: list[str]) -> StageRecord:
    return StageRecord(
        stage=name,
        unit_id=unit.unit_id,
        fingerprint=unit_fingerprint(fingerprint, unit),
        status="skipped",
        message=f"upstream stage(s) {', '.join(failed_inputs)} failed for this unit",
    )


def run_inline(plan: Plan, store: OutputStore, on_record, on_event: OnEvent | None = None) -> None:
    """Run every pending (stage, unit) in topological order, unit by unit.

    ``on_record`` receives each :class:`StageRecord` as soon as it exists (the driver commits the
    manifest record there), so a crash loses at most the (stage, unit) in flight. ``on_event`` hears of each
    (stage, unit) as it starts and as it ends.
    """
    pipeline = plan.pipeline
    runner = UnitRunner(store, pipeline.stages, pipeline.fingerprints, root=pipeline.root)
    for unit in plan.pending:
        failed: set[str] = set()
        for name in pipeline.order:
            if name not in unit.todo:
                continue
            bad = [req for req in pipeline.inputs(name) if req in failed]
            if bad:
                record = skipped_record(name, unit, pipeline.fingerprints[name], bad)
            else:
                if on_event is not None:
                    on_event(StageEvent(name, unit.unit_id))
                record = runner.run(name, unit)
            if record.status != "done":
                failed.add(name)
            if on_event is not None:
                on_event(StageEvent(name, unit.unit_id, record, cuda_peak_bytes()))
            on_record(record)
