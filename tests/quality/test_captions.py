"""Caption tokenisation, METEOR and CIDEr: agreement with pycocoevalcap called directly, and the java-less path."""

from __future__ import annotations

import pytest

from grand_engine.quality import captions as C

needs_java = pytest.mark.skipif(
    C.java_path() is None, reason="java is not installed (`make test` installs default-jre-headless as root)"
)

ORDINARY = [
    "A man in a red jacket is riding a brown horse next to an old wooden fence.",
    "Two dogs play on the grass, while a woman sits on a bench.",
    "The cat's toy isn't on the well-known 3-seat sofa; it's under the table!",
    "People (about 1,000 of them) stand near the U-shaped building at 5 p.m.",
    'She said "hello" to the kids... and they waved back?',
    "Ünder a café awning, a naïve artist paints",
]


def test_python_tokenize_known_answers():
    assert C.python_tokenize("The man's hat isn't red; it's blue...") == "the man 's hat is n't red it 's blue"
    assert C.python_tokenize("A well-known 3.5 m tall (old) tree, 1,000 years") == (
        "a well-known 3.5 m tall -lrb- old -rrb- tree 1,000 years"
    )
    assert C.python_tokenize('"Quoted" -- and: done!') == "quoted and done"
    assert C.python_tokenize("") == ""


@needs_java
def test_ptb_tokenize_equals_pycocoevalcap_ptbtokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = [*ORDINARY, "", "   ", "line one\nline two", "[brackets] {braces}"]
    expected = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert C.ptb_tokenize(captions) == [expected[i][0] for i in range(len(captions))]


@needs_java
def test_python_tokenize_equals_ptb_on_ordinary_captions():
    assert [C.python_tokenize(c) for c in ORDINARY] == C.ptb_tokenize(ORDINARY)


@needs_java
def test_line_breaks_inside_a_caption_do_not_shift_later_captions():
    # A carriage return would start a new line for the java tokenizer and move every later caption.
    assert C.ptb_tokenize(["a red\rcar", "two dogs"]) == ["a red car", "two dogs"]


@needs_java
def test_meteor_and_cider_equal_pycocoevalcap_scorers_called_directly(meteor):
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {
        1: ["A man rides a brown horse near a fence.", "Someone on a horse by the fence."],
        2: ["Two dogs play on the grass."],
        3: ["A red car is parked in front of a white building."],
        4: ["A plate with a sandwich and a cup of coffee."],
    }
    hyps = {
        1: "A man riding a horse next to a wooden fence.",
        2: "Dogs are playing in a park.",
        3: "A red car parked on the street.",
        4: "",
    }
    got = C.caption_scores(refs, hyps, meteor=meteor)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in hyps.items()})
    cider, _ = Cider().compute_score(gts, res)
    direct = Meteor()
    value, _ = direct.compute_score(gts, res)
    assert got.tokenizer == C.PTB_TOKENIZER
    assert got.cider == pytest.approx(cider, abs=1e-12)
    assert got.meteor == pytest.approx(value, abs=1e-12)
    assert 0 < got.meteor < 1 and 0 < got.cider < 10  # not a trivial set
    assert got.cider_per_image[4] == 0.0


def test_without_java_meteor_is_skipped_and_cider_uses_the_python_tokenizer(monkeypatch):
    monkeypatch.setattr(C, "java_path", lambda: None)
    refs = {1: ["A brown dog chases the red ball."], 2: ["A wooden chair stands by the window."]}
    hyps = {1: "a brown dog chases the red ball", 2: "A wooden chair stands by the window!"}
    got = C.caption_scores(refs, hyps)
    assert got.meteor is None
    assert got.tokenizer == C.PYTHON_TOKENIZER
    # Both candidates equal their reference once tokenised; only "a" is shared by the two images: 10 (see
    # test_gcg.test_perfect_prediction).
    assert got.cider == pytest.approx(10.0)
    assert "java not found" in got.notes[0] and "default-jre-headless" in got.notes[0]
    with pytest.raises(C.JavaMissingError, match="default-jre-headless"):
        C.MeteorScorer()


def test_caption_scores_need_an_image():
    with pytest.raises(ValueError, match="at least one image"):
        C.caption_scores({}, {})
