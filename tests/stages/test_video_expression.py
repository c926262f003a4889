"""``video_expression``: the merge prompt, the checklist against the three descriptions, the name check and the
regeneration with feedback. The LLM is the scripted double of the verify tests (its answers are the known
inputs); spaCy and all-MiniLM-L6-v2 are the real packaged models."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from grand_engine.models.base import load_adapter
from grand_engine.models.text import minilm_spec
from grand_engine.phrases import load_nlp
from grand_engine.stages.verify import CONFIRMED, UNCONFIRMED, Case, quoted_list, rate
from grand_engine.stages.video_expression import VideoExpression, merge_conversation
from grand_engine.stages.video_text import OBJECT_LEVEL, OBJECT_TEXT
from grand_engine.testing import run_stage
from tests.io.video_shards import video_row, video_unit
from tests.models.video_checkpoints import video_tiny_dir  # noqa: F401
from tests.stages import scripted_llm
from tests.stages.scripted_llm import ScriptedLLM

LOOKS = "A small brown goat with short horns and a red collar."
SCENE = "The goat stands on green grass next to a wooden fence."
MOTION = "The goat walks towards the fence and eats grass."
GOOD = (
    "The object is a small brown goat with short horns and a red collar. It stands on green grass next to a "
    "wooden fence. Throughout the video, the goat walks towards the fence and eats grass."
)


@pytest.fixture(autouse=True)
def video_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Teach the scripted LLM the two prompts of this stage (the checklist ones it knows)."""
    markers = (("regenerate", "Your expression has problems"), ("caption", "Join them into one referring expression"))
    monkeypatch.setattr(scripted_llm, "KIND_MARKERS", markers + scripted_llm.KIND_MARKERS)


@pytest.fixture(scope="module")
def models() -> dict:
    return {"embedder": load_adapter(minilm_spec()), "nlp": load_nlp()}


def level_table(entries: list[dict], struct: pa.StructType) -> pa.Table:
    schema = pa.schema([("image_id", pa.string()), ("objects", pa.list_(struct))])
    return pa.Table.from_pylist([{"image_id": "v", "objects": entries}], schema=schema)


def unit_for(objects: dict[int, tuple[str | None, str | None, str | None, str | None]]):
    def entry(oid: int, text: str | None) -> dict:
        return {"object_id": oid, "text": text, "finish_reason": "stop", "frames": [0], "error": None}

    looks = [{"category": c, **entry(oid, a)} for oid, (c, a, _, _) in objects.items()]
    scene = [entry(oid, s) for oid, (_, _, s, _) in objects.items()]
    motion = [entry(oid, m) for oid, (_, _, _, m) in objects.items()]
    row = video_row("v", Path("/nonexistent.mp4"), width=64, height=48, num_frames=8)
    return video_unit(
        [row],
        {
            "video_object_text": level_table(looks, OBJECT_LEVEL),
            "video_scene_text": level_table(scene, OBJECT_TEXT),
            "video_motion_text": level_table(motion, OBJECT_TEXT),
        },
    )


def stage_with(models: dict, llm: ScriptedLLM, **params) -> VideoExpression:
    return VideoExpression.configure(params, llm=llm, embedder=models["embedder"], nlp=models["nlp"])


def test_merge_prompt_holds_the_example_and_the_three_levels() -> None:
    [turn] = merge_conversation("goat", LOOKS, SCENE, MOTION)
    text = turn["content"]
    assert "Descriptions of a goat:" in text and f'Appearance: "{LOOKS}"' in text
    assert f'Scene: "{SCENE}"' in text and f'Actions: "{MOTION}"' in text and text.endswith("Expression:")
    assert "The object is a black goat with short curved horns" in text  # the made-up example's expression


def test_an_expression_that_passes(models: dict) -> None:
    llm = ScriptedLLM(caption=[GOOD], checklist=['["small brown goat", "red collar", "wooden fence", "grass"]'])
    [row] = run_stage(stage_with(models, llm), unit_for({0: ("goat", LOOKS, SCENE, MOTION)})).table.to_pylist()
    [obj] = row["objects"]
    assert obj["expression"] == obj["first_expression"] == GOOD and obj["names_category"] is True
    v = obj["verification"]
    assert (v["status"], v["rounds"], v["items_checked"], v["items_confirmed"]) == ("verified", 0, 4, 4)
    assert v["hallucination_rate_before"] == 0.0


def test_a_wrong_expression_is_written_again_with_both_problems_named(models: dict) -> None:
    bad = "The object is a small brown animal with a red collar. Throughout the video, it chases a cat."
    llm = ScriptedLLM(
        caption=[bad],
        checklist=['["small brown animal", "red collar", "cat"]', '["goat", "red collar", "fence"]'],
        regenerate=[GOOD],
    )
    [row] = run_stage(stage_with(models, llm), unit_for({0: ("goat", LOOKS, SCENE, MOTION)})).table.to_pylist()
    [obj] = row["objects"]
    assert obj["first_expression"] == bad and obj["expression"] == GOOD and obj["names_category"] is True
    assert (obj["verification"]["status"], obj["verification"]["rounds"]) == ("verified", 1)
    assert obj["verification"]["hallucination_rate_before"] == pytest.approx(1 / 3)  # "cat" is in no description
    [feedback] = llm.asked("regenerate")
    last = feedback[-1]["content"]
    assert 'it mentions things the descriptions do not: "cat"' in last
    assert 'it does not call the object a "goat"' in last
    assert feedback[-2] == {"role": "assistant", "content": bad}


def test_the_name_is_checked_even_without_a_checklist(models: dict) -> None:
    no_name = "The object is a small brown animal. Throughout the video, it walks."
    llm = ScriptedLLM(caption=[no_name], checklist=["not json", "still not json"] * 2, repair=[], regenerate=[GOOD])
    llm.queues["repair"] = ["no", "no"]
    [row] = run_stage(
        stage_with(models, llm, max_rounds=1), unit_for({0: ("goat", LOOKS, SCENE, MOTION)})
    ).table.to_pylist()
    [obj] = row["objects"]
    [feedback] = llm.asked("regenerate")
    assert 'it does not call the object a "goat"' in feedback[-1]["content"]
    # the regeneration's checklist is unusable too: the last checked (here: the first) expression stays, failed
    assert obj["expression"] == no_name and obj["verification"]["status"] == "failed"
    assert obj["names_category"] is False


def test_objects_without_every_level_get_an_error_entry(models: dict) -> None:
    llm = ScriptedLLM(caption=[GOOD], checklist=['["goat"]'])
    unit = unit_for(
        {0: ("goat", LOOKS, SCENE, MOTION), 1: ("dog", "A dog.", None, "It runs."), 2: (None, None, None, None)}
    )
    [row] = run_stage(stage_with(models, llm), unit).table.to_pylist()
    first, second, third = row["objects"]
    assert first["verification"]["status"] == "verified"
    assert (second["object_id"], second["expression"], second["error"]) == (
        1,
        None,
        "no description from video_scene_text",
    )
    assert third["error"] == "no description from video_object_text, video_scene_text, video_motion_text"
    assert len(llm.asked("caption")) == 1


class Recording:
    """The real detector adapter, with every image and query list it gets written down."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.batch_size = 8
        self.calls: list[tuple] = []

    def detect(self, images, queries, threshold):
        self.calls.append(([im.shape for im in images], queries))
        return self.detector.detect(images, queries, threshold=threshold)


def test_the_detector_looks_at_the_key_frame(models: dict, tmp_path: Path, video_tiny_dir: Path) -> None:  # noqa: F811
    from grand_engine.config import ModelSpec
    from tests.io.video_shards import square_frames, write_video

    path = tmp_path / "v.mp4"
    write_video(path, square_frames(8))
    detector = Recording(load_adapter(ModelSpec(id=str(video_tiny_dir / "owlv2"), family="owl")))
    llm = ScriptedLLM(caption=[GOOD], checklist=['["goat", "tractor"]'])
    unit = unit_for({0: ("goat", LOOKS, SCENE, MOTION)})
    row = video_row("v", path, width=64, height=48, num_frames=8, indices=[0, 4])
    unit = video_unit(
        [row], {k: unit.inputs[k] for k in ("video_object_text", "video_scene_text", "video_motion_text")}
    )
    stage = VideoExpression.configure(
        {"max_rounds": 0, "detector_threshold": 0.0},
        llm=llm,
        embedder=models["embedder"],
        nlp=models["nlp"],
        detector=detector,
    )
    [out] = run_stage(stage, unit).table.to_pylist()
    # "goat" is the name; "tractor" is in no description: only it goes to the detector, on the key frame (frame 0)
    assert detector.calls == [([(48, 64, 3)], [["tractor"]])]
    [goat, tractor] = out["objects"][0]["verification"]["checklist"]
    assert goat["evidence"] in ("scene_graph_exact", "scene_graph_lemma") and tractor["evidence"] in (
        "detector",
        "none",
    )


def test_the_verify_helpers_it_shares() -> None:
    assert quoted_list(["a red collar"]) == '"a red collar"'
    assert quoted_list(["horns", "a fence", "grass"]) == '"horns", "a fence" and "grass"'
    assert rate([]) is None
    verdicts = [{"verdict": CONFIRMED}, {"verdict": UNCONFIRMED}, {"verdict": CONFIRMED}, {"verdict": UNCONFIRMED}]
    assert rate(verdicts) == 0.5
    case = Case("sav_1/0", "", None, ["first", "second"])
    assert case.caption == "second" and case.rounds == 0 and case.status is None
