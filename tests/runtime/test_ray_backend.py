"""The Ray backend end to end on the shared local 2-CPU cluster, against the inline backend."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from grand_engine.config import load_manifest
from grand_engine.runtime.manifests import data_path, errors_path
from grand_engine.runtime.run import run
from tests.runtime.stages_for_tests import executions

pytestmark = pytest.mark.slow


def test_ray_and_inline_backends_write_identical_tables(ray_cluster, shards, test_manifest, tmp_path):
    manifest_file, log = test_manifest(t_area={"fail_image": "sa_11"})
    manifest = load_manifest(manifest_file)
    plan_i, summary_i = run(manifest, [str(shards)], str(tmp_path / "inline"), backend="inline", progress=False)
    log.unlink()
    plan_r, summary_r = run(manifest, [str(shards)], str(tmp_path / "ray"), backend="ray", progress=False)
    assert summary_r.ok and summary_r.units_done == 4 and summary_r.error_rows == 1
    assert sorted(executions(log)) == sorted(
        (s, u.unit_id) for u in plan_r.units for s in plan_r.pipeline.order if s != "images"
    )
    for unit in plan_r.units:
        for stage in plan_r.pipeline.order:
            a = pq.read_table(tmp_path / "inline" / data_path(stage, unit.unit_id))
            b = pq.read_table(tmp_path / "ray" / data_path(stage, unit.unit_id))
            assert a.equals(b), (stage, unit.unit_id)
    err = errors_path("t_area", "sa_000001/00000")
    assert pq.read_table(tmp_path / "ray" / err).equals(pq.read_table(tmp_path / "inline" / err))

    # resume on Ray: nothing left to do
    log.unlink()
    _, again = run(manifest, [str(shards)], str(tmp_path / "ray"), backend="ray", progress=False)
    assert executions(log) == [] and again.units_skipped == 4


def test_ray_backend_reports_a_failed_unit(ray_cluster, shards, test_manifest, tmp_path):
    manifest_file, _ = test_manifest(t_double={"fail_unit": "sa_000000/00001"})
    manifest = load_manifest(manifest_file)
    _, summary = run(manifest, [str(shards)], str(tmp_path / "out"), backend="ray", progress=False)
    assert summary.units_failed == 1
    assert not (tmp_path / "out" / data_path("t_double", "sa_000000/00001")).exists()
    assert (tmp_path / "out" / data_path("t_pixels", "sa_000001/00001")).exists()


def test_segments_fuse_adjacent_cpu_stages_and_isolate_gpu_stages():
    from grand_engine.runtime.ray_backend import segments
    from tests.runtime.stages_for_tests import AreaStage, DoubleStage, PixelStage

    stages = {
        "images": AreaStage.configure(),
        "t_area": AreaStage.configure(resources={"gpus": 0.25}),
        "t_double": DoubleStage.configure(),
        "t_pixels": PixelStage.configure(),
        "x_gpu": PixelStage.configure(resources={"gpus": 0.5}),
    }
    assert segments(list(stages), stages) == [["images"], ["t_area"], ["t_double", "t_pixels"], ["x_gpu"]]


def test_gpu_stage_on_a_cluster_without_gpus_fails_before_any_work(ray_cluster, shards, test_manifest, tmp_path):
    from grand_engine.config import ConfigError

    manifest_file, log = test_manifest()
    manifest = load_manifest(manifest_file, overrides=["t_double.resources.gpus=0.5"])
    with pytest.raises(ConfigError, match=r"stages \['t_double'\] ask for GPUs but the Ray cluster has none"):
        run(manifest, [str(shards)], str(tmp_path / "out"), backend="ray", progress=False)
    assert executions(log) == []


def test_a_unit_that_kills_its_worker_every_time_is_reported_not_retried_forever(
    ray_cluster, shards, test_manifest, tmp_path
):
    from grand_engine.runtime.ray_backend import TASK_RETRIES

    poison = "sa_000000/00001"
    manifest_file, log = test_manifest(t_double={"kill_unit": poison})
    manifest = load_manifest(manifest_file)
    plan, summary = run(manifest, [str(shards)], str(tmp_path / "out"), backend="ray", progress=False)
    assert summary.units_failed == 1 and summary.units_done == 3
    (failure,) = summary.failures
    assert failure.unit_id == poison and "died on this unit" in failure.message
    assert executions(log).count(("t_double", poison)) == TASK_RETRIES + 1
    assert not (tmp_path / "out" / data_path("t_double", poison)).exists()
    for unit in plan.units:
        if unit.unit_id != poison:
            assert (tmp_path / "out" / data_path("t_pixels", unit.unit_id)).exists()
