"""The driver: one way to run a pipeline, used by the command line, the tests and Ray jobs.

:func:`run` takes the output's lock, checks the unit size and the model checkpoints, plans (optionally invalidating a
stage first, for ``rerun``), executes the plan on a backend while committing each (stage, unit) record, and returns
the plan and a :class:`RunSummary`. A :class:`RunObserver` receives the plan, every record and the summary as they
happen (the command line's console display is one). :func:`status` reads the records of an output.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from grand_engine.config import ConfigError, PipelineManifest
from grand_engine.io.store import OutputStore, StoreError
from grand_engine.models.base import check_checkpoint
from grand_engine.progress import StageBoard
from grand_engine.runtime.faults import fault_point
from grand_engine.runtime.inline import run_inline
from grand_engine.runtime.lock import OutputLock, output_lock
from grand_engine.runtime.manifests import (
    StageRecord,
    commit_record,
    iter_failures,
    now_iso,
    record_failure,
)
from grand_engine.runtime.pipeline import Pipeline, build_pipeline, engine_versions
from grand_engine.runtime.plan import Plan, make_plan
from grand_engine.runtime.ray_backend import run_ray  # Ray itself is imported inside the backend's functions
from grand_engine.runtime.records import RecordBook, invalidate_pairs, shard_of

if TYPE_CHECKING:
    from grand_engine.runtime.inline import StageEvent

BACKENDS = ("ray", "inline")

log = logging.getLogger(__name__)


@dataclass
class StageTotals:
    """What one stage did in a run: units done, failed and skipped, images, rows, error rows (and their types),
    the seconds its units took together (``busy``) and from its first start to its last end (``wall``)."""

    units: int = 0
    failed: int = 0
    skipped: int = 0
    images: int = 0
    rows: int = 0
    errors: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    first_start: float | None = None  # time.time() readings
    last_end: float | None = None

    @property
    def wall(self) -> float:
        if self.first_start is None or self.last_end is None:
            return 0.0
        return max(0.0, self.last_end - self.first_start)


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
    per_stage: dict[str, StageTotals] = field(default_factory=lambda: defaultdict(StageTotals))

    @property
    def ok(self) -> bool:
        return self.units_failed == 0

    def note(self, stage: str, ended: bool, at: float) -> None:
        """A unit of ``stage`` began or ended at ``at`` (``time.time()``; live news from the backend): the stage's
        wall time runs from its first start to its last end."""
        totals = self.per_stage[stage]
        totals.first_start = at if totals.first_start is None else min(totals.first_start, at)
        if ended:
            totals.last_end = at if totals.last_end is None else max(totals.last_end, at)

    def add(self, record: StageRecord, root: str) -> None:
        """Count a (stage, unit) record; ``root`` is the pipeline's root stage, whose rows are the images read."""
        totals = self.per_stage[record.stage]
        if totals.last_end is None:  # no live news of this stage: time it by its records
            now = time.time()
            totals.first_start = now - record.seconds if totals.first_start is None else totals.first_start
            totals.last_end = now
        if record.status == "done":
            totals.units += 1
            totals.images += record.images
            totals.rows += record.rows
            totals.errors += record.errors
            totals.seconds += record.seconds
            for key, n in (record.error_types or {}).items():
                totals.error_types[key] = totals.error_types.get(key, 0) + n
            self.error_rows += record.errors
            if record.stage == root:
                self.images += record.rows
        elif record.status == "failed":
            totals.failed += 1
        else:
            totals.skipped += 1

    def table(self) -> str:
        """The end-of-run table: the run's totals, one line per stage, then the failures."""
        lines = [
            f"units: {self.units_total} total, {self.units_done} done, {self.units_skipped} already done, "
            f"{self.units_failed} failed",
            f"images: {self.images} read, error rows: {self.error_rows}, time: {self.seconds:.1f} s",
        ]
        if self.per_stage:
            width = max(20, *(len(name) + 1 for name in self.per_stage))
            lines.append(
                f"{'stage':<{width}} {'done':>5} {'failed':>6} {'skipped':>7} {'images':>7} {'rows':>7} "
                f"{'errors':>6} {'busy s':>8} {'wall s':>8}  error types"
            )
            for name, t in self.per_stage.items():
                types = ", ".join(f"{k} {v}" for k, v in sorted(t.error_types.items()))
                lines.append(
                    f"{name:<{width}} {t.units:>5} {t.failed:>6} {t.skipped:>7} {t.images:>7} {t.rows:>7} "
                    f"{t.errors:>6} {t.seconds:>8.2f} {t.wall:>8.2f}  {types}".rstrip()
                )
        for rec in self.failures[:20]:
            lines.append(f"FAILED {rec.stage} {rec.unit_id}: {rec.message}")
        if len(self.failures) > 20:
            lines.append(f"… {len(self.failures) - 20} more failures (grand-engine status OUT)")
        return "\n".join(lines)


class RunObserver:
    """Receives a run's events as they happen. Every method does nothing by default; override what you need."""

    def planned(self, plan: Plan, invalidated: list[tuple[str, str]]) -> None:
        """The plan is made (``invalidated``: the records a rerun removed first)."""

    def progress(self, event: StageEvent) -> None:
        """A (stage, unit) started or ended on a worker (its record is committed later, see :meth:`record`).

        Live news for a display: on the Ray backend it comes from a driver thread while the main thread commits, and
        a unit whose worker died may be reported again."""

    def record(self, record: StageRecord) -> None:
        """A (stage, unit) finished, failed or was skipped; its record is already committed."""

    def finished(self, summary: RunSummary) -> None:
        """The run ended (also when units failed)."""

    def stopped(self, error: BaseException) -> None:
        """The run stopped on ``error`` (raised to the caller next); no summary follows."""


def stage_workload(plan: Plan) -> list[tuple[str, int, int]]:
    """``(stage, units to run, images in them)`` for every stage with work in ``plan``, in pipeline order."""
    sizes = {u.unit_id: len(u.members) or u.span[1] - u.span[0] for u in plan.pending}
    out = []
    for name in plan.pipeline.order:
        units = [u.unit_id for u in plan.pending if name in u.todo]
        if units:
            out.append((name, len(units), sum(sizes[u] for u in units)))
    return out


class ProgressObserver(RunObserver):
    """The live per-stage progress display (:class:`grand_engine.progress.StageBoard`) of a run.

    What :func:`run` shows when no observer is given and ``progress`` is true; the command line's
    :class:`~grand_engine.cli.console.ConsoleReport` builds on it."""

    def __init__(self, board: StageBoard | None = None) -> None:
        self.board = board if board is not None else StageBoard()

    def planned(self, plan: Plan, invalidated: list[tuple[str, str]]) -> None:
        self.board.start(stage_workload(plan))

    def progress(self, event: StageEvent) -> None:
        if event.record is None:
            self.board.started(event.stage, event.unit_id, at=event.at)
        else:
            self._ended(event.record, event.gpu_bytes, event.at)

    def record(self, record: StageRecord) -> None:
        self._ended(record, 0, None)

    def finished(self, summary: RunSummary) -> None:
        self.board.close()

    def stopped(self, error: BaseException) -> None:
        self.board.close()

    def _ended(self, record: StageRecord, gpu_bytes: int, at: float | None) -> None:
        self.board.ended(
            record.stage,
            record.unit_id,
            record.status,
            images=record.images,
            errors=record.errors,
            error_types=record.error_types,
            gpu_bytes=gpu_bytes,
            at=at,
        )


def write_run_json(store: OutputStore, plan: Plan, extra: dict[str, Any]) -> None:
    """Snapshot the resolved configuration, versions and seed (``run.json`` + ``_runs/<time>.json``). ``stages``
    describes every stage the output holds: a run of some stages (``--levels``, ``--stages``) replaces their entries
    and keeps those of the stages an earlier run wrote."""
    pipeline = plan.pipeline
    stages = pipeline.describe()
    try:
        earlier = json.loads(store.read_text("run.json")).get("stages") or {}
    except (FileNotFoundError, ValueError):
        earlier = {}
    payload = {
        "started_at": now_iso(),
        "manifest": pipeline.manifest.name,
        "seed": pipeline.manifest.seed,
        "unit_size": plan.unit_size,
        "shards": plan.shards,
        "units": len(plan.units),
        "stages": {**{name: spec for name, spec in earlier.items() if name not in stages}, **stages},
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
    lock: OutputLock,
    backend: str = "ray",
    address: str | None = None,
    progress: bool = True,
    extra_run_info: dict[str, Any] | None = None,
    observer: RunObserver | None = None,
) -> RunSummary:
    """Run a plan under a held output ``lock`` and commit each (stage, unit) record; return the summary.

    The lower half of :func:`run`, for callers that plan themselves: the lock must be held for the whole call
    (``with output_lock(store) as lock: ...``); a driver whose lock was taken over stops before its next commit.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if observer is None:  # a caller that planned itself: the display still needs the plan
        observer = ProgressObserver() if progress else RunObserver()
        observer.planned(plan, [])
    start = time.perf_counter()
    summary = RunSummary(units_total=len(plan.units))
    summary.units_skipped = sum(1 for u in plan.units if not u.todo)
    failed_units: set[str] = set()
    remaining: dict[str, int] = defaultdict(int)  # pairs still to finish per shard; at 0 the shard is compacted
    for unit in plan.pending:
        remaining[unit.shard] += len(unit.todo)
    touched: set[str] = set()

    def on_record(record: StageRecord) -> None:
        lock.ensure_held()  # never commit after another driver took this output over
        fault_point("driver.before_commit")
        shard = shard_of(record.unit_id)
        if record.status == "done":
            commit_record(store, record)
            plan.book.add(record)
            summary.executed.append((record.stage, record.unit_id))
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
                log.warning("%s %s failed: %s", record.stage, record.unit_id, record.message)
                log.debug("%s %s traceback:\n%s", record.stage, record.unit_id, record.traceback)
            failed_units.add(record.unit_id)
        summary.add(record, plan.pipeline.root)
        observer.record(record)
        touched.add(shard)
        remaining[shard] -= 1
        if remaining[shard] == 0:
            compact(shard)

    def compact(shard: str) -> None:
        lock.ensure_held()
        plan.book.compact_shard(store, shard)
        touched.discard(shard)
        fault_point("driver.after_compact")

    def on_event(event: StageEvent) -> None:
        summary.note(event.stage, ended=event.record is not None, at=event.at)
        observer.progress(event)

    store.remove_orphans()
    write_run_json(store, plan, {"backend": backend, "input": plan.pipeline.input_kind.name, **(extra_run_info or {})})
    log.info("running %d (stage, unit) tasks on the %s backend", plan.pairs_todo(), backend)
    if backend == "inline":
        run_inline(plan, store, on_record, on_event=on_event)
    else:
        run_ray(plan, store, on_record, address=address, on_event=on_event)
    for shard in sorted(touched):  # shards whose last pairs never reported (e.g. a lost Ray task)
        compact(shard)
    fault_point("driver.before_summary")
    summary.units_failed = len(failed_units)
    summary.units_done = len(plan.pending) - summary.units_failed
    summary.seconds = time.perf_counter() - start
    observer.finished(summary)
    return summary


def check_models(pipeline: Pipeline) -> None:
    """Fail fast, before any work, when a checkpoint of the pipeline's stages cannot be resolved; warn once per
    model slot that runs the checkpoint's own code (``trust_remote_code``)."""
    missing = []
    for name, stage in pipeline.stages.items():
        for slot, spec in stage.models.items():
            if spec.trust_remote_code:
                pinned = "" if spec.revision else " (no revision pinned: the code can change under you)"
                log.warning(
                    "%s.%s (%s) sets trust_remote_code: the checkpoint's own Python code will run in every worker%s",
                    name,
                    slot,
                    spec.id,
                    pinned,
                )
            result = check_checkpoint(spec)
            if not result.found:
                missing.append(f"  {name}.{slot}: {spec.id} — {result.message}")
    if missing:
        raise ConfigError(
            "missing model checkpoints:\n"
            + "\n".join(missing)
            + "\n(for the tiny manifest run `grand-engine models tiny` first)"
        )


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
    rerun_stage: str | None = None,
    models_check: bool = True,
    run_info: dict[str, Any] | None = None,
    observer: RunObserver | None = None,
) -> tuple[Plan, RunSummary]:
    """Plan and execute a run under the output's lock: ``grand-engine run`` (and ``rerun``) as a function.

    The order: take the lock; refuse a unit size other than the output's; configure the pipeline (``levels`` or
    ``stages`` select, with ancestors); resolve the shard specs; check every model checkpoint (``models_check``);
    plan; with
    ``rerun_stage``, remove the records of that stage and its descendants and plan again; execute. ``run_info`` is
    recorded in ``run.json`` (the command line records itself there so ``rerun`` can repeat it).
    """
    store = OutputStore(out)
    store.check_writable()
    observer = observer or (ProgressObserver() if progress else RunObserver())
    with output_lock(store, force=force_unlock) as lock:
        size = unit_size or manifest.unit_size
        check_unit_size(store, size)
        pipeline = build_pipeline(manifest, levels=levels, stages=stages)
        pipeline.input_kind.list_shards(shards)  # a mistyped --shards fails here, before the model check
        if models_check:
            check_models(pipeline)
        plan = make_plan(pipeline, shards, store, size, max_units)
        invalidated: list[tuple[str, str]] = []
        if rerun_stage:
            invalidated = invalidate_stage(pipeline, plan, store, rerun_stage)
            log.info("invalidated %d records of %r and its descendants", len(invalidated), rerun_stage)
            plan = make_plan(pipeline, shards, store, size, max_units)
        log.info(
            "%d units from %d shard(s); %d (stage, unit) tasks to run over %d stages",
            len(plan.units),
            len(plan.shards),
            plan.pairs_todo(),
            len(pipeline.order),
        )
        observer.planned(plan, invalidated)
        try:
            summary = execute(
                plan,
                store,
                lock,
                backend=backend,
                address=address,
                progress=progress,
                extra_run_info=run_info,
                observer=observer,
            )
        except BaseException as exc:
            observer.stopped(exc)
            raise
    return plan, summary


def invalidate_stage(pipeline: Pipeline, plan: Plan, store: OutputStore, stage: str) -> list[tuple[str, str]]:
    """Remove the records of ``stage`` and its descendants for the plan's units (``rerun --stage``)."""
    if stage not in pipeline.stages:
        raise ConfigError(f"stage {stage!r} is not part of this pipeline; stages: {', '.join(pipeline.order)}")
    pairs = [(name, unit.unit_id) for name in pipeline.descendants(stage) for unit in plan.units]
    existing = [(name, unit_id) for name, unit_id in pairs if plan.book.get(name, unit_id) is not None]
    invalidate_pairs(store, plan.book, existing)
    return existing


@dataclass
class StageStatus:
    stage: str
    done: int = 0
    images: int = 0
    rows: int = 0
    errors: int = 0
    warnings: int = 0
    failed: int = 0
    error_types: dict[str, int] = field(default_factory=dict)


def status(out: str) -> tuple[dict[str, Any], list[StageStatus]]:
    """Per-stage done/total units, images, rows and error rows — from the records alone (no table is opened)."""
    store = OutputStore(out)
    try:
        run_info = json.loads(store.read_text("run.json"))
    except FileNotFoundError:
        raise ConfigError(
            f"{out} has no run.json: it is not a grand-engine output folder (or no run started)"
        ) from None
    stages: dict[str, StageStatus] = {name: StageStatus(name) for name in run_info.get("stages", {})}
    table = RecordBook.load(store).table
    table = table.filter(pc.equal(table["status"], "done"))
    sums = table.group_by("stage").aggregate(
        [("unit_id", "count"), ("images", "sum"), ("rows", "sum"), ("errors", "sum"), ("warnings", "sum")]
    )
    for row in sums.to_pylist():
        st = stages.setdefault(row["stage"], StageStatus(row["stage"]))
        st.done, st.images, st.rows = row["unit_id_count"], row["images_sum"] or 0, row["rows_sum"] or 0
        st.errors, st.warnings = row["errors_sum"] or 0, row["warnings_sum"] or 0
    typed = table.filter(pc.is_valid(table["error_types"]))
    for stage, types in zip(typed["stage"].to_pylist(), typed["error_types"].to_pylist(), strict=True):
        counts = stages[stage].error_types
        for k, v in json.loads(types).items():
            counts[k] = counts.get(k, 0) + v
    failures = iter_failures(store)
    if failures:  # a failure note outlives the failure only until the pair completes
        done_pairs = set(zip(table["stage"].to_pylist(), table["unit_id"].to_pylist(), strict=True))
        for rec in failures:
            if (rec.stage, rec.unit_id) not in done_pairs:
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
