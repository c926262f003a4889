"""``grand-engine evaluate gcg`` end to end on the hand-made scene of ``tests/quality/gcg_scene.py``."""

from __future__ import annotations

import json

from grand_engine.cli import main
from grand_engine.quality import captions
from tests.quality import gcg_scene as S


def test_evaluate_gcg_prints_and_writes_the_figures_without_java(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(captions, "java_path", lambda: None)  # the java-less path: no METEOR, a clear message
    gt = S.write_gt(tmp_path / "gt", S.gt_images())
    preds = S.perfect()
    preds["sa_2"]["pred_masks"] = [S.box(2, 3)]  # CHAIR shifted one column: IoU 12/20
    pred = S.write_predictions(tmp_path / "pred", preds, nested=True)
    out = tmp_path / "figures.json"
    code = main(["evaluate", "gcg", "--gt", str(gt), "--pred", str(pred), "--split", "val", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "text similarity encoder: " in printed
    assert "java not found: METEOR was not computed" in printed and "default-jre-headless" in printed
    assert "  METEOR  n/a" in printed
    assert "  mIoU    0.800" in printed
    summary = json.loads(out.read_text())
    assert summary["figures"] == {"AP50": 1.0, "METEOR": None, "CIDEr": 10.0, "mIoU": 0.8, "recall": 1.0}
    assert summary["per_image"]["sa_2"]["mIoU"] == 0.6
    assert summary["tokenizer"] == captions.PYTHON_TOKENIZER
    assert summary["split"] == "val" and summary["images"] == 2


def test_evaluate_gcg_refuses_a_malformed_prediction_naming_the_file(tmp_path, capsys):
    gt = S.write_gt(tmp_path / "gt", S.gt_images())
    preds = S.perfect()
    preds["sa_2"]["pred_masks"] = [{"size": [10, 10], "counts": "0"}]  # runs cover 0 of 100 pixels
    pred = S.write_predictions(tmp_path / "pred", preds)
    code = main(["evaluate", "gcg", "--gt", str(gt), "--pred", str(pred), "--split", "val"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{pred / 'sa_2.json'}: pred_masks[0]: malformed RLE counts: runs cover 0 pixels" in err
