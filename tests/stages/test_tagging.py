"""``tagging``: vocabulary handling and tag selection by hand, and the stage on a tiny CLIP."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.labels import tag_vocabulary
from grand_engine.stages.tagging import TAGGING_SCHEMA, TaggingStage, build_vocabulary, select_tags
from grand_engine.testing import make_unit


def test_default_vocabulary_is_lvis_then_coco_normalised_and_deduplicated():
    vocab = build_vocabulary(("lvis_v1_categories.txt", "coco_categories.txt"))
    assert vocab == list(tag_vocabulary())
    assert len(vocab) == len(set(vocab))
    assert not any("_" in t or "(" in t or t != t.strip().lower() for t in vocab)
    # LVIS spelling first: `sandal_(type_of_shoe)` → "sandal"; `traffic_light` (in both lists) appears once,
    # at its LVIS position; COCO-only names such as `tv` and `hot_dog` follow the 1,203 LVIS entries
    assert "sandal" in vocab and "flip-flop" in vocab
    assert vocab.count("traffic light") == 1
    assert vocab.index("traffic light") < 1203 <= vocab.index("tv")
    assert "hot dog" in vocab[1150:]


def test_vocabulary_from_one_file():
    coco = build_vocabulary(("coco_categories.txt",))
    assert len(coco) == 80 and coco[:3] == ["person", "bicycle", "car"] and "traffic light" in coco


def test_select_tags_threshold_top_k_and_ties():
    vocab = ["a", "b", "c", "d"]
    scores = np.array([0.1, 0.4, 0.05, 0.4], dtype=np.float32)
    assert select_tags(scores, vocab, 0.08, 2) == (["b", "d"], [pytest.approx(0.4), pytest.approx(0.4)])
    assert select_tags(scores, vocab, 0.08, 0)[0] == ["b", "d", "a"]  # 0 = no limit; ties keep vocabulary order
    assert select_tags(scores, vocab, 0.1, 0)[0] == ["b", "d", "a"]  # >= threshold
    assert select_tags(scores, vocab, 0.5, 5) == ([], [])
    assert select_tags(scores, vocab, 0.0, 0)[0] == ["b", "d", "a", "c"]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="template"):
        TaggingStage.configure({"template": "a photo"})
    with pytest.raises(ValueError, match="top_k"):
        TaggingStage.configure({"top_k": -1})


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "a": rng.integers(0, 256, (64, 96, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (80, 40, 3), dtype=np.uint8),
    }


def test_stage_on_tiny_clip(tiny_dir, images):
    spec = ModelSpec(id=f"local-dir:{tiny_dir / 'clip-vit'}", family="clip")
    # the COCO list keeps the text side small (80 names); the default LVIS + COCO list is checked above
    stage = TaggingStage.configure(
        {"threshold": 0.0, "top_k": 7, "vocabulary_files": ["coco_categories.txt"]}, models={"clip": spec}
    )
    stage.setup()
    result = stage.process(make_unit(images))
    assert result.errors == []
    assert result.table.schema.equals(TAGGING_SCHEMA, check_metadata=True)
    vocab = set(build_vocabulary(("coco_categories.txt",)))
    for row in result.table.to_pylist():
        assert len(row["tags"]) == len(row["scores"]) == 7
        assert set(row["tags"]) <= vocab and len(set(row["tags"])) == 7
        assert row["scores"] == sorted(row["scores"], reverse=True)
        assert all(0 <= s <= 1 for s in row["scores"]) and sum(row["scores"]) <= 1 + 1e-5

    # with the threshold at image a's best score and no top-k, a keeps exactly its best tag
    first = {r["image_id"]: r for r in result.table.to_pylist()}
    stage.threshold, stage.top_k = first["a"]["scores"][0], 0
    again = {r["image_id"]: r for r in stage.process(make_unit(images)).table.to_pylist()}
    assert again["a"]["tags"] == first["a"]["tags"][:1]
    assert all(s >= first["a"]["scores"][0] for s in again["b"]["scores"])


def test_setup_needs_a_clip_slot():
    with pytest.raises(ValueError, match="'clip' slot"):
        TaggingStage.configure({}).setup()
