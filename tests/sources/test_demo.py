"""``grand-engine sources demo`` end to end through the driver (inline backend), with the random tiny Llama.

The random Llama never writes the entity names or phrases, so every record that reaches ``source_caption`` must end
as a ``PhraseMissing`` error row after its rounds, and the exported files hold no record: the run itself, the input
kinds, every stage and the exports still go through the real code. (With SmolLM2 installed, ``grand-engine sources
demo`` uses it instead; its timings are in docs/grandf_sources.md.)
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from grand_engine.demo_sources import run_demo
from grand_engine.models import tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources_demo")
    checkpoints = root / "tiny"
    for name in ("sam-vit-tiny", "llama"):
        tiny.build_one(name, checkpoints)
    variables = {"tiny_dir": str(checkpoints), "llm_dir": str(checkpoints / "llama")}
    return root, run_demo(root / "demo", backend="inline", variables=variables)


def test_every_source_runs_and_reports_its_bad_records(demo):
    root, report = demo
    assert report.ok, report.summary()
    runs = {r.source: r for r in report.runs}
    assert {s: r.records for s, r in runs.items()} == {"openpsg": 4, "refcocog": 2, "flickr30k": 3}
    assert runs["openpsg"].errors == Counter(
        {
            ("source_records", "NoRelation"): 1,
            ("source_records", "MissingImage"): 1,
            ("source_caption", "PhraseMissing"): 2,
        }
    )
    assert runs["refcocog"].errors == Counter({("source_caption", "PhraseMissing"): 2})
    assert runs["flickr30k"].errors == Counter(
        {
            ("source_records", "MalformedSentence"): 1,
            ("source_caption", "PhraseMissing"): 2,
        }
    )
    assert all(r.rows == 0 for r in runs.values())  # no caption passed: no GCG record


def test_the_six_glamm_files_are_written(demo):
    root, report = demo
    folder = root / "demo" / "GranDf" / "annotations" / "train"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "OpenPsgGCG_train.json",
        "OpenPsgGCG_val.json",
        "RefCOCOg_GCG_train.json",
        "RefCOCOg_GCG_val.json",
        "flickr_mergedGT_GCG_train.json",
        "flickr_mergedGT_GCG_val.json",
    ]
    assert json.loads((folder / "OpenPsgGCG_train.json").read_text()) == []
    flickr = json.loads((folder / "flickr_mergedGT_GCG_val.json").read_text())
    assert flickr["images"] == [] and flickr["annotations"] == []
    caption = next(r for r in report.runs if r.source == "openpsg")
    assert caption.files == {"OpenPsgGCG_train.json": 0, "OpenPsgGCG_val.json": 0}
    assert "PhraseMissing" in report.summary()
