"""``dense_caption`` (spec §4.2–§4.3): the prompt, empty scene graphs, the retry rules, seeds, a real tiny LLM."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.llm import Completion
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.dense_caption import (
    DENSE_CAPTION_SCHEMA,
    DenseCaption,
    dense_caption_prompt,
    empty_scene_graph_reason,
    short_caption_lines,
)
from grand_engine.stages.llm_common import in_context_examples, stable_seed
from grand_engine.testing import make_unit
from tests.stages.scripted_llm import ScriptedLLM

GRAPH = (
    "Foreground:\nGroup 0: cat/a grey cat, couch/a brown couch\n\nShort Captions:\na cat on a couch\n\n"
    "Relationships:\na cat, Group Ids: (0)\n\nLandmarks:\nIndoor scene, Living space\n"
)
CAPTIONS_ONLY = "Short Captions:\na dog in a park\n\nRelationships:\n\nLandmarks:\nOutdoor scene, Urban landscape\n"
NOTHING = "Short Captions:\n\nRelationships:\n\nLandmarks:\nOutdoor scene, Urban landscape\n"


def unit_of(graphs: dict[str, tuple[str | None, int]]) -> UnitInput:
    scene_graph = [{"image_id": i, "text": text, "num_objects": n} for i, (text, n) in graphs.items()]
    return make_unit(list(graphs), inputs={"scene_graph": scene_graph})


def scripted_stage(llm: ScriptedLLM, batch_size: int = 8, **params) -> DenseCaption:
    stage = DenseCaption.configure(params, resources={"batch_size": batch_size}, llm=llm)
    stage.setup()
    return stage


# -- the prompt ----------------------------------------------------------------------------------------------


def test_prompt_has_explanation_examples_instruction_then_the_graph() -> None:
    prompt = dense_caption_prompt(GRAPH)
    explanation = prompt.index("four parts")
    separator = prompt.index("\n---\n")
    example_1, example_2 = prompt.index("##Example - 1:"), prompt.index("##Example - 2:")
    instruction = prompt.index("2 to 4 sentences")
    graph = prompt.index("Prompt: Foreground:\nGroup 0: cat/a grey cat, couch/a brown couch")
    assert explanation < separator < example_1 < example_2 < instruction < graph
    assert prompt.endswith("Desired caption:")
    assert "$" not in prompt
    for scene in in_context_examples():
        assert f"Desired caption: {scene['dense_caption']}\n------" in prompt
    # the made-up scenes are rendered by the scene-graph code, e.g. the lighthouse scene's foreground group
    # (man at depth 80 and dog at 78 share a group: centres 114 px apart)
    assert "Foreground:\nGroup 1: person/a man in a yellow raincoat, dog/a small black dog\n" in prompt
    assert "Landmarks:\nOutdoor scene, Natural landscape\nDesired caption:" in prompt


def test_example_captions_never_refer_to_the_scene_graph() -> None:
    for scene in in_context_examples():
        assert not re.search(r"scene graph|group|layer|relationship|\bids?\b", scene["dense_caption"], re.I)


# -- empty scene graphs --------------------------------------------------------------------------------------


def test_empty_scene_graph_rules() -> None:
    assert short_caption_lines(GRAPH) == ["a cat on a couch"]
    assert empty_scene_graph_reason({"text": GRAPH, "num_objects": 2}) is None
    assert empty_scene_graph_reason({"text": CAPTIONS_ONLY, "num_objects": 0}) is None  # captioned from captions
    assert "nothing to describe" in empty_scene_graph_reason({"text": NOTHING, "num_objects": 0})
    assert "no text" in empty_scene_graph_reason({"text": "  ", "num_objects": 3})
    assert "no text" in empty_scene_graph_reason({"text": None, "num_objects": None})


# -- the stage with a scripted LLM ---------------------------------------------------------------------------


def test_rows_errors_seeds_and_batches() -> None:
    rambling = " ".join(["word"] * 2000)  # never finished, longer than both limits
    llm = ScriptedLLM(caption=["A grey cat naps on a brown couch.", "A dog runs in a park.", rambling])
    stage = scripted_stage(llm, batch_size=2, seed=5)
    unit = unit_of({"a": (GRAPH, 2), "b": (NOTHING, 0), "c": (CAPTIONS_ONLY, 0), "d": (GRAPH, 1)})
    result = stage.process(unit)

    assert result.table.schema.equals(DENSE_CAPTION_SCHEMA, check_metadata=False)
    assert result.table.to_pylist() == [
        {
            "image_id": "a",
            "caption": "A grey cat naps on a brown couch.",
            "finish_reason": "stop",
            "attempts": 1,
            "max_tokens_used": 512,
        },
        {
            "image_id": "c",
            "caption": "A dog runs in a park.",
            "finish_reason": "stop",
            "attempts": 1,
            "max_tokens_used": 512,
        },
    ]
    assert [(e.image_id, e.error_type) for e in result.errors] == [
        ("b", "EmptySceneGraph"),
        ("d", "TruncatedCompletion"),
    ]
    assert "512 tokens and again at 1024 tokens" in result.errors[1].message
    # batches of two images: [a, b] -> one conversation (b has nothing to describe), [c, d] -> two, then d again
    assert [(len(c["conversations"]), c["max_new_tokens"]) for c in llm.calls] == [(1, 512), (2, 512), (1, 1024)]
    assert [c["seeds"] for c in llm.calls] == [
        [stable_seed(5, "a", "dense_caption")],
        [stable_seed(5, "c", "dense_caption"), stable_seed(5, "d", "dense_caption")],
        [stable_seed(5, "d", "dense_caption")],
    ]
    assert {(c["temperature"], c["top_p"]) for c in llm.calls} == {(0.7, 0.95)}
    sent = llm.calls[0]["conversations"][0]
    assert sent == [{"role": "user", "content": dense_caption_prompt(GRAPH)}]


def test_model_output_faults_become_rows_or_error_rows() -> None:
    eleven = " ".join(f"Sentence {i}." for i in range(11))
    llm = ScriptedLLM(
        caption=[
            "",  # a: empty, then fine
            eleven,  # b: much longer than asked -> cut after 8 sentences
            Completion("", "stop"),  # c: empty twice -> error
            "A cat.",
            Completion("", "stop"),
        ]
    )
    stage = scripted_stage(llm)
    result = stage.process(unit_of({"a": (GRAPH, 2), "b": (GRAPH, 2), "c": (GRAPH, 2)}))
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    assert rows["a"]["caption"] == "A cat." and rows["a"]["attempts"] == 2
    assert rows["b"]["caption"] == " ".join(f"Sentence {i}." for i in range(8))
    assert rows["b"]["finish_reason"] == "trimmed"
    assert [(e.image_id, e.error_type) for e in result.errors] == [("c", "EmptyCompletion")]


def test_the_same_image_gets_the_same_seed_in_any_batch() -> None:
    one = ScriptedLLM(caption=["x.", "y."])
    scripted_stage(one, batch_size=1).process(unit_of({"p": (GRAPH, 1), "q": (GRAPH, 1)}))
    two = ScriptedLLM(caption=["x.", "y."])
    scripted_stage(two, batch_size=8).process(unit_of({"q": (GRAPH, 1)}))
    assert one.calls[1]["seeds"] == two.calls[0]["seeds"]


def test_bad_parameters_fail_at_configure() -> None:
    with pytest.raises(ValueError, match="retry_max_tokens"):
        DenseCaption.configure({"max_tokens": 64, "retry_max_tokens": 32})


# -- a real (tiny, random) LLM -------------------------------------------------------------------------------


def test_tiny_llama_truncation_is_recorded_never_dropped(tiny_dir: Path) -> None:
    """The random tiny Llama never ends a completion: cut twice -> an error row, or kept as ``length``."""
    spec = ModelSpec(id=str(tiny_dir / "llama"), family="llm")
    params = {"max_tokens": 3, "retry_max_tokens": 6}
    strict = DenseCaption.configure(params, models={"llm": spec})
    strict.setup()
    unit = unit_of({"a": (GRAPH, 2), "b": (GRAPH, 2)})
    result = strict.process(unit)
    assert result.table.num_rows == 0
    assert [(e.image_id, e.error_type) for e in result.errors] == [
        ("a", "TruncatedCompletion"),
        ("b", "TruncatedCompletion"),
    ]

    lenient = DenseCaption.configure({**params, "accept_truncated": True}, models={"llm": spec}, llm=strict.llm)
    lenient.setup()
    rows = lenient.process(unit).table.to_pylist()
    assert [(r["finish_reason"], r["attempts"], r["max_tokens_used"]) for r in rows] == [("length", 2, 6)] * 2
    assert all(r["caption"] for r in rows)
    again = lenient.process(unit).table.to_pylist()
    assert [r["caption"] for r in again] == [r["caption"] for r in rows]  # seeded: reruns reproduce
