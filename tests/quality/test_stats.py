"""``grand-engine stats``: every figure of a hand-built output worked out by hand.

The output (``stats_out``) has two done units and one that is not done:

* ``sa_000000/00000`` — ``images``: sa_1, sa_2, with an ``ImageError`` row (sa_4, error) and a ``DuplicateMember``
  row (sa_1, warning); ``level4``: sa_1 (the scene of ``tests/grandf/level4.py``) and sa_2 (below); ``depth``:
  sa_1 in [0, 2], sa_2 in [0, 4].
* ``sa_000000/00001`` — ``images``: sa_3, sa_5; ``level4``: sa_3 (no region, a failed dense caption);
  ``dense_caption``: a ``TruncatedCompletion`` row for sa_5 in a table written before ``severity`` existed.
* ``sa_000001/00000`` — a ``level4`` file with 50 objects but no completion record: it must not count.

Records of shard sa_000000 are compacted into ``_manifests/_shards/`` and ``verify`` failed on the second unit.

The scene sa_1: objects dog (mask 10×10, attributes "Assistant: a brown dog running" and "a dog") and ball (mask
5×5, "a red ball"); floating tree (no mask), cat (mask 10×10), bird (no mask); every depth 1.0; two short captions
with two phrases each; the dense caption "A brown dog chases a café ball near the old tree." (11 words, 3
phrases), verified without regeneration (hallucination rate 0 before and after).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.cli import main
from grand_engine.grandf.records import referring_attributes
from grand_engine.io.store import OutputStore
from grand_engine.quality.stats import (
    REFERRING_SQL,
    STATS_JSON,
    Counts,
    Histogram,
    StatsError,
    compute_stats,
    connect,
    sample_key,
    stats_json,
    write_stats,
)
from grand_engine.quality.stats_report import format_report, render_plots
from grand_engine.runtime.manifests import StageRecord, record_failure
from grand_engine.runtime.records import RecordBook, compact_path
from tests.grandf.level4 import (
    H,
    W,
    box_mask,
    detail,
    images_table,
    level4_row,
    level4_table,
    obj,
    scene_row,
    write_stage,
)
from tests.quality.run_outputs import error_rows, write_with_errors

U0, U1, NOT_DONE = "sa_000000/00000", "sa_000000/00001", "sa_000001/00000"


def _verification(status: str, rounds: int, before: float | None, after: float | None) -> dict:
    return {
        "status": status,
        "rounds": rounds,
        "checklist": [],
        "items_checked": 2,
        "items_confirmed": 1,
        "hallucination_rate_before": before,
        "hallucination_rate_after": after,
    }


def sa_2_row() -> dict:
    """Objects dog (mask 20×15 = 300 px, depth 0.5), person (mask 20×30 = 600 px, depth 2.0), cup (mask 2×2, no
    depth); floating dog (no mask, depth 1.0). A blank second short caption; a dense caption repaired in 2 rounds."""
    return level4_row(
        "sa_2",
        W,
        H,
        objects=[
            obj(
                0,
                (0, 0, 20, 15),
                "dog",
                attributes=["istant: the dog", "a puppy"],
                mask=box_mask(H, W, (0, 0, 20, 15)),
                depth=0.5,
            ),
            obj(
                1,
                (20, 0, 40, 30),
                "person",
                labels=["person", "man"],
                attributes=["a tall figure", "someone waving"],
                mask=box_mask(H, W, (20, 0, 40, 30)),
                depth=2.0,
            ),
            obj(2, (0, 20, 2, 22), "cup", mask=box_mask(H, W, (0, 20, 2, 22)), depth=None),
        ],
        floating_objects=[obj(3, (5, 5, 8, 8), None, labels=["dog"], attributes=["a dog"], mask=None, depth=1.0)],
        short_captions=[{"caption": "two dogs", "details": []}, {"caption": "  ", "details": []}],
        dense_caption={
            "caption": "A dog and a man.",
            "details": [detail("A dog", [0, 5], [0]), detail("a man", [10, 15], [1])],
            "verification": _verification("verified", 2, 0.5, 0.0),
        },
    )


def sa_3_row() -> dict:
    return level4_row(
        "sa_3",
        W,
        H,
        dense_caption={"caption": "Empty room.", "details": [], "verification": _verification("failed", 2, 1.0, None)},
    )


def _images(ids: list[str]) -> pa.Table:
    return images_table([{"image_id": i, "width": W, "height": H} for i in ids])


def build_output(root: str) -> OutputStore:
    store = OutputStore(root)
    write_with_errors(
        store,
        "images",
        U0,
        _images(["sa_1", "sa_2"]),
        error_rows("images", U0, [("sa_4", "ImageError", "error"), ("sa_1", "DuplicateMember", "warning")]),
    )
    write_stage(store, "level4", U0, level4_table([scene_row("sa_1"), sa_2_row()]))
    depth = pa.table(
        {
            "image_id": ["sa_1", "sa_2"],
            "min": pa.array([0.0, 0.0], pa.float32()),
            "max": pa.array([2.0, 4.0], pa.float32()),
        }
    )
    write_stage(store, "depth", U0, depth)

    write_stage(store, "images", U1, _images(["sa_3", "sa_5"]))
    write_stage(store, "level4", U1, level4_table([sa_3_row()]))
    write_with_errors(
        store,
        "dense_caption",
        U1,
        pa.table({"image_id": ["sa_3"], "caption": ["Empty room."]}),
        error_rows("dense_caption", U1, [("sa_5", "TruncatedCompletion", "error")], severity=False),
    )
    # a unit whose table exists without a record (a crash, or a rerun that removed it): never counted
    busy = level4_row("sa_9", W, H, objects=[obj(k, (0, 0, 1, 1), "ghost") for k in range(50)])
    store.write_table(f"level4/{NOT_DONE}.parquet", level4_table([busy]))
    store.write_table(f"images/{NOT_DONE}.parquet", _images(["sa_9"]))
    record_failure(store, StageRecord(stage="verify", unit_id=U1, fingerprint="test", status="failed", message="x"))
    RecordBook.load(store).compact_shard(store, "sa_000000")
    return store


@pytest.fixture(scope="module")
def stats_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "out"
    build_output(str(out))
    return out


@pytest.fixture(scope="module")
def stats(stats_out):
    """The statistics with the default options (tests that change the dict compute their own)."""
    return compute_stats(str(stats_out))


def test_records_are_compacted_in_the_fixture(stats_out):
    assert (stats_out / compact_path("sa_000000")).is_file()
    assert not list((stats_out / "_manifests").glob("level4/**/*.json"))


def _dist(s: dict) -> tuple:
    return s["items"], s["total"], s["min"], s["median"], s["max"]


def test_per_image_figures(stats):
    assert stats["annotation_stage"] == "level4"
    assert stats["units"] == {"annotation": 2, "images": 2}
    assert stats["images"] == {"in_run": 4, "annotated": 3, "excluded_by_errors": 2}
    p = stats["per_image"]
    # (images, total, min, median, max) over sa_1, sa_2, sa_3
    assert _dist(p["regions"]) == (3, 9, 0, 4, 5)  # 5, 4, 0
    assert _dist(p["objects"]) == (3, 5, 0, 2, 3)  # 2, 3, 0
    assert _dist(p["floating_objects"]) == (3, 4, 0, 1, 3)  # 3, 1, 0
    assert _dist(p["masked_regions"]) == (3, 6, 0, 3, 3)  # dog ball cat; dog person cup; none
    # sa_1: dog 2 (both attributes name "dog") + ball 1; sa_2: dog 1 ("the dog"), person 1 (the first: none
    # names "person" or "man"), cup 0 (no attribute); the floating objects do not count
    assert _dist(p["referring_expressions"]) == (3, 5, 0, 2, 3)
    assert _dist(p["short_captions"]) == (3, 3, 0, 1, 2)  # sa_2's blank caption is not one
    assert _dist(p["grounded_short_captions"]) == (3, 2, 0, 0, 2)
    assert _dist(p["dense_captions"]) == (3, 3, 1, 1, 1)
    assert _dist(p["grounded_dense_captions"]) == (3, 2, 0, 1, 1)
    assert p["regions"]["mean"] == pytest.approx(3.0)
    assert p["regions"]["p10"] == pytest.approx(0.8)  # numpy's linear rule on 0, 4, 5: 0 + 0.2 · 4
    assert p["regions"]["p90"] == pytest.approx(4.8)  # 4 + 0.8 · 1
    assert p["regions"]["histogram"] == {"value": [0, 4, 5], "count": [1, 1, 1]}
    grand = {r["key"]: (r["grand"], r["run"]) for r in stats["grand_comparison"]}
    assert grand["regions"] == (pytest.approx(810 / 11), pytest.approx(3.0))
    assert grand["referring_expressions"] == (pytest.approx(84 / 11), pytest.approx(5 / 3))
    assert grand["grounded_short_captions"] == (2.0, pytest.approx(2 / 3))
    assert grand["dense_captions"] == (1.0, pytest.approx(1.0))
    assert stats["notes"] == []


def test_captions_and_verification(stats):
    short, dense = stats["captions"]["short"], stats["captions"]["dense"]
    assert short["captions"] == 3
    assert short["phrases_per_caption"]["histogram"] == {"value": [0, 2], "count": [1, 2]}  # sa_1: 2, 2; sa_2: 0
    assert dense["captions"] == 3
    assert dense["words"]["histogram"] == {"value": [2, 5, 11], "count": [1, 1, 1]}
    assert dense["words"]["mean"] == pytest.approx(6.0)
    assert dense["phrases_per_caption"]["histogram"] == {"value": [0, 2, 3], "count": [1, 1, 1]}
    v = stats["verification"]
    assert (v["dense_captions"], v["passed"], v["repaired"], v["failed"], v["unchecked"]) == (3, 1, 1, 1, 0)
    assert v["rates"]["passed"] == pytest.approx(1 / 3)
    assert v["hallucination_rate_before"] == pytest.approx(0.5)  # (0 + 0.5 + 1) / 3
    assert v["hallucination_rate_after"] == pytest.approx(0.0)  # (0 + 0) / 2: sa_3 has none


def test_labels_top_k_and_tail(stats_out):
    labels = compute_stats(str(stats_out), top_k=2)["labels"]
    # dog (sa_1 object, sa_2 object and floating), then six labels seen once, ties by name
    assert labels["top"] == [
        {"label": "dog", "count": 3, "share": pytest.approx(3 / 9)},
        {"label": "ball", "count": 1, "share": pytest.approx(1 / 9)},
    ]
    assert (labels["labelled_regions"], labels["unlabelled_regions"], labels["distinct"], labels["singletons"]) == (
        9,
        0,
        7,
        6,
    )
    assert labels["top_k_share"] == pytest.approx(4 / 9)
    assert (labels["tail_labels"], labels["tail_share"]) == (5, pytest.approx(5 / 9))
    assert labels["labels_for_half_of_regions"] == 3  # 3 + 1 + 1 ≥ 4.5
    assert labels["rank_frequency"]["rank"][0] == 1 and labels["rank_frequency"]["count"][0] == 3


def test_mask_area_and_depth(stats):
    area = stats["mask_area"]
    fractions = np.array([100, 25, 100, 300, 600, 4]) / (W * H)  # dog ball cat; dog person cup
    assert (area["items"], area["unreadable_masks"], area["image_fraction"]) == (6, 0, 1.0)
    assert area["mean"] == pytest.approx(fractions.mean())
    assert (area["min"], area["max"]) == (pytest.approx(4 / 1200), pytest.approx(0.5))
    step = 10 ** (1 / 50)  # one bin of the log histogram: percentiles are exact to one bin
    assert area["median"] == pytest.approx(np.median(fractions), rel=step - 1)
    depth = stats["depth"]
    # sa_1: five regions at 1.0 in [0, 2] → 0.5; sa_2: 0.5, 2.0, 1.0 in [0, 4] → 0.125, 0.5, 0.25; the cup has none
    assert (depth["items"], depth["regions_without_depth"], depth["not_normalised"]) == (8, 1, 0)
    assert depth["mean"] == pytest.approx((5 * 0.5 + 0.125 + 0.5 + 0.25) / 8)
    assert (depth["min"], depth["median"], depth["max"]) == (0.125, 0.5, 0.5)


def test_mask_area_sample_is_chosen_by_the_hash_of_the_image_id(stats_out):
    # one image asked for out of three: the images whose key is below 2³²/3 — sa_1 (key 5373142) and sa_3
    # (177911580), not sa_2 (3859762270); sa_3 has no mask, so the sample is sa_1's three masks
    assert [sample_key(i) < int(2**32 / 3) for i in ("sa_1", "sa_2", "sa_3")] == [True, False, True]
    stats = compute_stats(str(stats_out), mask_sample_images=1)
    area = stats["mask_area"]
    assert (area["items"], area["image_fraction"]) == (3, pytest.approx(1 / 3))
    assert area["mean"] == pytest.approx((100 + 25 + 100) / 3 / (W * H))
    assert stats["per_image"]["masked_regions"]["total"] == 6  # the other figures still cover every image
    assert any(
        n.startswith("mask areas come from the masks of 33.33 % of the images (3 masks)") for n in stats["notes"]
    )


def test_errors_by_stage_type_and_severity(stats):
    errors = stats["errors"]
    assert (errors["error_rows"], errors["warning_rows"], errors["images_excluded"]) == (2, 1, 2)
    assert errors["by_stage"] == [
        {"stage": "dense_caption", "error_type": "TruncatedCompletion", "severity": "error", "rows": 1, "images": 1},
        {"stage": "images", "error_type": "ImageError", "severity": "error", "rows": 1, "images": 1},
        {"stage": "images", "error_type": "DuplicateMember", "severity": "warning", "rows": 1, "images": 1},
    ]
    assert errors["failed_units"] == {"verify": 1}


def test_stage_summary_from_the_records(stats):
    stages = {s["stage"]: s for s in stats["stages"]}
    assert stages["images"] == {
        "stage": "images",
        "units": 2,
        "images": 5,
        "rows": 4,
        "error_rows": 1,
        "warning_rows": 1,
        "seconds": 0.0,
    }
    assert (stages["level4"]["units"], stages["level4"]["rows"]) == (2, 3)


@pytest.mark.parametrize(
    "attributes, labels",
    [
        (["Assistant: a brown dog running", "a dog"], ["dog"]),
        (["a red thing", "a Sports Ball", "Ball!"], ["sports_ball", "ball"]),
        (["ASSISTANT a shiny thing"], ["ball"]),
        (["istant:", "  ", "a cat"], ["dog"]),
        (["istant:", "  "], ["dog"]),
        (["a tall figure", "someone waving"], ["person", "man"]),
        (["a large Sandal", "footwear"], ["sandal_(type_of_shoe)", ""]),
        ([], ["dog"]),
        (["\tassistant : a dog\n", "a dog again"], []),
    ],
)
def test_referring_sql_matches_the_refseg_export_rule(attributes, labels):
    o = obj(0, (0, 0, 10, 10), None, labels=labels, attributes=attributes, mask=box_mask(H, W, (0, 0, 10, 10)))
    con = connect()
    con.register("annotation", level4_table([level4_row("x", W, H, objects=[o])]))
    rows = con.sql(REFERRING_SQL).fetchall()
    assert (rows[0][1] if rows else 0) == len(referring_attributes(o))


def test_level2_table_has_no_masks_and_says_so(tmp_path):
    from grand_engine.stages.level2 import LEVEL2_SCHEMA

    store = OutputStore(tmp_path / "out")
    write_stage(store, "images", U0, _images(["sa_1"]))
    row = {
        "image_id": "sa_1",
        "width": W,
        "height": H,
        "objects": [obj(0, (0, 0, 5, 5), "dog", attributes=["a dog"])],
        "floating_objects": [],
        "floating_attributes": [],
        "landmark": None,
        "affordances": [],
        "relationships": [],
        "captions": ["a dog", "", "a dog on grass"],
    }
    write_stage(store, "level2", U0, pa.Table.from_pylist([row], schema=LEVEL2_SCHEMA))
    stats = compute_stats(store)
    assert stats["annotation_stage"] == "level2"
    assert "referring_expressions" not in stats["per_image"]
    assert _dist(stats["per_image"]["short_captions"]) == (1, 2, 2, 2, 2)  # the blank caption is not one
    assert stats["captions"] == {"short": {"captions": 2, "phrases_per_caption": None}, "dense": None}
    assert stats["mask_area"] is None and stats["verification"] is None
    assert any("level 3 adds them" in n for n in stats["notes"])
    assert compute_stats(store, stage="level2")["annotation_stage"] == "level2"
    with pytest.raises(StatsError, match="'level4' has no completed unit"):
        compute_stats(store, stage="level4")


def test_an_output_without_records_is_refused(tmp_path):
    with pytest.raises(StatsError, match="no completion record"):
        compute_stats(str(tmp_path))
    store = OutputStore(tmp_path / "o2")
    write_stage(store, "images", U0, _images(["sa_1"]))
    with pytest.raises(StatsError, match="Run at least level 1"):
        compute_stats(store)


def test_counts_and_histogram_known_answers():
    c = Counts()
    c.add([3, 1, 1])
    c.add([])
    c.add([0, 10])
    s = c.summary()
    assert (s["items"], s["total"], s["min"], s["max"]) == (5, 15, 0, 10)
    assert s["median"] == 1 and c.percentile(25) == 1 and c.percentile(75) == 3
    assert c.percentile(90) == pytest.approx(np.percentile([0, 1, 1, 3, 10], 90))
    h = Histogram(0.0, 1.0, 10)
    h.add([0.05, 0.15, 0.15, 0.95, 2.0, float("nan")])
    assert h.counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]  # 2.0 lands in the last bin, NaN nowhere
    assert (h.n, h.min, h.max) == (5, 0.05, 2.0)
    assert h.percentile(50) == pytest.approx(0.1 + 0.1 * 0.75)  # 2.5th of 5 values: 1.5 of the 2 in [0.1, 0.2)


def test_report_and_plots(stats_out):
    stats = compute_stats(str(stats_out))
    plots = render_plots(stats, stats.pop("_label_counts"))
    names = [p["name"] for p in stats["plots"]]
    assert names == [
        "per_image_vs_grand",
        "regions_per_image",
        "referring_expressions_per_image",
        "phrases_per_caption",
        "dense_caption_words",
        "verification",
        "labels_top",
        "labels_rank_frequency",
        "mask_area",
        "depth",
        "errors",
    ]
    assert sorted(plots) == sorted(f"{n}.png" for n in names)
    assert all(data.startswith(b"\x89PNG\r\n\x1a\n") for data in plots.values())
    text = format_report(stats)
    lines = text.splitlines()
    regions = next(line for line in lines if line.startswith("regions (objects"))
    assert regions.split()[-6:] == ["73.6", "3.0", "4", "0.8–4.8", "0–5", "9"]
    refs = next(line for line in lines if line.startswith("referring expressions"))
    assert refs.split()[-6:] == ["7.6", "1.7", "2", "0.4–2.8", "0–3", "5"]
    assert "verification of 3 dense captions: passed 1 (33.3 %), repaired 1 (33.3 %), failed 1 (33.3 %)" in text
    assert "2 errors (2 images excluded), 1 warnings" in text


def test_write_stats_replaces_the_previous_plots(stats_out):
    store = OutputStore(stats_out)
    store.write_bytes("_stats/old_plot.png", b"old")
    stats = compute_stats(store)
    plots = render_plots(stats, stats.pop("_label_counts"))
    written = write_stats(store, stats, plots)
    assert written[-1] == STATS_JSON
    assert not (stats_out / "_stats/old_plot.png").exists()
    on_disk = json.loads((stats_out / STATS_JSON).read_text())
    assert on_disk == json.loads(stats_json(stats))
    assert all((stats_out / "_stats" / p["file"]).is_file() for p in on_disk["plots"])


def test_cli(stats_out, tmp_path, capsys):
    code = main(["stats", str(stats_out), "--json", str(tmp_path / "s.json"), "--html", str(tmp_path / "html")])
    out = capsys.readouterr().out
    assert code == 0
    assert "annotation table: level4 (2 of 2 units done) — 3 images annotated of 4 in the run" in out
    saved = json.loads((stats_out / STATS_JSON).read_text())
    assert json.loads((tmp_path / "s.json").read_text())["per_image"] == saved["per_image"]
    assert saved["format"] == "grand-engine-stats/1"
    assert saved["per_image"]["regions"]["total"] == 9
    assert "_label_counts" not in saved
    page = (tmp_path / "html/index.html").read_text()
    assert all(f'src="{p["file"]}"' in page and (tmp_path / "html" / p["file"]).is_file() for p in saved["plots"])

    assert main(["stats", str(stats_out), "--no-save", "--stage", "level4", "--top-k", "1"]) == 0
    assert "most frequent: dog 3" in capsys.readouterr().out
    assert main(["stats", str(tmp_path / "nothing")]) == 2
    assert "no completion record" in capsys.readouterr().err


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    from tests.io.s3_server import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "requests.log")
    yield server
    server.stop()


def test_an_s3_output_gives_the_same_statistics(moto_server, monkeypatch, stats, capsys):
    import boto3

    for key, value in moto_server.env.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="stats")
    uri = "s3://stats/run"
    build_output(uri)
    remote = compute_stats(uri)
    volatile = ("output", "generated_at", "seconds", "_label_counts")
    assert {k: v for k, v in remote.items() if k not in volatile} == {
        k: v for k, v in stats.items() if k not in volatile
    }
    assert main(["stats", uri]) == 0
    assert "3 images annotated of 4 in the run" in capsys.readouterr().out
    saved = json.loads(OutputStore(uri).read_text(STATS_JSON))
    assert saved["output"] == uri and saved["per_image"]["regions"]["total"] == 9
    assert {p["file"] for p in saved["plots"]} <= {
        rel.removeprefix("_stats/") for rel in OutputStore(uri).list_files("_stats", ".png")
    }
