"""Driving a run: plan, execute on a backend, commit manifest records, summarise; status and rerun."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from grand_engine.config import ConfigError, PipelineManifest
from grand_engine.io.store import OutputStore, StoreError
from grand_engine.runtime.faults import fault_point
from grand_engine.runtime.lock import OutputLock, output_lock
from grand_engine.runtime.manifests import (
    StageRecord,
    commit_record,
    invalidate,
    iter_failures,
    iter_records,
    now_iso,
    record_failure,
)
from grand_engine.runtime.pipeline import Pipeline, build_pipeline, engine_versions
from grand_engine.runtime.plan import Plan, make_plan

BACKENDS = ("ray", "inline")


@dataclass
class RunSummary:
    """What a run did, for the end-of-run table and the exit code."""

    units_total: int = 0
    units_skipped: int = 0  # nothing to do
    units_done: int = 0
    units_failed: int = 0
    images: int = 0
    error_rows: int = 0
    seconds: float = 0.0
    executed: list[tuple[str, str]] = field(default_factory=list)  # (stage, unit) pairs run
    failures: list[StageRecord] = field(default_factory=list)
    per_stage: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    @property
    def ok(self) -> bool:
        return self.units_failed == 0

    def table(self) -> str:
        lines = [
            f"units: {self.units_total} total, {self.units_done} done, {self.units_skipped} already done, "
            f"{self.units_failed} failed",
            f"images: {self.images} read, error rows: {self.error_rows}, time: {self.seconds:.1f} s",
        ]
        if self.per_stage:
            lines.append(f"{'stage':<20} {'units':>6} {'rows':>7} {'errors':>7} {'failed':>7} {'seconds':>9}")
            for name, s in self.per_stage.items():
                lines.append(
                    f"{name:<20} {int(s['units']):>6} {int(s['rows']):>7} {int(s['errors']):>7} "
                    f"{int(s['failed']):>7} {s['seconds']:>9.2f}"
                )
        for rec in self.failures[:20]:
            lines.append(f"FAILED {rec.stage} {rec.unit_id}: {rec.message}")
        return "\n".join(lines)


def write_run_json(store: OutputStore, plan: Plan, extra: dict[str, Any]) -> None:
    """Snapshot the resolved configuration, versions and seed (``run.json`` + ``_runs/<time>.json``)."""
    pipeline = plan.pipeline
    payload = {
        "started_at": now_iso(),
        "manifest": pipeline.manifest.name,
        "seed": pipeline.manifest.seed,
        "unit_size": plan.unit_size,
        "shards": plan.shards,
        "units": len(plan.units),
        "stages": pipeline.describe(),
        "variables": pipeline.manifest.variables,
        "versions": engine_versions(),
        **extra,
    }
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    store.write_text("run.json", text)
    store.write_text(f"_runs/{payload['started_at'].replace(':', '')}.json", text)


def check_unit_size(store: OutputStore, unit_size: int) -> None:
    """Refuse to mix unit sizes in one output: unit ids would no longer name the same images."""
    try:
        previous = json.loads(store.read_text("run.json")).get("unit_size")
    except (FileNotFoundError, ValueError):
        return
    if previous is not None and previous != unit_size:
        raise ConfigError(
            f"{store.uri} was written with --unit-size {previous}; rerun with --unit-size {previous} "
            "or write to a new output folder"
        )


def execute(
    plan: Plan,
    store: OutputStore,
    backend: str = "ray",
    address: str | None = None,
    progress: bool = True,
    extra_run_info: dict[str, Any] | None = None,
    force_unlock: bool = False,
) -> RunSummary:
    """Run a plan and commit each (stage, unit) record; return the summary.

    The output's lock (:mod:`grand_engine.runtime.lock`) is held throughout: a second driver on the same
    output raises :class:`~grand_engine.runtime.lock.OutputLockedError` instead of running.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    with output_lock(store, force=force_unlock) as lock:
        return _execute_locked(plan, store, backend, address, progress, extra_run_info, lock)


def _execute_locked(
    plan: Plan,
    store: OutputStore,
    backend: str,
    address: str | None,
    progress: bool,
    extra_run_info: dict[str, Any] | None,
    lock: OutputLock,
) -> RunSummary:
    start = time.perf_counter()
    summary = RunSummary(units_total=len(plan.units))
    summary.units_skipped = sum(1 for u in plan.units if not u.todo)
    failed_units: set[str] = set()

    def on_record(record: StageRecord) -> None:
        stats = summary.per_stage[record.stage]
        lock.ensure_held()  # never commit after another driver took this output over
        fault_point("driver.before_commit")
        if record.status == "done":
            commit_record(store, record)
            summary.executed.append((record.stage, record.unit_id))
            stats["units"] += 1
            stats["rows"] += record.rows
            stats["errors"] += record.errors
            stats["seconds"] += record.seconds
            summary.error_rows += record.errors
            if record.stage == "images":
                summary.images += record.rows
        else:
            if record.status == "failed":
                try:
                    record_failure(store, record)
                except StoreError as exc:  # e.g. the disk is full: name the table that failed first
                    raise StoreError(
                        f"{record.stage} {record.unit_id} failed: {record.message}; recording that failure failed "
                        f"too: {exc}"
                    ) from exc
                summary.failures.append(record)
            stats["failed"] += 1
            failed_units.add(record.unit_id)

    store.remove_orphans()
    write_run_json(store, plan, {"backend": backend, **(extra_run_info or {})})
    if backend == "inline":
        from grand_engine.runtime.inline import run_inline

        run_inline(plan, store, on_record, progress=progress)
    else:
        from grand_engine.runtime.ray_backend import run_ray

        run_ray(plan, store, on_record, address=address, progress=progress)
    fault_point("driver.before_summary")
    summary.units_failed = len(failed_units)
    summary.units_done = len(plan.pending) - summary.units_failed
    summary.seconds = time.perf_counter() - start
    return summary


def run(
    manifest: PipelineManifest,
    shards: list[str],
    out: str,
    levels: list[int] | None = None,
    stages: list[str] | None = None,
    unit_size: int | None = None,
    max_units: int | None = None,
    backend: str = "ray",
    address: str | None = None,
    progress: bool = True,
    force_unlock: bool = False,
) -> tuple[Plan, RunSummary]:
    """Plan and execute under the output's lock: the library form of ``grand-engine run``."""
    store = OutputStore(out)
    store.check_writable()
    with output_lock(store, force=force_unlock):
        size = unit_size or manifest.unit_size
        check_unit_size(store, size)
        pipeline = build_pipeline(manifest, levels=levels, stages=stages)
        plan = make_plan(pipeline, shards, store, size, max_units)
        summary = execute(plan, store, backend=backend, address=address, progress=progress)
    return plan, summary


def invalidate_stage(pipeline: Pipeline, plan: Plan, store: OutputStore, stage: str) -> list[tuple[str, str]]:
    """Remove the records of ``stage`` and its descendants for the plan's units (``rerun --stage``)."""
    if stage not in pipeline.stages:
        raise ConfigError(f"stage {stage!r} is not part of this pipeline; stages: {', '.join(pipeline.order)}")
    removed = []
    for name in pipeline.descendants(stage):
        for unit in plan.units:
            if invalidate(store, name, unit.unit_id):
                removed.append((name, unit.unit_id))
    return removed


@dataclass
class StageStatus:
    stage: str
    done: int = 0
    images: int = 0
    rows: int = 0
    errors: int = 0
    failed: int = 0
    error_types: dict[str, int] = field(default_factory=dict)


def status(out: str) -> tuple[dict[str, Any], list[StageStatus]]:
    """Per-stage done/total units, images, rows and error rows — from manifest records alone."""
    store = OutputStore(out)
    try:
        run_info = json.loads(store.read_text("run.json"))
    except FileNotFoundError:
        raise ConfigError(
            f"{out} has no run.json: it is not a grand-engine output folder (or no run started)"
        ) from None
    stages: dict[str, StageStatus] = {name: StageStatus(name) for name in run_info.get("stages", {})}
    records = iter_records(store)
    for rec in records:
        st = stages.setdefault(rec.stage, StageStatus(rec.stage))
        st.done += 1
        st.images += rec.images
        st.rows += rec.rows
        st.errors += rec.errors
        for k, v in (rec.error_types or {}).items():
            st.error_types[k] = st.error_types.get(k, 0) + v
    done_units = {(r.stage, r.unit_id) for r in records}
    for rec in iter_failures(store):
        if (rec.stage, rec.unit_id) not in done_units:
            stages.setdefault(rec.stage, StageStatus(rec.stage)).failed += 1
    return run_info, list(stages.values())


def format_status(run_info: dict[str, Any], rows: list[StageStatus]) -> str:
    total = run_info.get("units", 0)
    lines = [
        f"manifest: {run_info.get('manifest')}  units planned in the last run: {total}  "
        f"unit size: {run_info.get('unit_size')}",
        f"{'stage':<20} {'done/total':>11} {'images':>7} {'rows':>7} {'errors':>7} {'failed':>7}  error types",
    ]
    for st in rows:
        types = ", ".join(f"{k}={v}" for k, v in sorted(st.error_types.items()))
        lines.append(
            f"{st.stage:<20} {f'{st.done}/{total}':>11} {st.images:>7} {st.rows:>7} {st.errors:>7} {st.failed:>7}  {types}"
        )
    return "\n".join(lines)
