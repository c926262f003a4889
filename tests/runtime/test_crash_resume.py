"""Crash-safe resume: kill the run with SIGKILL at named points, rerun, and prove nothing is lost or doubled.

Each trial runs ``grand-engine run`` in a subprocess over two shards (17 good images and one corrupt
JPEG, unit size 2: 9 units × 5 stages = 45 (stage, unit) pairs) with ``GRAND_ENGINE_FAULT`` set, so the
process kills itself at the chosen point (see :mod:`grand_engine.runtime.faults`). After each kill the
test checks what the manifests say is done, then *poisons* every output file that has no manifest
record (and plants a stray temporary file) so that reading any of them would show up in the final
tables, and reruns to completion. After every trial:

* every table holds each expected image exactly once (no duplicate ``image_id``), one file per unit,
  with values recomputed by hand from the image sizes; the one error row exists exactly once;
* nothing poisoned or temporary survives or is read;
* the rerun executed exactly the (stage, unit) pairs that had no manifest record before it — counted
  from the manifests, from the run summary and from the execution log of the ``t_*`` stages — and left
  every earlier record untouched.

The Ray trial kills one worker process mid-unit; Ray restarts it and the same run completes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grand_engine.config import load_manifest
from grand_engine.io.store import TMP_MARKER, OutputStore
from grand_engine.runtime.manifests import MANIFESTS, data_path, errors_path
from grand_engine.runtime.pipeline import build_pipeline
from grand_engine.runtime.plan import make_plan
from grand_engine.runtime.records import read_records
from grand_engine.runtime.run import run
from tests.io.shards import box_mask, image_bytes, sa1b_json, write_tar
from tests.runtime.stages_for_tests import executions

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STAGES = ("images", "sa1b", "t_area", "t_double", "t_pixels")
LOGGED = {"t_area", "t_double", "t_pixels"}  # the stages that write the execution log
BAD_ID = "sa_bad"
CHILD = "import sys, tests.runtime.stages_for_tests; from grand_engine.cli import main; sys.exit(main(sys.argv[1:]))"
POISON = "POISON-"

Pair = tuple[str, str]


# -- the corpus --------------------------------------------------------------------------------------
@dataclass
class Corpus:
    shards: Path
    sizes: dict[str, tuple[int, int]]  # good image id -> (width, height)


def _entries(ids: list[str], sizes: dict[str, tuple[int, int]]) -> list[tuple[str, bytes]]:
    members = []
    for n, image_id in enumerate(ids):
        if image_id == BAD_ID:
            jpeg = image_bytes(20, 14)
            members += [(f"{image_id}.jpg", jpeg.replace(b"\xff\xdb", b"\xff\xfe")), (f"{image_id}.json", b"{}")]
            continue
        w, h = sizes[image_id]
        doc = sa1b_json(n, w, h, [box_mask(h, w, 1, 4, 2, 7)])
        members += [
            (f"{image_id}.jpg", image_bytes(w, h, (10 * n, 80, 160))),
            (f"{image_id}.json", json.dumps(doc).encode()),
        ]
    return members


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    folder = tmp_path_factory.mktemp("crash_shards")
    first = [f"sa_{i}" for i in range(4)] + [BAD_ID] + [f"sa_{i}" for i in range(4, 9)]
    second = [f"sa_{100 + i}" for i in range(8)]
    sizes = {image_id: (20 + 2 * k, 14 + k) for k, image_id in enumerate(first + second) if image_id != BAD_ID}
    write_tar(folder / "sa_000000.tar", _entries(first, sizes))
    write_tar(folder / "sa_000001.tar", _entries(second, sizes))
    return Corpus(folder, sizes)


# -- one trial's output folder ---------------------------------------------------------------------------
@dataclass
class Trial:
    root: Path
    corpus: Corpus

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def log(self) -> Path:
        return self.root / "executions.log"

    @property
    def marker(self) -> Path:
        return self.root / "fault.marker"

    @property
    def manifest(self) -> Path:
        path = self.root / "crash.yaml"
        if not path.exists():
            params = f"{{params: {{log: '{self.log}'}}}}"
            path.write_text(
                textwrap.dedent(
                    f"""
                    name: crash
                    unit_size: 2
                    stages:
                      images: {{}}
                      sa1b: {{}}
                      t_area: {params}
                      t_double: {params}
                      t_pixels: {params}
                    """
                )
            )
        return path

    def all_pairs(self) -> list[Pair]:
        """Every (stage, unit) pair in the inline backend's execution order."""
        pipeline = build_pipeline(load_manifest(self.manifest))
        plan = make_plan(pipeline, [str(self.corpus.shards)], OutputStore(self.root / "plan_probe"), unit_size=2)
        assert tuple(pipeline.order) == STAGES
        return [(stage, unit.unit_id) for unit in plan.units for stage in pipeline.order]

    def records(self) -> dict[Pair, str]:
        """The committed records, per-pair files and compacted ones alike: (stage, unit) -> the record's JSON."""
        if not (self.out / MANIFESTS).exists():
            return {}
        return {(r.stage, r.unit_id): r.to_json() for r in read_records(OutputStore(self.out))}

    def cli(self, backend: str = "inline", fault: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("GRAND_ENGINE_FAULT", "RAY_ADDRESS")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        if fault:
            env["GRAND_ENGINE_FAULT"] = f"{fault}@{self.marker}"
        self.marker.unlink(missing_ok=True)
        args = ["run", "--shards", str(self.corpus.shards), "--out", str(self.out), "--manifest", str(self.manifest)]
        args += ["--backend", backend, "--no-progress"]
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as proc:
            output, _ = proc.communicate(timeout=240)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, output.decode(errors="replace"))
        result.pid = proc.pid
        return result


def expected_records_after_kill(todo: list[Pair], point: str, nth: int) -> list[Pair]:
    """The pairs whose records exist after a kill at ``point:nth`` of a run that had ``todo`` to do.

    The inline backend commits each pair's record right after it runs, so a kill at (or inside) the
    n-th pair leaves exactly the first n-1 committed; a kill before the summary leaves all of them.
    """
    if point == "driver.before_summary":
        return list(todo)
    return list(todo[: nth - 1])


def poison_unrecorded_outputs(trial: Trial, recorded: set[Pair]) -> list[Path]:
    """Overwrite every table/error file without a manifest record with wrong rows; plant a stray temp file.

    Image ids get a ``POISON-`` prefix: if the rerun read any of these files instead of recomputing
    them, the prefix would reach a final table (directly or through a downstream stage).
    """
    poisoned = []
    for path in sorted(trial.out.rglob("*.parquet")):
        rel = path.relative_to(trial.out).with_suffix("")
        parts = rel.parts[1:] if rel.parts[0] == "_errors" else rel.parts
        stage, unit = parts[0], "/".join(parts[1:])
        if stage not in STAGES or (stage, unit) in recorded:
            continue
        table = pq.read_table(path)
        bad = pa.array([POISON + i for i in table.column("image_id").to_pylist()], pa.string())
        pq.write_table(table.set_column(0, table.schema.field(0), bad), path)
        poisoned.append(path)
    stage, unit = sorted(recorded)[0] if recorded else ("images", "sa_000000/00000")
    stray = trial.out / f"{data_path(stage, unit)}{TMP_MARKER}0123abcd"
    stray.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image_id": [POISON + "stray"]}), stray)
    return poisoned


def verify_complete(trial: Trial, pairs: list[Pair]) -> None:
    """Exactly-once tables with hand-computed values, one error row, no temp file, every record current."""
    sizes = trial.corpus.sizes
    units = sorted({u for _, u in pairs})
    assert not [p for p in trial.out.rglob("*") if TMP_MARKER in p.name]
    tables = {}
    for stage in STAGES:
        files = sorted(str(p.relative_to(trial.out)) for p in (trial.out / stage).rglob("*") if p.is_file())
        assert files == sorted(data_path(stage, u) for u in units), stage  # one file per unit, nothing else
        table = pa.concat_tables([pq.read_table(trial.out / f) for f in files])
        ids = table.column("image_id").to_pylist()
        assert len(ids) == len(set(ids)), f"{stage}: duplicate image ids {Counter(ids).most_common(3)}"
        assert sorted(ids) == sorted(sizes), stage  # every good image exactly once, nothing poisoned
        tables[stage] = {r["image_id"]: r for r in table.to_pylist()}
    for image_id, (w, h) in sizes.items():
        assert (tables["images"][image_id]["width"], tables["images"][image_id]["height"]) == (w, h)
        [mask] = tables["sa1b"][image_id]["annotations"]
        assert mask["bbox"] == [2.0, 1.0, 7.0, 4.0] and mask["area"] == 15.0
        assert tables["t_area"][image_id]["area"] == w * h
        assert tables["t_double"][image_id]["double"] == 2 * w * h
        assert tables["t_pixels"][image_id]["double"] == 2 * w * h
        assert tables["t_pixels"][image_id]["shape"] == [h, w, 3]
    error_files = sorted(str(p.relative_to(trial.out)) for p in (trial.out / "_errors").rglob("*") if p.is_file())
    assert error_files == [errors_path("images", "sa_000000/00002")]
    [error] = pq.read_table(trial.out / error_files[0]).to_pylist()
    assert (error["image_id"], error["stage"], error["error_type"]) == (BAD_ID, "images", "ImageError")
    recorded = {(r.stage, r.unit_id) for r in read_records(OutputStore(trial.out))}
    assert recorded == set(pairs)
    pipeline = build_pipeline(load_manifest(trial.manifest))
    assert make_plan(pipeline, [str(trial.corpus.shards)], OutputStore(trial.out), unit_size=2).pairs_todo() == 0


def kill_and_check(trial: Trial, all_pairs: list[Pair], point: str, nth: int) -> None:
    """Run until the fault kills the driver; check the committed records are exactly what it predicts."""
    before = trial.records()
    todo = [p for p in all_pairs if p not in before]
    log_before = len(executions(str(trial.log)))
    result = trial.cli(fault=f"{point}:{nth}")
    assert result.returncode == -signal.SIGKILL, result.stdout
    assert trial.marker.read_text().startswith(f"{point} pid={result.pid}")
    after = trial.records()
    assert set(after) == set(before) | set(expected_records_after_kill(todo, point, nth))
    assert all(after[p] == before[p] for p in before)  # committed records are never rewritten
    if point in ("executor.after_table_write", "driver.before_commit"):
        # The pair in flight left its table renamed into place, but no record: not done.
        stage, unit = todo[nth - 1]
        assert (trial.out / data_path(stage, unit)).is_file() and (stage, unit) not in after
    # The killed run executed the logged stages of the committed pairs, in order, and at most the pair in flight.
    logged = executions(str(trial.log))[log_before:]
    committed = [p for p in todo if p in after]
    assert logged[: len([p for p in committed if p[0] in LOGGED])] == [p for p in committed if p[0] in LOGGED]
    assert len(logged) - len([p for p in committed if p[0] in LOGGED]) <= 1


def wait_until_log_is_quiet(log: Path, quiet_s: float = 3.0, limit_s: float = 90.0) -> None:
    """Wait until the execution log has not grown for ``quiet_s`` seconds (at most ``limit_s``)."""
    import time

    deadline = time.monotonic() + limit_s
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = log.stat().st_size if log.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)


def resume_and_check(trial: Trial, all_pairs: list[Pair]) -> list[Pair]:
    """Rerun to completion; only the pairs without a record may run, each once. Returns them."""
    before = trial.records()
    missing = [p for p in all_pairs if p not in before]
    poison_unrecorded_outputs(trial, set(before))
    log_before = len(executions(str(trial.log)))
    _, summary = run(
        load_manifest(trial.manifest), [str(trial.corpus.shards)], str(trial.out), backend="inline", progress=False
    )
    assert summary.ok
    assert sorted(summary.executed) == sorted(missing) and len(summary.executed) == len(set(summary.executed))
    logged = executions(str(trial.log))[log_before:]
    assert sorted(logged) == sorted(p for p in missing if p[0] in LOGGED)
    after = trial.records()
    assert set(after) == set(all_pairs)
    assert all(after[p] == before[p] for p in before)  # records of finished pairs untouched
    verify_complete(trial, all_pairs)
    return missing


# -- the trials ------------------------------------------------------------------------------------------
DRIVER_KILLS = {
    # name: the faults of consecutive killed runs, then one clean rerun
    "first_pair_before_process": [("executor.before_process", 1)],
    "during_stage_before_process": [("executor.before_process", 8)],
    "during_stage_after_process": [("executor.after_process", 14)],
    "between_parquet_rename_and_manifest": [("executor.after_table_write", 21)],
    "driver_holding_record": [("driver.before_commit", 27)],
    "during_final_summary": [("driver.before_summary", 1)],
    "killed_twice": [("executor.after_table_write", 9), ("executor.before_process", 17)],
}


@pytest.mark.parametrize("name", list(DRIVER_KILLS))
def test_driver_killed_then_resumed(name, corpus, tmp_path):
    trial = Trial(tmp_path, corpus)
    all_pairs = trial.all_pairs()
    assert len({u for _, u in all_pairs}) == 9 and len(all_pairs) == 45
    for point, nth in DRIVER_KILLS[name]:
        kill_and_check(trial, all_pairs, point, nth)
    committed = set(trial.records())
    recomputed = resume_and_check(trial, all_pairs)
    assert sorted(recomputed) == sorted(set(all_pairs) - committed)
    # Kills before the n-th pair's record leave n-1 records; the summary kill leaves all of them.
    expected_left = {
        "first_pair_before_process": 45,
        "during_stage_before_process": 45 - 7,
        "during_stage_after_process": 45 - 13,
        "between_parquet_rename_and_manifest": 45 - 20,
        "driver_holding_record": 45 - 26,
        "during_final_summary": 0,
        "killed_twice": 45 - 8 - 16,
    }
    assert len(recomputed) == expected_left[name]


def test_ray_worker_killed_mid_unit_is_restarted_and_the_run_completes(corpus, tmp_path):
    trial = Trial(tmp_path, corpus)
    all_pairs = trial.all_pairs()
    result = trial.cli(backend="ray", fault="executor.before_process:4")
    assert result.returncode == 0, result.stdout[-4000:]
    point, _, pid = trial.marker.read_text().strip().partition(" pid=")
    assert point == "executor.before_process" and int(pid) != result.pid  # a worker died, not the driver
    assert set(trial.records()) == set(all_pairs)
    logged = Counter(executions(str(trial.log)))
    assert set(logged) == {p for p in all_pairs if p[0] in LOGGED}
    # Only the unit the dead worker held ran some stage twice (its rerun overwrote the same files).
    assert len({unit for (_, unit), n in logged.items() if n > 1}) <= 1
    verify_complete(trial, all_pairs)
    # Nothing is left to do: a rerun on the inline backend executes no pair.
    assert resume_and_check(trial, all_pairs) == []


def test_ray_driver_killed_mid_stream_then_resumed(corpus, tmp_path):
    """Workers have written tables the dead driver never recorded: the resume recomputes exactly those pairs."""
    trial = Trial(tmp_path, corpus)
    all_pairs = trial.all_pairs()
    result = trial.cli(backend="ray", fault="driver.before_commit:12")
    assert result.returncode == -signal.SIGKILL, result.stdout[-4000:]
    assert trial.marker.read_text().startswith(f"driver.before_commit pid={result.pid}")
    committed = trial.records()
    assert len(committed) == 11  # the driver commits records one by one; it died holding the 12th
    unrecorded_tables = [p for p in all_pairs if p not in committed and (trial.out / data_path(*p)).is_file()]
    assert unrecorded_tables  # workers ran ahead of the driver: these exist on disk but are not done
    # The dead driver's local Ray may let its workers finish the unit in hand; their writes are atomic and
    # deterministic (harmless), but they would also append to the execution log the resume is judged by.
    wait_until_log_is_quiet(trial.log)
    recomputed = resume_and_check(trial, all_pairs)
    assert sorted(recomputed) == sorted(set(all_pairs) - set(committed)) and len(recomputed) == 34
    assert set(unrecorded_tables) <= set(recomputed)
