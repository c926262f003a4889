"""The Ray backend: one Ray Data row = one work unit, one actor pool per stage.

This is the only module that imports Ray. Stages with pending work become ``map_batches`` actor pools
(``batch_size=1``: a batch is one unit, so Ray never splits a unit): each GPU stage its own pool with its
fractional ``num_gpus`` and an explicit small ``num_cpus``, each stage asking for custom resources its
own pool placed on the nodes that have them, and each run of adjacent plain CPU stages one shared pool.
Actors run the stage through the shared :class:`~grand_engine.runtime.executor.UnitRunner`, which
writes the unit's table atomically; the row then carries the stage's record (which names the Ray node
that ran it, ``host/<node id prefix>``) downstream. The driver commits manifest records as rows come out of
the last operator, so the driver stays the only manifest writer. For the progress display, workers also post each
(stage, unit) as it starts and ends to a small :class:`EventInbox` actor that a driver thread empties every
:data:`EVENT_POLL_S` (a row leaves the pipeline only after its last stage, far too late to show which stage runs).

Worker output (prints, warnings, Ray's own logs) is forwarded to the driver's stderr (``log_to_driver``), which
the command line sends to the run's log file; a worker's ``grand_engine`` log records carry
:data:`WORKER_LOG_MARK` so that the driver can show its warnings on the console (:func:`worker_log_record`).

A worker process that dies (OOM kill, node loss) is restarted by Ray Data and its unit runs again on the new
actor (output names are deterministic, so the rerun overwrites rather than duplicates); a unit whose worker
dies ``TASK_RETRIES + 1`` times is reported as failed for this run instead of stalling it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np

from grand_engine.config import ConfigError
from grand_engine.io.store import OutputStore
from grand_engine.runtime.executor import UnitRunner
from grand_engine.runtime.inline import OnEvent, StageEvent, cuda_peak_bytes, skipped_record
from grand_engine.runtime.manifests import StageRecord, host_name
from grand_engine.runtime.plan import Plan, Unit, unit_fingerprint
from grand_engine.runtime.stage import Stage

NODE_ID_CHARS = 12
"""How much of the Ray node id a record's ``host`` carries (``host/<prefix>``)."""
EVENT_POLL_S = 0.5
"""Seconds between two collections of the workers' progress events by the driver."""
WORKER_LOG_MARK = "[grand-engine worker]"
"""Starts every line a worker's ``grand_engine`` loggers write, so the driver can tell them from other output."""
QUIET_LIBRARIES = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
"""Set in every worker's environment before it starts (tqdm reads its settings when first imported, which Ray's
worker does at start-up): the libraries' own download and weight-conversion bars (e.g. the GGUF loader's, one per
model load per worker) say nothing the run's display does not."""


class EventInbox:
    """A Ray actor holding the workers' progress events until the driver takes them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any] | None, int, float]] = []

    def put(self, stage: str, unit_id: str, record: dict[str, Any] | None, gpu_bytes: int, at: float) -> None:
        self.events.append((stage, unit_id, record, gpu_bytes, at))

    def take(self) -> list[tuple[str, str, dict[str, Any] | None, int, float]]:
        out, self.events = self.events, []
        return out


def setup_worker_logging(stages: dict[str, Stage]) -> None:
    """In a worker: the records (INFO and up) of grand-engine's loggers and of the stages' modules go to stderr,
    marked with :data:`WORKER_LOG_MARK`."""
    names = {"grand_engine", *(type(stage).__module__ for stage in stages.values())}
    handler = logging.StreamHandler(sys.stderr)
    handler.grand_engine_worker = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(f"{WORKER_LOG_MARK} %(levelname)s %(name)s: %(message)s"))
    for name in sorted(names):
        logger = logging.getLogger(name)
        if name.startswith("grand_engine.") or any(getattr(h, "grand_engine_worker", False) for h in logger.handlers):
            continue  # grand_engine's own handler covers its modules
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


_WORKER_LINE = re.compile(re.escape(WORKER_LOG_MARK) + r" (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)")


def worker_log_record(line: str) -> logging.LogRecord | None:
    """The log record a worker line written by :func:`setup_worker_logging` carries (whatever prefix Ray put before
    it), or None for any other line."""
    match = _WORKER_LINE.search(line)
    if match is None:
        return None
    level, name, message = match.groups()
    return logging.makeLogRecord(
        {"name": name, "levelno": getattr(logging, level), "levelname": level, "msg": message.rstrip()}
    )


def compute_kwargs(replicas: int) -> dict[str, Any]:
    """The actor-pool argument of ``map_batches`` for the installed Ray.

    Ray 2.9 replaced ``compute=ActorPoolStrategy`` with ``concurrency=``; Ray 2.51 reversed that.
    """
    import ray  # deferred: Ray loads only when a run uses this backend
    from ray.data import ActorPoolStrategy

    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    if (major, minor) >= (2, 51) or (major, minor) < (2, 9):
        return {"compute": ActorPoolStrategy(size=replicas)}
    return {"concurrency": replicas}


class StageWorker:
    """A Ray Data callable class running one segment of stages (one GPU stage, or adjacent CPU stages)."""

    def __init__(
        self,
        store_uri: str,
        stages: dict[str, Stage],
        fingerprints: dict[str, str],
        root: str = "images",
        events: Any = None,
    ) -> None:
        setup_worker_logging(stages)
        self.events = events  # the driver's EventInbox (None: no progress events)
        self.stages = stages
        self.fingerprints = fingerprints
        self.runner = UnitRunner(OutputStore(store_uri), stages, fingerprints, root=root)
        import ray  # deferred: Ray loads only when a run uses this backend

        # Which node ran each (stage, unit): host name plus the Ray node id's prefix (several Ray nodes
        # may share a host, as in tests), recorded in the manifest record.
        self.host = f"{host_name()}/{ray.get_runtime_context().get_node_id()[:NODE_ID_CHARS]}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out_records = []
        for unit_json, records_json in zip(batch["unit"], batch["records"], strict=True):
            unit = Unit.from_json(json.loads(unit_json))
            records = json.loads(records_json)
            for name, stage in self.stages.items():
                if name not in unit.todo:
                    continue
                failed = {r["stage"] for r in records if r["status"] != "done"}
                bad = [req for req in stage.inputs() if req in failed]
                if bad:
                    record = skipped_record(name, unit, self.fingerprints[name], bad)
                else:
                    self._post(name, unit.unit_id, None)
                    record = self.runner.run(name, unit)
                    record.host = self.host
                records.append(asdict(record))
                self._post(name, unit.unit_id, records[-1])
            out_records.append(json.dumps(records))
        return {"unit": batch["unit"], "records": np.array(out_records, dtype=object)}

    def _post(self, stage: str, unit_id: str, record: dict[str, Any] | None) -> None:
        if self.events is not None:  # fire and forget: the driver's display must never slow the work down
            brief = None if record is None else {k: v for k, v in record.items() if k != "traceback"}
            self.events.put.remote(stage, unit_id, brief, cuda_peak_bytes(), time.time())


def _plain_cpu(stage: Stage) -> bool:
    return stage.resources.gpus == 0 and not stage.resources.custom


TASK_RETRIES = 2
"""A unit whose worker process dies (killed by the OS for memory, a segfault in a native library) is retried
on a restarted actor this many times, then reported as failed for this run instead of being retried forever."""


def bounded_retries() -> dict[str, Any]:
    """``map_batches`` keywords bounding the retries of a unit whose worker dies (actors restart without limit).

    Ray Data defaults to unlimited task retries, so one poison unit would stall a run; Ray 2.60 accepts the
    bound only through the deprecated ``**ray_remote_args``, whose warning is silenced here.
    """
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
    return {"max_restarts": -1, "max_task_retries": TASK_RETRIES}


def lost_unit_record(plan: Plan, unit: Unit) -> StageRecord:
    """The failure record of a unit whose worker died on every attempt (its first pending stage is blamed)."""
    stage = unit.todo[0]
    return StageRecord(
        stage=stage,
        unit_id=unit.unit_id,
        fingerprint=unit_fingerprint(plan.pipeline.fingerprints[stage], unit),
        status="failed",
        message=(
            f"the worker process died on this unit {TASK_RETRIES + 1} times (out of memory? a crash in a native "
            "library?); it was given up for this run and will be retried by the next one"
        ),
    )


def segments(order: list[str], stages: dict[str, Stage]) -> list[list[str]]:
    """Group stages into actor pools: the stages of one ``resources.group`` together, each other GPU or
    custom-resource stage alone, and runs of adjacent plain CPU stages together.

    Fusing CPU stages saves a worker process (and its imports) per stage and a hop per unit; a GPU stage keeps its
    own pool so its fractional GPU share and batch size stay its own, unless the manifest groups it with others
    (their models then share one process and GPU, and each image is decoded once for all of them); a stage that
    asks for a custom resource keeps its own so that only it is pinned to the nodes that have it. A group's
    members need not be adjacent: the pools are ordered so that every stage still comes after its inputs, and a
    group that cannot be (a member needs a stage that needs another member) is refused.
    """
    nodes = _contract_groups(order, stages)
    out: list[list[str]] = []
    for members in nodes:
        grouped = bool(stages[members[0]].resources.group)
        cpu = not grouped and _plain_cpu(stages[members[0]])
        previous = out[-1] if out else []
        if (
            cpu
            and previous
            and not stages[previous[0]].resources.group
            and all(_plain_cpu(stages[s]) for s in previous)
        ):
            previous.append(members[0])
        else:
            out.append(list(members))
    return out


def _contract_groups(order: list[str], stages: dict[str, Stage]) -> list[list[str]]:
    """The stages in an order where the members of each group are adjacent (a group is one node; within a group,
    and between nodes, the stages' order is kept where the inputs allow)."""
    node_of = {n: (stages[n].resources.group or n) for n in order}
    members: dict[str, list[str]] = {}
    for name in order:
        members.setdefault(node_of[name], []).append(name)
    graph = {
        node: sorted({node_of[req] for m in names for req in stages[m].inputs() if req in node_of} - {node})
        for node, names in members.items()
    }
    position = {node: order.index(names[0]) for node, names in members.items()}
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = " -> ".join(path[path.index(node) :] + [node])
            raise ConfigError(
                f"resources.group cannot run as one actor pool: {cycle} (a member needs a stage that needs another "
                "member); put those stages in separate groups"
            )
        state[node] = 1
        for dep in sorted(graph[node], key=position.get):
            visit(dep, [*path, node])
        state[node] = 2
        done.append(node)

    for node in sorted(members, key=position.get):
        visit(node, [])
    return [members[node] for node in done]


def pool_gpus(members: dict[str, Stage]) -> float:
    """The GPU share one actor of a pool asks for: a group's members are resident together, so their shares add up
    (at most one GPU: one actor places its models on one device); a single stage asks for its own."""
    gpus = [st.resources.gpus for st in members.values()]
    if not any(st.resources.group for st in members.values()):
        return max(gpus)
    total = round(sum(gpus), 6)
    if total > 1:
        group = next(st.resources.group for st in members.values())
        raise ConfigError(
            f"resources.group {group!r} asks for {total:g} GPUs in one actor ({', '.join(members)}); one actor uses "
            "one GPU: lower the members' resources.gpus so that they add up to at most 1"
        )
    return total


def custom_resources(members: dict[str, Stage]) -> dict[str, float]:
    """The custom resources one actor of a pool asks for: the largest ask of each name among its members."""
    out: dict[str, float] = {}
    for stage in members.values():
        for key, amount in stage.resources.custom.items():
            out[key] = max(out.get(key, 0.0), amount)
    return out


_BUILTIN = {"CPU", "GPU", "memory", "object_store_memory"}


def check_custom_resources(stages: dict[str, Stage], cluster: dict[str, float]) -> None:
    """Fail before any work when a stage asks for a custom resource that no node of the cluster has
    (its actors could never be placed and the run would wait forever)."""
    missing: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for key, amount in stage.resources.custom.items():
            if cluster.get(key, 0.0) < amount:
                missing.setdefault(key, []).append(name)
    if missing:
        parts = [f"{key!r} (asked by {sorted(names)})" for key, names in sorted(missing.items())]
        raise ConfigError(
            f"custom resource(s) {', '.join(parts)} not available on the Ray cluster "
            f"(its custom resources: {dict(sorted((k, v) for k, v in cluster.items() if k not in _BUILTIN and ':' not in k))}); "
            "start a node with e.g. `ray start --address HEAD:6379 --resources '{\"NAME\": 1}'`, or drop the ask "
            "with --set STAGE.resources.custom.NAME=0"
        )


def _init_ray(address: str | None) -> bool:
    """Connect to ``address``/``RAY_ADDRESS`` or start a local Ray; return whether we started it.

    Workers' output is forwarded to the driver (``log_to_driver``): the command line writes it to the run's log
    file, and shows the warnings of grand-engine's own loggers on the console.
    """
    import ray  # deferred: Ray loads only when a run uses this backend

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    # a setting of the user's (or of the Ray job's runtime env, which would refuse a second value) is left alone
    env_vars = {k: v for k, v in QUIET_LIBRARIES.items() if k not in os.environ}
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "logging_level": "WARNING", "log_to_driver": True}
    if address is None:
        # A local cluster: make the driver's import path visible to workers (stages defined outside
        # the installed package, e.g. in a user's plugin module next to the manifest).
        env_vars["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p and os.path.isdir(p))
        kwargs["include_dashboard"] = False
    else:
        kwargs["address"] = address
    ray.init(runtime_env={"env_vars": env_vars}, **kwargs)
    return address is None


class EventPump:
    """A driver thread that takes the workers' events from the inbox every :data:`EVENT_POLL_S` and hands them
    to ``on_event``; :meth:`stop` takes the last ones."""

    def __init__(self, inbox: Any, on_event: OnEvent) -> None:
        self.inbox = inbox
        self.on_event = on_event
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="grand-events", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(EVENT_POLL_S):
            self.drain()

    def drain(self) -> None:
        import ray  # deferred: Ray loads only when a run uses this backend

        try:
            events = ray.get(self.inbox.take.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - the display must never stop the run; the records still arrive
            return
        for stage, unit_id, record, gpu_bytes, at in events:
            rec = None if record is None else StageRecord.from_dict(record)
            self.on_event(StageEvent(stage, unit_id, rec, gpu_bytes, at))

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=60)
        self.drain()


def _scaled_cpus(stages: dict[str, Stage], groups: list[list[str]], cluster_cpus: float) -> list[float]:
    """Each pool's ``num_cpus``, scaled down when the pools would not fit the cluster together.

    Every actor pool must be placed at once for the streaming pipeline to make progress; on a small
    machine the manifest's CPU asks are treated as relative weights instead of failing to schedule.
    """
    asks = [max(stages[n].resources.cpus for n in g) for g in groups]
    replicas = [max(stages[n].resources.replicas for n in g) for g in groups]
    total = sum(a * r for a, r in zip(asks, replicas, strict=True))
    budget = max(cluster_cpus - 0.5, 0.5)  # leave room for Ray Data's own tasks
    factor = min(1.0, budget / total) if total else 1.0
    return [max(0.01, round(a * factor, 3)) for a in asks]


def run_ray(
    plan: Plan, store: OutputStore, on_record, address: str | None = None, on_event: OnEvent | None = None
) -> None:
    """Run every pending (stage, unit) on Ray; ``on_record`` gets each record on the driver, ``on_event`` (from
    a driver thread) each (stage, unit) as a worker starts and ends it."""
    pending = plan.pending
    if not pending:
        return  # nothing to do: do not pay for starting Ray
    import ray  # deferred: Ray loads only when a run uses this backend

    started = _init_ray(address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver's own display (on_event) shows the stages instead
        ctx.max_errored_blocks = -1  # a unit given up after its retries must not abort the other units
        pipeline = plan.pipeline
        active = [n for n in pipeline.order if any(n in u.todo for u in pending)]
        resources = ray.cluster_resources()
        gpus_needed = {n: pipeline.stages[n].resources.gpus for n in active if pipeline.stages[n].resources.gpus > 0}
        if gpus_needed and resources.get("GPU", 0) <= 0:
            raise ConfigError(
                f"stages {sorted(gpus_needed)} ask for GPUs but the Ray cluster has none; run on a GPU cluster or "
                "override with --set STAGE.resources.gpus=0 (or use a CPU manifest such as `tiny`)"
            )
        check_custom_resources({n: pipeline.stages[n] for n in active}, resources)
        groups = segments(active, pipeline.stages)
        cpus = _scaled_cpus(pipeline.stages, groups, resources.get("CPU", 1.0))
        items = [{"unit": json.dumps(u.to_json()), "records": "[]"} for u in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        inbox = ray.remote(num_cpus=0)(EventInbox).remote() if on_event is not None else None
        for group, num_cpus in zip(groups, cpus, strict=True):
            members = {name: pipeline.stages[name] for name in group}
            gpus = pool_gpus(members)
            custom = custom_resources(members)
            ds = ds.map_batches(
                StageWorker,
                batch_size=1,
                fn_constructor_kwargs={
                    "store_uri": store.uri,
                    "stages": members,
                    "fingerprints": pipeline.fingerprints,
                    "root": pipeline.root,
                    "events": inbox,
                },
                num_cpus=num_cpus,
                num_gpus=gpus or None,
                **({"resources": custom} if custom else {}),
                **compute_kwargs(max(st.resources.replicas for st in members.values())),
                **bounded_retries(),
            )
        finished: set[str] = set()
        pump = EventPump(inbox, on_event) if on_event is not None else None
        try:
            for row in ds.iter_rows():
                records = json.loads(row["records"])
                finished.add(json.loads(row["unit"])["unit_id"])
                for rec in records:
                    on_record(StageRecord.from_dict(rec))
        finally:
            if pump is not None:
                pump.stop()
        for unit in pending:  # units whose worker kept dying: report them instead of hanging or aborting
            if unit.unit_id not in finished:
                on_record(lost_unit_record(plan, unit))
    finally:
        if started:
            ray.shutdown()
