"""The whole pipeline end to end: every stage of the tiny manifest over the demo shard on the Ray backend,
then the exports and the explorer (the path `make demo` and a new user take)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grand_engine.cli import main
from grand_engine.config import load_manifest
from grand_engine.demo import build_demo_shard
from grand_engine.runtime.manifests import data_path
from grand_engine.runtime.run import run
from grand_engine.validate import validate_table

pytestmark = pytest.mark.slow

# The demo shard's deliberately broken entries and where each must be reported (see grand_engine/demo.py).
EXPECTED_ERRORS = {
    "sa_6": ("images", "ImageError"),  # a JPEG cut in its scan data
    "sa_7": ("sa1b", "AnnotationSizeMismatch"),  # a mask whose RLE size disagrees with the image
    "sa_8": ("images", "MissingAnnotation"),  # an image without its JSON
}
GOOD = ["sa_1", "sa_2", "sa_3", "sa_4", "sa_5"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_dir, ray_cluster):
    root = tmp_path_factory.mktemp("demo")
    build_demo_shard(root / "shards")
    # The random tiny Llama for the LLM slots: SmolLM2 (when installed) has its own test and would be slow here.
    manifest = load_manifest("tiny", variables={"tiny_dir": str(tiny_dir), "llm_dir": str(tiny_dir / "llama")})
    plan, summary = run(manifest, [str(root / "shards")], str(root / "out"), backend="ray", progress=False)
    return root, plan, summary


def _rows(out: Path, stage: str, unit_id: str) -> list[dict]:
    return pq.read_table(out / data_path(stage, unit_id)).to_pylist()


def test_every_stage_runs_and_every_image_has_a_level4_row_or_an_error_row(demo_run):
    root, plan, summary = demo_run
    out = root / "out"
    assert summary.ok, summary.table()
    (unit,) = plan.units
    assert sorted(summary.executed) == sorted((s, unit.unit_id) for s in plan.pipeline.order)
    for stage in plan.pipeline.order:  # every stage wrote its table
        assert (out / data_path(stage, unit.unit_id)).is_file(), stage
    level4 = {r["image_id"]: r for r in _rows(out, "level4", unit.unit_id)}
    assert sorted(level4) == GOOD
    errors: list[dict] = []
    for stage in ("images", "sa1b"):
        path = out / "_errors" / stage / f"{unit.unit_id}.parquet"
        errors += pq.read_table(path).to_pylist()
    assert {e["image_id"]: (e["stage"], e["error_type"]) for e in errors} == EXPECTED_ERRORS
    for image_id, row in level4.items():  # real work reached the last level
        assert row["objects"] or row["floating_objects"], image_id
        assert row["dense_caption"]["caption"], image_id
        assert row["additional_context"], image_id
        assert all(o["segmentation"] is not None for o in row["objects"] + row["floating_objects"]), image_id


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_every_level_row_passes_the_invariant_validator(demo_run, level):
    root, plan, _ = demo_run
    table = pq.read_table(root / "out" / data_path(f"level{level}", plan.units[0].unit_id))
    assert table.num_rows == len(GOOD)
    assert validate_table(table, level) == {}


def test_second_run_executes_nothing_and_status_reports_it(demo_run, tiny_dir, capsys):
    root, _, _ = demo_run
    manifest = load_manifest("tiny", variables={"tiny_dir": str(tiny_dir), "llm_dir": str(tiny_dir / "llama")})
    plan, summary = run(manifest, [str(root / "shards")], str(root / "out"), backend="ray", progress=False)
    assert plan.pairs_todo() == 0 and summary.executed == [] and summary.units_skipped == 1
    assert main(["status", str(root / "out"), "--json"]) == 0
    stages = {s["stage"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert stages["level4"]["done"] == 1 and stages["level4"]["rows"] == len(GOOD)
    assert stages["images"]["error_types"] == {"ImageError": 1, "MissingAnnotation": 1}


@pytest.mark.parametrize("fmt", ["grandf", "grand", "coco", "refseg", "caption-grounding"])
def test_exports_write_every_format(demo_run, fmt, tmp_path, capsys):
    root, _, _ = demo_run
    dest = tmp_path / f"export-{fmt}.json"
    code = main(["export", str(root / "out"), str(dest), "--format", fmt, "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert dest.is_file() and dest.stat().st_size > 0


def test_explorer_site_is_written(demo_run, tmp_path):
    root, _, _ = demo_run
    assert main(["show", str(root / "out"), "--html", str(tmp_path / "site"), "--no-progress"]) == 0
    index = (tmp_path / "site" / "index.html").read_text()
    for image_id in GOOD:
        assert image_id in index
