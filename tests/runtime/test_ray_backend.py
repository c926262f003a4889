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


def test_a_group_of_stages_is_one_pool_placed_after_its_inputs():
    from grand_engine.runtime.ray_backend import pool_gpus, segments
    from tests.runtime.stages_for_tests import AreaStage, DoubleStage, PixelStage

    stages = {
        "images": AreaStage.configure(),
        "t_area": AreaStage.configure(resources={"gpus": 0.25, "group": "vision"}),
        "t_double": DoubleStage.configure(),
        "t_area2": AreaStage.configure(resources={"gpus": 0.5, "group": "vision"}),  # needs only images
        "t_pixels": PixelStage.configure(),
    }
    # the group's members run together, before t_double (which needs t_area); the CPU stages after it fuse
    assert segments(list(stages), stages) == [["images"], ["t_area", "t_area2"], ["t_double", "t_pixels"]]
    assert pool_gpus({n: stages[n] for n in ("t_area", "t_area2")}) == 0.75  # co-resident: the shares add up
    assert pool_gpus({"t_pixels": stages["t_pixels"]}) == 0


def test_a_group_that_would_reorder_its_inputs_or_overfill_a_gpu_is_refused():
    from grand_engine.config import ConfigError
    from grand_engine.runtime.ray_backend import pool_gpus, segments
    from tests.runtime.stages_for_tests import AreaStage, DoubleStage, PixelStage

    stages = {
        "images": AreaStage.configure(),
        "t_area": AreaStage.configure(resources={"group": "g"}),
        "t_double": DoubleStage.configure(),  # needs t_area, and t_pixels needs it
        "t_pixels": PixelStage.configure(resources={"group": "g"}),
    }
    with pytest.raises(ConfigError, match="resources.group cannot run as one actor pool: g -> t_double -> g"):
        segments(list(stages), stages)
    heavy = {n: AreaStage.configure(resources={"gpus": 0.6, "group": "big"}) for n in ("a", "b")}
    with pytest.raises(ConfigError, match="resources.group 'big' asks for 1.2 GPUs in one actor"):
        pool_gpus(heavy)


def test_grouped_stages_on_ray_write_the_same_tables(ray_cluster, shards, test_manifest, tmp_path):
    manifest_file, _ = test_manifest()
    grouped = ["t_area.resources.group=pair", "t_double.resources.group=pair"]
    run(load_manifest(manifest_file), [str(shards)], str(tmp_path / "inline"), backend="inline", progress=False)
    plan, summary = run(
        load_manifest(manifest_file, overrides=grouped), [str(shards)], str(tmp_path / "ray"), progress=False
    )
    assert summary.ok and summary.units_done == 4
    for unit in plan.units:
        for stage in plan.pipeline.order:
            a = pq.read_table(tmp_path / "inline" / data_path(stage, unit.unit_id))
            assert a.equals(pq.read_table(tmp_path / "ray" / data_path(stage, unit.unit_id))), (stage, unit.unit_id)


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
