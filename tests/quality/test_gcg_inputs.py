"""Ground truth and predictions in every accepted layout; malformed files refused with the file and problem named."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from grand_engine.grandf.records import grandf_json
from grand_engine.io import rle
from grand_engine.quality.gcg_inputs import (
    GCGInputError,
    load_glamm_ground_truth,
    load_predictions,
    prediction_kind,
)
from tests.quality import gcg_scene as S


@pytest.fixture
def gt(tmp_path):
    return load_glamm_ground_truth(S.write_gt(tmp_path / "gt", S.gt_images()), "val")


def test_ground_truth_records(gt):
    assert list(gt.images) == ["sa_1", "sa_2"]
    first = gt.images["sa_1"]
    assert first.captions == (S.CAPTION_1,)
    assert first.phrases == ("a brown dog", "the red ball")
    assert first.masks == (S.DOG, S.BALL)
    assert (first.height, first.width, first.file_name) == (10, 10, "sa_1.jpg")
    assert [a["image_id"] for a in gt.coco["annotations"]] == ["sa_1", "sa_1", "sa_2"]


@pytest.mark.parametrize("nested", [False, True])
def test_glamm_predictions_at_the_top_level_or_under_one_key(tmp_path, gt, nested):
    folder = S.write_predictions(tmp_path / "pred", S.perfect(), nested=nested)
    preds = load_predictions(folder, gt)
    assert prediction_kind(folder) == "glamm"
    assert preds.images["sa_1"].phrases == ("a brown dog", "the red ball")
    assert preds.images["sa_1"].masks == (S.DOG, S.BALL)
    assert preds.images["sa_2"].captions == (S.CAPTION_2,)


def test_uncompressed_rle_predictions_are_accepted(tmp_path, gt):
    preds = S.perfect()
    # GLaMM's mask_to_rle form: run lengths as a list (column-major, zeros first)
    preds["sa_2"]["pred_masks"] = [{"size": [10, 10], "counts": [22, 4, 6, 4, 6, 4, 6, 4, 44]}]
    loaded = load_predictions(S.write_predictions(tmp_path / "pred", preds), gt)
    assert loaded.images["sa_2"].masks == (S.CHAIR,)


def _error(tmp_path, gt, predictions, **kwargs) -> str:
    folder = S.write_predictions(tmp_path / "pred", predictions)
    with pytest.raises(GCGInputError) as info:
        load_predictions(folder, gt, **kwargs)
    return str(info.value)


def test_missing_key_names_the_file(tmp_path, gt):
    preds = S.perfect()
    del preds["sa_2"]["pred_masks"]
    message = _error(tmp_path, gt, preds)
    assert f"{tmp_path / 'pred' / 'sa_2.json'}: 'pred_masks' missing" in message


def test_bad_rle_names_the_file_and_mask(tmp_path, gt):
    preds = S.perfect()
    preds["sa_1"]["pred_masks"][1] = {"size": [10, 10], "counts": "!!bad"}
    message = _error(tmp_path, gt, preds)
    assert f"{tmp_path / 'pred' / 'sa_1.json'}: pred_masks[1]: malformed RLE counts" in message
    assert "outside the COCO alphabet" in message


def test_runs_that_do_not_cover_the_image_are_refused(tmp_path, gt):
    preds = S.perfect()
    preds["sa_2"]["pred_masks"] = [{"size": [10, 10], "counts": [50, 60]}]  # 110 pixels for a 100-pixel mask
    assert "runs cover 110 pixels but size [10, 10] has 100" in _error(tmp_path, gt, preds)


def test_wrong_mask_size_names_both_sizes(tmp_path, gt):
    preds = S.perfect()
    preds["sa_2"]["pred_masks"] = [S.box(2, 2, h=12, w=10)]
    message = _error(tmp_path, gt, preds)
    assert (
        f"{tmp_path / 'pred' / 'sa_2.json'}: pred_masks[0]: mask size [12, 10] differs from the image's [10, 10]"
        in (message)
    )


def test_wrong_types_and_invalid_json(tmp_path, gt):
    preds = S.perfect()
    preds["sa_1"]["phrases"] = "a brown dog"
    preds["sa_2"]["caption"] = None
    folder = S.write_predictions(tmp_path / "pred", preds)
    message = _error(tmp_path, gt, preds)
    assert "sa_1.json: 'phrases': expected a list of strings, got str" in message
    assert "sa_2.json: 'caption' must be a string, got NoneType" in message  # every problem is listed at once
    (folder / "sa_1.json").write_text('{"caption": ')
    with pytest.raises(GCGInputError, match="sa_1.json: not valid JSON"):
        load_predictions(folder, gt)


def test_no_prediction_fields_at_all(tmp_path, gt):
    folder = S.write_predictions(tmp_path / "pred", S.perfect())
    (folder / "sa_2.json").write_text(json.dumps({"a": {"text": "x"}, "b": 1}))
    with pytest.raises(
        GCGInputError, match=r"sa_2.json: no 'caption', 'phrases' and 'pred_masks'.*found \['a', 'b'\]"
    ):
        load_predictions(folder, gt)


def test_phrase_and_mask_counts_must_agree_unless_allowed(tmp_path, gt):
    preds = S.perfect()
    preds["sa_1"]["phrases"] = ["a brown dog"]
    assert "sa_1.json: 1 phrases but 2 masks" in _error(tmp_path, gt, preds)
    loaded = load_predictions(tmp_path / "pred", gt, allow_count_mismatch=True)
    assert loaded.images["sa_1"].phrases == ("a brown dog",)
    assert len(loaded.images["sa_1"].masks) == 2


def test_missing_prediction_file(tmp_path, gt):
    preds = S.perfect()
    del preds["sa_2"]
    message = _error(tmp_path, gt, preds)
    assert f"no prediction for ground-truth image 'sa_2': {tmp_path / 'pred' / 'sa_2.json'}" in message
    assert "--missing empty" in message
    loaded = load_predictions(tmp_path / "pred", gt, missing="empty")
    assert loaded.missing == ["sa_2"]
    assert loaded.notes() == ["1 ground-truth images have no prediction and were scored as empty"]


# -- ground truth problems ---------------------------------------------------------------------------------------


def test_ground_truth_problems_are_named(tmp_path):
    images = S.gt_images()
    images[0]["labels"] = ["a brown dog"]  # 1 label for 2 masks
    folder = S.write_gt(tmp_path / "gt", images)
    with pytest.raises(
        GCGInputError,
        match=r"val_gcg_coco_caption_gt.json: image 'sa_1': 1 labels but 2 masks in val_gcg_coco_mask_gt.json",
    ):
        load_glamm_ground_truth(folder, "val")
    mask_file = folder / "val_gcg_coco_mask_gt.json"
    data = json.loads(mask_file.read_text())
    data["annotations"][2]["segmentation"] = [[0, 0, 5, 0, 5, 5]]
    mask_file.write_text(json.dumps(data))
    with pytest.raises(GCGInputError) as info:
        load_glamm_ground_truth(folder, "val", allow_count_mismatch=True)
    assert "annotations[2]: segmentation is a polygon" in str(info.value)
    with pytest.raises(GCGInputError, match="test_gcg_coco_mask_gt.json: file not found"):
        load_glamm_ground_truth(folder, "test")
    with pytest.raises(ValueError, match="unknown split 'train'"):
        load_glamm_ground_truth(folder, "train")


# -- GranD-f exports and run outputs -----------------------------------------------------------------------------


def _halves(mask):
    """Two RLEs whose union is ``mask``: its upper rows and the rest."""
    full = rle.decode(mask)
    top, rest = full.copy(), full.copy()
    top[5:] = False
    rest[:5] = False
    return [rle.encode(top), rle.encode(rest)]


def test_grandf_export_is_matched_by_file_name_and_masks_are_united(tmp_path, gt):
    records = [
        grandf_json(
            S.CAPTION_1,
            "sa_1.jpg",
            [
                {"phrase": "a brown dog", "token_positives": [0, 11], "rle_masks": _halves(S.DOG)},
                {"phrase": "the red ball", "token_positives": [19, 31], "rle_masks": [S.BALL]},
            ],
        ),
        grandf_json(
            "a chair", "elsewhere.jpg", [{"phrase": "a chair", "token_positives": [0, 7], "rle_masks": [S.CHAIR]}]
        ),
    ]
    path = tmp_path / "GranDf_GCG.json"
    path.write_text(json.dumps(records))
    assert prediction_kind(path) == "grandf"
    preds = load_predictions(path, gt, missing="empty")
    assert preds.images["sa_1"].masks == (S.DOG, S.BALL)
    assert preds.images["sa_1"].phrases == ("a brown dog", "the red ball")
    assert (preds.missing, preds.unmatched) == (["sa_2"], 1)

    records[0]["groundings"]["the red ball"]["rle_masks"] = [S.box(0, 0, h=10, w=12)]
    path.write_text(json.dumps(records))
    with pytest.raises(GCGInputError, match=r"record 0 \(sa_1.jpg\): 'the red ball' rle_masks\[0\]: mask size"):
        load_predictions(path, gt, missing="empty")
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(GCGInputError, match="expected a JSON list of GranD-f records, got dict"):
        load_predictions(path, gt)


def test_run_output_grandf_table(tmp_path, gt):
    from grand_engine.stages.grandf import GRANDF_SCHEMA
    from tests.grandf.level4 import images_table, write_output

    def row(image_id, caption, groundings, skip=None):
        return {
            "image_id": image_id,
            "file_name": f"{image_id}.jpg",
            "width": 10,
            "height": 10,
            "caption": caption,
            "groundings": groundings,
            "dropped_phrases": [],
            "verification_status": "verified" if skip is None else "failed",
            "skip_reason": skip,
            "short_captions": [],
        }

    dog = {"phrase": "a brown dog", "token_positives": [0, 11], "rle_masks": _halves(S.DOG), "object_ids": [0, 1]}
    ball = {"phrase": "the red ball", "token_positives": [19, 31], "rle_masks": [S.BALL], "object_ids": [2]}
    chair = {"phrase": "a wooden chair", "token_positives": [0, 14], "rle_masks": [S.CHAIR], "object_ids": [0]}
    rows = [row("sa_1", S.CAPTION_1, [dog, ball]), row("sa_2", S.CAPTION_2, [chair], skip="verification_failed")]
    images = images_table([{"image_id": r["image_id"], "width": 10, "height": 10} for r in rows])
    out = tmp_path / "out"
    write_output(
        out, {"sa_000000/00000": {"images": images, "grandf": pa.Table.from_pylist(rows, schema=GRANDF_SCHEMA)}}
    )
    assert prediction_kind(out) == "run"
    preds = load_predictions(out, gt, missing="empty")
    assert preds.images["sa_1"].masks == (S.DOG, S.BALL)
    assert preds.images["sa_1"].captions == (S.CAPTION_1,)
    assert (preds.missing, preds.skipped) == (["sa_2"], 1)
    with pytest.raises(GCGInputError, match="no completed unit of stage 'grandf'"):
        load_predictions(_empty_run(tmp_path), gt)


def _empty_run(tmp_path):
    folder = tmp_path / "empty_run"
    (folder / "_manifests").mkdir(parents=True)
    return folder
