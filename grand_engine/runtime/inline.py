"""The inline backend: the same plan run in one process (debugging and fast tests)."""

from __future__ import annotations

from tqdm import tqdm

from grand_engine.io.store import OutputStore
from grand_engine.runtime.executor import UnitRunner
from grand_engine.runtime.manifests import StageRecord
from grand_engine.runtime.plan import Plan, Unit, unit_fingerprint


def skipped_record(name: str, unit: Unit, fingerprint: str, failed_inputs: list[str]) -> StageRecord:
    return StageRecord(
        stage=name,
        unit_id=unit.unit_id,
        fingerprint=unit_fingerprint(fingerprint, unit),
        status="skipped",
        message=f"upstream stage(s) {', '.join(failed_inputs)} failed for this unit",
    )


def run_inline(plan: Plan, store: OutputStore, on_record, progress: bool = True) -> None:
    """Run every pending (stage, unit) in topological order, unit by unit.

    ``on_record`` receives each :class:`StageRecord` as soon as it exists (the driver commits the
    manifest record there), so a crash loses at most the (stage, unit) in flight.
    """
    pipeline = plan.pipeline
    runner = UnitRunner(store, pipeline.stages, pipeline.fingerprints, root=pipeline.root)
    total = plan.pairs_todo()
    with tqdm(total=total, desc="stages×units", unit="task", disable=not progress or total == 0) as bar:
        for unit in plan.pending:
            failed: set[str] = set()
            for name in pipeline.order:
                if name not in unit.todo:
                    continue
                bad = [req for req in pipeline.inputs(name) if req in failed]
                if bad:
                    record = skipped_record(name, unit, pipeline.fingerprints[name], bad)
                else:
                    bar.set_postfix_str(f"{name} {unit.unit_id}")
                    record = runner.run(name, unit)
                if record.status != "done":
                    failed.add(name)
                on_record(record)
                bar.update(1)
