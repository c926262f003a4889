"""The runner's performance helpers: the decoded-image cache shared by the pixel stages of one process, and
the garbage-collector scope around ``Stage.process``."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.io.sa1b import index_shard
from grand_engine.io.store import OutputStore
from grand_engine.runtime import executor
from grand_engine.runtime.executor import PixelCache, UnitRunner, new_objects_gc, pixel_cache_budget
from grand_engine.runtime.plan import make_units
from grand_engine.runtime.stage import Stage, UnitInput
from grand_engine.schema import table_schema
from grand_engine.stages.images import ImagesStage
from tests.conftest import write_sa1b_tar

SEEN: dict[str, list[np.ndarray]] = {}


@dataclass
class _PixelSum(Stage):
    """Sum of the decoded pixels; remembers the arrays it was given."""

    requires = ("images",)
    schema = table_schema(("total", pa.int64()))
    needs_pixels = True

    def process_image(self, unit: UnitInput, image_id: str) -> dict:
        array = unit.pixels(image_id)
        SEEN.setdefault(self.name, []).append(array)
        return {"image_id": image_id, "total": int(array.sum())}


@dataclass
class PixelSumA(_PixelSum):
    name = "t_cache_a"


@dataclass
class PixelSumB(_PixelSum):
    name = "t_cache_b"


SIZES = [(40, 30), (48, 34), (56, 38), (64, 42)]  # W, H: 3 600 + 4 896 + 6 384 + 8 064 bytes of RGB


@pytest.fixture
def units(tmp_path: Path):
    shard = write_sa1b_tar(tmp_path / "sa_000000.tar", [(f"sa_{i}", w, h) for i, (w, h) in enumerate(SIZES)])
    return make_units([index_shard(shard)], unit_size=2)  # two units of two images


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the real decoder behind the cache."""
    calls: list[int] = []
    real = executor.load_pixels

    def counting(row):
        calls.append(row["offset"])
        return real(row)

    monkeypatch.setattr(executor, "load_pixels", counting)
    SEEN.clear()
    return calls


def _runner(tmp_path: Path, names: list[str], budget: int | None) -> UnitRunner:
    classes = {"images": ImagesStage, "t_cache_a": PixelSumA, "t_cache_b": PixelSumB}
    stages = {name: classes[name].configure() for name in ["images", *names]}
    return UnitRunner(OutputStore(tmp_path / "out"), stages, dict.fromkeys(stages, "fp"), pixel_cache_bytes=budget)


def _run_all(runner: UnitRunner, unit) -> None:
    for name in runner.stages:
        assert runner.run(name, unit).status == "done"


def test_two_pixel_stages_decode_each_image_once(tmp_path, units, decodes):
    runner = _runner(tmp_path, ["t_cache_a", "t_cache_b"], budget=1 << 20)
    _run_all(runner, units[0])
    assert len(decodes) == 2  # two images, decoded for the first stage only
    assert (runner.pixels.hits, runner.pixels.misses) == (2, 2)
    assert runner.pixels.bytes == 40 * 30 * 3 + 48 * 34 * 3
    for a, b in zip(SEEN["t_cache_a"], SEEN["t_cache_b"], strict=True):
        assert a is b and not a.flags.writeable  # shared, and no stage can change what the next one sees
    with pytest.raises(ValueError):
        SEEN["t_cache_a"][0][0, 0, 0] = 1


def test_budget_admits_images_until_full_and_unit_change_clears(tmp_path, units, decodes):
    runner = _runner(tmp_path, ["t_cache_a", "t_cache_b"], budget=40 * 30 * 3 + 100)  # room for the first image
    _run_all(runner, units[0])
    assert len(decodes) == 3  # image 1 cached; image 2 (4 896 bytes) decoded by both stages
    assert runner.pixels.bytes == 40 * 30 * 3
    _run_all(runner, units[1])  # next unit: the first unit's pixels are dropped
    assert runner.pixels.bytes == 0  # neither 6 384- nor 8 064-byte image fits the budget
    assert len(decodes) == 3 + 4
    assert [int(a.sum()) for a in SEEN["t_cache_a"]] == [int(a.sum()) for a in SEEN["t_cache_b"]]


def test_single_pixel_stage_and_zero_budget_do_not_cache(tmp_path, units, decodes, monkeypatch):
    one = _runner(tmp_path, ["t_cache_a"], budget=1 << 20)
    assert one.pixels.max_bytes == 0  # nothing to share with: no memory held
    monkeypatch.setenv("GRAND_PIXEL_CACHE_MB", "0")
    off = _runner(tmp_path, ["t_cache_a", "t_cache_b"], budget=None)
    assert off.pixels.max_bytes == 0
    _run_all(off, units[0])
    assert len(decodes) == 4 and SEEN["t_cache_a"][0] is not SEEN["t_cache_b"][0]


def test_budget_from_environment(monkeypatch):
    monkeypatch.delenv("GRAND_PIXEL_CACHE_MB", raising=False)
    assert pixel_cache_budget() == executor.PIXEL_CACHE_MB_DEFAULT * 2**20
    monkeypatch.setenv("GRAND_PIXEL_CACHE_MB", "1.5")
    assert pixel_cache_budget() == 1_572_864
    monkeypatch.setenv("GRAND_PIXEL_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="GRAND_PIXEL_CACHE_MB"):
        pixel_cache_budget()


def test_a_failed_decode_is_not_cached(tmp_path):
    cache = PixelCache(1 << 20)
    row = {"source": str(tmp_path / "missing.tar"), "offset": 0, "size": 10}
    for _ in range(2):
        with pytest.raises(OSError):
            cache.load(row)
    assert (cache.misses, cache.bytes) == (2, 0)


def test_gc_scope_sets_older_objects_aside_and_hands_them_back():
    assert gc.get_freeze_count() == 0
    old = [[] for _ in range(10)]
    with new_objects_gc():
        assert gc.get_freeze_count() >= len(old)  # the existing objects are not examined inside
        cycle = []
        cycle.append(cycle)  # garbage made inside is still collected inside
        del cycle
        assert gc.collect() >= 1
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), new_objects_gc():
        raise RuntimeError("a failing stage")
    assert gc.get_freeze_count() == 0  # handed back on the error path too


def test_gc_scope_leaves_another_freeze_and_a_disabled_collector_alone():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with new_objects_gc():
            pass
        # not unfrozen (that would leave 0) and not frozen again (that would add the scope's own objects); a frozen
        # object that another thread of the session releases meanwhile lowers the count, so equality is not asked
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        with new_objects_gc():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_runner_calls_process_inside_the_gc_scope(tmp_path, units):
    seen: list[int] = []

    class Probe(PixelSumA):
        def process_unit(self, unit):
            seen.append(gc.get_freeze_count())
            return super().process_unit(unit)

    runner = _runner(tmp_path, [], budget=0)
    runner.stages["t_cache_a"] = Probe.configure()
    runner.fingerprints["t_cache_a"] = "fp"
    _run_all(runner, units[0])
    assert seen and seen[0] > 0 and gc.get_freeze_count() == 0
