"""Resume, rerun and atomicity on the inline backend with the t_* test stages."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from grand_engine.config import load_manifest
from grand_engine.io.store import OutputStore
from grand_engine.runtime.lock import output_lock
from grand_engine.runtime.manifests import data_path, manifest_path
from grand_engine.runtime.pipeline import build_pipeline
from grand_engine.runtime.plan import make_plan
from grand_engine.runtime.records import invalidate, read_records
from grand_engine.runtime.run import execute, invalidate_stage, run
from tests.runtime.stages_for_tests import executions

STAGES = ["t_area", "t_double", "t_pixels"]


def _run(manifest_path: Path, shards: Path, out: Path, **kw):
    manifest = load_manifest(manifest_path, overrides=kw.pop("overrides", None))
    return run(manifest, [str(shards)], str(out), backend="inline", progress=False, **kw)


def test_first_run_executes_every_pair_then_nothing(shards, test_manifest, tmp_path):
    manifest, log = test_manifest()
    out = tmp_path / "out"
    plan, summary = _run(manifest, shards, out)
    assert len(plan.units) == 4  # 2 shards × 4 images, unit size 2
    assert summary.ok and summary.units_done == 4
    assert sorted(executions(log)) == sorted((s, u.unit_id) for u in plan.units for s in STAGES)
    assert summary.images == 8

    log.unlink()
    plan2, summary2 = _run(manifest, shards, out)
    assert executions(log) == []
    assert plan2.pairs_todo() == 0 and summary2.units_skipped == 4


def test_deleted_manifest_records_rerun_exactly_those_pairs(shards, test_manifest, tmp_path):
    manifest, log = test_manifest()
    out = tmp_path / "out"
    plan, _ = _run(manifest, shards, out)
    store = OutputStore(out)
    unit_a, unit_b = plan.units[1].unit_id, plan.units[3].unit_id
    assert invalidate(store, "t_double", unit_a)
    assert invalidate(store, "t_area", unit_b)
    log.unlink()

    _, summary = _run(manifest, shards, out)
    assert sorted(executions(log)) == sorted([("t_double", unit_a), ("t_area", unit_b)])
    assert sorted(summary.executed) == sorted([("t_double", unit_a), ("t_area", unit_b)])

    log.unlink()
    _run(manifest, shards, out)
    assert executions(log) == []


def test_rerun_stage_recomputes_it_and_descendants_only(shards, test_manifest, tmp_path):
    manifest_file, log = test_manifest()
    out = tmp_path / "out"
    plan, _ = _run(manifest_file, shards, out)
    log.unlink()
    store = OutputStore(out)
    pipeline = build_pipeline(load_manifest(manifest_file))
    removed = invalidate_stage(pipeline, plan, store, "t_double")
    assert sorted({s for s, _ in removed}) == ["t_double", "t_pixels"]
    replan = make_plan(pipeline, [str(shards)], store, unit_size=2)
    with output_lock(store) as lock:
        execute(replan, store, lock, backend="inline", progress=False)
    ran = executions(log)
    assert sorted({s for s, _ in ran}) == ["t_double", "t_pixels"]
    assert len(ran) == 2 * len(plan.units)


def test_changed_parameter_reruns_that_stage_and_descendants(shards, test_manifest, tmp_path):
    manifest, log = test_manifest()
    out = tmp_path / "out"
    _run(manifest, shards, out)
    log.unlink()
    plan, _ = _run(manifest, shards, out, overrides=["t_area.scale=3"])
    assert sorted({s for s, _ in executions(log)}) == ["t_area", "t_double", "t_pixels"]
    table = pq.read_table(out / data_path("t_double", plan.units[0].unit_id))
    first = pq.read_table(out / data_path("images", plan.units[0].unit_id)).to_pylist()[0]
    assert table.column("double").to_pylist()[0] == 2 * 3 * first["width"] * first["height"]


def test_stage_raising_mid_unit_leaves_no_parquet_and_no_manifest(shards, test_manifest, tmp_path):
    manifest_file, _ = test_manifest()
    out = tmp_path / "out"
    manifest = load_manifest(manifest_file)
    pipeline = build_pipeline(manifest)
    store = OutputStore(out)
    plan = make_plan(pipeline, [str(shards)], store, unit_size=2)
    bad = plan.units[2].unit_id
    manifest = load_manifest(manifest_file, overrides=[f"t_double.fail_unit={bad}"])
    plan2, summary = run(manifest, [str(shards)], str(out), backend="inline", progress=False)
    assert not summary.ok and summary.units_failed == 1
    assert not (out / data_path("t_double", bad)).exists()
    assert not (out / manifest_path("t_double", bad)).exists()
    # the descendant was skipped, not run; other units completed
    assert not (out / manifest_path("t_pixels", bad)).exists()
    done = {(r.stage, r.unit_id) for r in read_records(store)}
    for unit in plan2.units:
        if unit.unit_id != bad:
            assert ("t_pixels", unit.unit_id) in done
    assert (out / "_failures" / "t_double" / f"{bad}.json").exists()
    assert any("injected failure" in f.message for f in summary.failures)


def test_per_image_error_rows_exclude_image_downstream(shards, test_manifest, tmp_path):
    manifest, _ = test_manifest(t_area={"fail_image": "sa_2"})
    out = tmp_path / "out"
    plan, summary = _run(manifest, shards, out)
    assert summary.ok and summary.error_rows == 1
    unit = next(u for u in plan.units if any(m.image_id == "sa_2" for m in u.members))
    errors = pq.read_table(out / "_errors" / "t_area" / f"{unit.unit_id}.parquet").to_pylist()
    assert errors == [
        {
            "image_id": "sa_2",
            "stage": "t_area",
            "unit_id": unit.unit_id,
            "error_type": "ValueError",
            "message": "refusing sa_2",
            "severity": "error",
        }
    ]
    for stage in ("t_area", "t_double", "t_pixels"):
        ids = pq.read_table(out / data_path(stage, unit.unit_id)).column("image_id").to_pylist()
        assert "sa_2" not in ids and len(ids) == 1


def test_orphan_temp_files_are_removed_on_start(shards, test_manifest, tmp_path):
    manifest, _ = test_manifest()
    out = tmp_path / "out"
    _run(manifest, shards, out)
    orphan = out / "t_area" / "sa_000000" / "00000.parquet.tmp-deadbeef"
    orphan.write_bytes(b"partial")
    _run(manifest, shards, out)
    assert not orphan.exists()
