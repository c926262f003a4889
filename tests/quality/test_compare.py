"""``grand-engine compare``: two hand-built outputs whose every difference is worked out by hand.

Images 40×30. A has sa_1, sa_2, sa_3; B has sa_1, sa_2, sa_4 (so sa_3 is only in A, sa_4 only in B). ``run.json``
differs in one value: ``detect_ov.params.threshold`` 0.1 (A) → 0.05 (B).

* ``detect_ov`` — sa_1: A dog [0, 0, 10, 10], cat [20, 20, 30, 30]; B the same dog, the cat cut to
  [20, 25, 30, 30] (IoU 0.5) and a bird [5, 5, 6, 6] (added). sa_2: A car, B nothing (removed). sa_3 (A only): a
  degenerate box [5, 5, 5, 5].
* ``caption_vlm`` — sa_1 "a dog" in both; sa_2 "a red car on the road" (6 words) → "a red car parked on a road" (7).
* ``level4`` — sa_1: objects dog (mask = its box) and cat (mask = its box, B's cut as in detect_ov), the dense
  caption "a dog near a cat" grounding both, verified. sa_2: A a car with the dense caption "a car", verified; B no
  object and no dense caption.
* ``grandf`` — made by the real stage from each ``level4``; B's sa_2 has no usable record.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.cli import main
from grand_engine.io.store import OutputStore
from grand_engine.quality.compare import CompareError, compare_runs, stage_order
from grand_engine.stages.detectors import DETECTIONS_SCHEMA
from grand_engine.stages.grandf import GrandF
from grand_engine.testing import make_unit, run_stage
from tests.grandf.level4 import H, W, box_mask, detail, images_table, level4_row, level4_table, obj, write_stage
from tests.quality.run_outputs import write_run_json

UNIT = "sa_000000/00000"
DOG, CAT, CAT_CUT, CAR = (0, 0, 10, 10), (20, 20, 30, 30), (20, 25, 30, 30), (0, 15, 10, 25)
VERIFIED = {
    "status": "verified",
    "rounds": 0,
    "checklist": [],
    "items_checked": 1,
    "items_confirmed": 1,
    "hallucination_rate_before": 0.0,
    "hallucination_rate_after": 0.0,
}


def _detections(rows: dict[str, list[tuple[tuple, str]]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "image_id": image_id,
                "boxes": [[float(v) for v in box] for box, _ in dets],
                "scores": [0.9] * len(dets),
                "labels": [label for _, label in dets],
            }
            for image_id, dets in rows.items()
        ],
        schema=DETECTIONS_SCHEMA,
    )


def _captions(rows: dict[str, str]) -> pa.Table:
    from grand_engine.stages.captions import CAPTION_SCHEMA

    return pa.Table.from_pylist(
        [
            {"image_id": k, "caption": v, "caption_normalised": v.lower(), "finish_reason": "stop"}
            for k, v in rows.items()
        ],
        schema=CAPTION_SCHEMA,
    )


def _sa_1(cat: tuple) -> dict:
    return level4_row(
        "sa_1",
        W,
        H,
        objects=[
            obj(0, DOG, "dog", mask=box_mask(H, W, DOG)),
            obj(1, cat, "cat", mask=box_mask(H, W, cat)),
        ],
        dense_caption={
            "caption": "a dog near a cat",
            "details": [detail("a dog", [0, 5], [0]), detail("a cat", [11, 16], [1])],
            "verification": VERIFIED,
        },
    )


def _sa_2(with_car: bool) -> dict:
    if not with_car:
        return level4_row("sa_2", W, H)
    return level4_row(
        "sa_2",
        W,
        H,
        objects=[obj(0, CAR, "car", mask=box_mask(H, W, CAR))],
        dense_caption={"caption": "a car", "details": [detail("a car", [0, 5], [0])], "verification": VERIFIED},
    )


RUN_STAGES = {
    "images": {"inputs": []},
    "detect_ov": {"inputs": ["images"], "params": {"threshold": 0.1}},
    "caption_vlm": {"inputs": ["images"], "params": {"temperature": 0.2}},
    "level4": {"inputs": ["detect_ov", "caption_vlm"]},
    "grandf": {"inputs": ["level4", "images"]},
}


def _write(root, ids: list[str], detections: dict, captions: dict, level4_rows: list[dict], threshold: float):
    store = OutputStore(root)
    images = images_table([{"image_id": i, "width": W, "height": H} for i in ids])
    level4 = level4_table(level4_rows)
    grandf_images = images_table([{"image_id": r["image_id"], "width": W, "height": H} for r in level4_rows])
    grandf = run_stage(
        GrandF.configure(), make_unit(grandf_images.to_pylist(), {"level4": level4, "images": grandf_images})
    )
    for stage, table in (
        ("images", images),
        ("detect_ov", _detections(detections)),
        ("caption_vlm", _captions(captions)),
        ("level4", level4),
        ("grandf", grandf.table),
    ):
        write_stage(store, stage, UNIT, table)
    stages = json.loads(json.dumps(RUN_STAGES))
    stages["detect_ov"]["params"]["threshold"] = threshold
    write_run_json(store, stages)
    return store


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    _write(
        root / "a",
        ["sa_1", "sa_2", "sa_3"],
        {"sa_1": [(DOG, "dog"), (CAT, "cat")], "sa_2": [(CAR, "car")], "sa_3": [((5, 5, 5, 5), "speck")]},
        {"sa_1": "a dog", "sa_2": "a red car on the road", "sa_3": "nothing"},
        [_sa_1(CAT), _sa_2(True)],
        0.1,
    )
    _write(
        root / "b",
        ["sa_1", "sa_2", "sa_4"],
        {"sa_1": [(DOG, "dog"), (CAT_CUT, "cat"), ((5, 5, 6, 6), "bird")], "sa_2": [], "sa_4": [((1, 1, 2, 2), "x")]},
        {"sa_1": "a dog", "sa_2": "a red car parked on a road", "sa_4": "something"},
        [_sa_1(CAT_CUT), _sa_2(False)],
        0.05,
    )
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def result(outputs, encoder):
    a, b = outputs
    return compare_runs(str(a), str(b), encoder=encoder, meteor=False)


def _stage(result, name):
    return next(s for s in result["stages"] if s["stage"] == name)


def test_images_configuration_and_stage_order(result):
    assert result["images"] == {"both": 2, "only_a": 1, "only_b": 1, "only_a_ids": ["sa_3"], "only_b_ids": ["sa_4"]}
    assert result["config_differences"] == [{"key": "detect_ov.params.threshold", "a": 0.1, "b": 0.05}]
    assert [s["stage"] for s in result["stages"]] == ["images", "caption_vlm", "detect_ov", "level4", "grandf"]
    assert result["stages_only_a"] == [] and result["stages_only_b"] == []
    images = _stage(result, "images")
    assert (images["images"], images["changed"], images["rows_only_a"], images["rows_only_b"]) == (2, 0, 0, 0)


def test_detections_are_paired_by_box_iou(result):
    s = _stage(result, "detect_ov")
    assert s["changed"] == 2
    # sa_1: dog–dog 1.0 and cat–cut cat 0.5 are matched, the bird is added; sa_2: the car is removed
    assert s["boxes"] == {
        "a": 3,
        "b": 3,
        "matched": 2,
        "removed": 1,
        "added": 1,
        "matched_iou": pytest.approx(0.75),
        "miou": pytest.approx((0.75 + 0.0) / 2),  # sa_2's car pairs with nothing: 0
        "images": 2,
        "labels_compared": 2,
        "labels_agree": 2,
    }


def test_captions_identity_similarity_and_length(result, encoder):
    s = _stage(result, "caption_vlm")
    c = s["captions"]
    assert s["changed"] == 1
    assert (c["pairs"], c["identical"], c["only_a"], c["only_b"]) == (2, 1, 0, 0)
    assert (c["words_a"], c["words_b"]) == (4.0, 4.5)  # (2 + 6) / 2, (2 + 7) / 2
    x, y = encoder.embed(["a red car on the road", "a red car parked on a road"])
    cosine = float(np.dot(x.astype(np.float64), y.astype(np.float64)))
    assert 0.5 < cosine < 1.0
    assert c["similarity"] == pytest.approx((1.0 + cosine) / 2)
    assert c["min_similarity"] == pytest.approx(cosine)


def test_level4_boxes_masks_phrases_and_verification(result):
    s = _stage(result, "level4")
    assert s["changed"] == 2
    expected = {"a": 3, "b": 2, "matched": 2, "removed": 1, "added": 0, "images": 2}
    assert {k: s["boxes"][k] for k in expected} == expected
    assert {k: s["masks"][k] for k in expected} == expected
    for aspect in ("boxes", "masks"):
        assert s[aspect]["matched_iou"] == pytest.approx(0.75)  # 1.0 and 0.5 (50 of 100 pixels)
        assert s[aspect]["miou"] == pytest.approx(0.375)
    assert (s["boxes"]["labels_compared"], s["boxes"]["labels_agree"]) == (2, 2)
    # the dense caption and the extra context of sa_1, the extra context of sa_2; B's sa_2 has no dense caption
    assert {k: s["captions"][k] for k in ("pairs", "identical", "only_a", "only_b")} == {
        "pairs": 3,
        "identical": 3,
        "only_a": 1,
        "only_b": 0,
    }
    assert s["phrases"] == {"a": 3, "b": 2, "common": 2, "removed": 1, "added": 0, "images_changed": 1}
    assert s["verification"] == [
        {"a": "verified", "b": "none", "images": 1},
        {"a": "verified", "b": "verified", "images": 1},
    ]
    grandf = _stage(result, "grandf")
    assert grandf["phrases"] == s["phrases"]
    assert "boxes" not in grandf


def test_gcg_of_b_against_a(result):
    gcg = result["gcg"]
    assert gcg["ground_truth_images"] == 2 and gcg["predictions_missing"] == ["sa_2"]
    figures = gcg["figures_unrounded"]
    assert figures["mIoU"] == pytest.approx((0.75 + 0.0) / 2)
    assert figures["recall"] == pytest.approx(2 / 3)  # dog (IoU 1) and cat (IoU 0.5) of sa_1; the car is missed
    # two true positives of equal score against three masks: precision 1 up to recall 2/3 (67 of COCO's 101
    # recall points), nothing beyond
    assert figures["AP50"] == pytest.approx(67 / 101)
    assert figures["METEOR"] is None
    assert (gcg["recall_matches"], gcg["gt_phrases"]) == (2, 3)
    assert gcg["skipped_rows"] == {"a": 0, "b": 1}
    assert gcg["notes"][0].startswith("1 images with a record in A have none in B")


def test_an_output_compared_with_itself_has_no_change(outputs):
    a, _ = outputs
    result = compare_runs(str(a), str(a), encoder=None, gcg=False)
    assert result["images"]["only_a"] == result["images"]["only_b"] == 0
    assert result["config_differences"] == []
    assert all(s["changed"] == 0 for s in result["stages"])
    boxes = _stage(result, "detect_ov")["boxes"]
    # sa_3's degenerate box has IoU 0 with itself by the formula; identical boxes count as the same region
    assert (boxes["a"], boxes["matched"], boxes["matched_iou"], boxes["miou"]) == (4, 4, 1.0, 1.0)
    captions = _stage(result, "caption_vlm")["captions"]
    assert (captions["identical"], captions["similarity"]) == (3, 1.0)  # identical: no encoder needed
    assert "gcg" not in result


def test_stage_order_follows_the_inputs():
    config = {"stages": {"c": {"inputs": ["b"]}, "b": {"inputs": ["a"]}, "a": {"inputs": []}, "d": {}}}
    assert stage_order(config, ["d", "c", "b", "a"]) == ["a", "b", "c", "d"]
    assert stage_order(None, ["b", "a"]) == ["a", "b"]


def test_errors(outputs, tmp_path):
    a, _ = outputs
    with pytest.raises(CompareError, match="no completion record"):
        compare_runs(str(a), str(tmp_path), gcg=False)
    with pytest.raises(CompareError, match=r"stages \['masks'\] are not done in both"):
        compare_runs(str(a), str(a), gcg=False, stages=["masks"])


def test_cli(outputs, tmp_path, capsys):
    a, b = outputs
    code = main(["compare", str(a), str(b), "--no-gcg", "--no-text", "--json", str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "images: 2 in both; 1 only in A; 1 only in B" in out
    assert "only in A: sa_3" in out and "only in B: sa_4" in out
    assert "detect_ov.params.threshold  0.1 → 0.05" in out
    line = next(x for x in out.splitlines() if x.startswith("detect_ov "))
    assert line.split()[1:3] == ["2", "2"]  # images, changed
    assert line.endswith(
        "boxes 3 → 3 (2 matched at IoU ≥ 0.5, 1 removed, 1 added; matched IoU 0.750, mIoU 0.375); "
        "labels agree on 2 of 2 matched"
    )
    assert "verification: 1 unchanged; verified → none 1" in out
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["format"] == "grand-engine-compare/1" and "gcg" not in saved
    assert [s["stage"] for s in saved["stages"]][:3] == ["images", "caption_vlm", "detect_ov"]

    assert main(["compare", str(a), str(tmp_path / "none"), "--no-gcg", "--no-text"]) == 2
    assert "no completion record" in capsys.readouterr().err
