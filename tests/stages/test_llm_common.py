"""Shared LLM-stage helpers: prompt files, stable seeds, sentence cuts, the generation/retry rules, batching.

The scripted LLM counts words as tokens, so the token-limit cases below are worked out by counting words.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grand_engine.models.llm import Completion
from grand_engine.stages.llm_common import (
    GenerationSettings,
    complete_sentences,
    cut_at_lines,
    cut_sentences,
    example_markers,
    first_paragraph,
    generate,
    in_context_examples,
    prompt_template,
    render_prompt,
    split_sentences,
    stable_seed,
    user_turn,
)
from tests.stages.scripted_llm import ScriptedLLM

REPO = Path(__file__).resolve().parents[2]
CAPTION_PROMPT = user_turn("Prompt: x\nDesired caption:")  # the scripted LLM reads it as a caption request


def settings(**kw) -> GenerationSettings:
    base = {"max_tokens": 10, "retry_max_tokens": 20, "temperature": 0.7, "top_p": 0.95, "max_sentences": 3}
    return GenerationSettings(**{**base, **kw})


def run_one(answers: list, **kw):
    llm = ScriptedLLM(caption=answers)
    [gen] = generate(llm, [CAPTION_PROMPT], [11], settings(**kw))
    return gen, llm


# -- prompts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "placeholders"),
    [
        ("level3_dense_caption.txt", {"examples", "scene_graph"}),
        ("level3_example.txt", {"index", "scene_graph", "caption"}),
        ("level4_extra_context.txt", {"examples", "objects"}),
        ("level4_example.txt", {"index", "objects", "context"}),
        ("verify_checklist.txt", {"caption"}),
        ("verify_checklist_repair.txt", set()),
        ("verify_feedback.txt", {"failed_items"}),
    ],
)
def test_prompt_files_have_exactly_their_placeholders(name: str, placeholders: set[str]) -> None:
    assert set(prompt_template(name).get_identifiers()) == placeholders


def test_render_prompt_names_a_missing_value() -> None:
    with pytest.raises(ValueError, match=r"level3_example.txt.*\$caption"):
        render_prompt("level3_example.txt", index=1, scene_graph="g")
    # values are inserted verbatim, even with "$" in them
    text = render_prompt("level3_example.txt", index=2, scene_graph="$x", caption="costs $5")
    assert text.splitlines()[:3] == ["##Example - 2:", "Prompt: $x", "Desired caption: costs $5"]


def test_in_context_examples_are_two_scenes_with_both_answers() -> None:
    scenes = in_context_examples()
    assert len(scenes) == 2
    for scene in scenes:
        assert scene["annotation"]["objects"] and scene["annotation"]["landmark"]
        assert 2 <= complete_sentences(scene["dense_caption"]) <= 4  # what the level-3 instruction asks
        assert 5 <= complete_sentences(scene["extra_context"]) <= 7  # what the level-4 instruction asks


# -- seeds ---------------------------------------------------------------------------------------------------


def test_stable_seed_is_deterministic_in_range_and_distinct() -> None:
    a = stable_seed(0, "sa_1", "dense_caption")
    assert a == stable_seed(0, "sa_1", "dense_caption")
    assert 0 <= a < 2**31
    others = {stable_seed(0, "sa_2", "dense_caption"), stable_seed(1, "sa_1", "dense_caption")}
    others.add(stable_seed(0, "sa_1", "extra_context"))
    assert a not in others and len(others) == 3


def test_stable_seed_does_not_depend_on_the_process_hash_seed() -> None:
    code = "from grand_engine.stages.llm_common import stable_seed; print(stable_seed(3, 'sa_9', 'verify'))"
    values = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
        values.add(out.stdout.strip())
    assert values == {str(stable_seed(3, "sa_9", "verify"))}


# -- sentences -----------------------------------------------------------------------------------------------


def test_sentences_split_cut_and_count() -> None:
    text = 'He said "hi." Then he left! Was it 3.5 metres? and more'
    assert split_sentences(text) == ['He said "hi."', "Then he left!", "Was it 3.5 metres?", "and more"]
    assert complete_sentences(text) == 3
    assert cut_sentences(text, 2) == 'He said "hi." Then he left!'
    assert cut_sentences(text, 5) == text


def test_first_paragraph_needs_a_finished_sentence_before_the_blank_line() -> None:
    assert first_paragraph("A cat sits.\n\n---\nThe list is:") == "A cat sits."
    assert first_paragraph("Here it is:\n\nA cat sits. It naps.\n \nMore.") == "Here it is:\n\nA cat sits. It naps."
    assert first_paragraph("no blank line. at all") == "no blank line. at all"


def test_example_markers_come_from_the_example_templates() -> None:
    assert example_markers("level3_example.txt") == ("##Example -", "Prompt:", "Desired caption:", "------")
    assert example_markers("level4_example.txt") == ("##Example -", "Prompt:", "Additional context:", "------")


def test_cut_at_lines_ignores_hashes_spaces_and_case() -> None:
    markers = ("##Example -", "Prompt:")
    assert cut_at_lines("A cat naps.\n### example - 3:\nPrompt: x", markers) == "A cat naps."
    assert cut_at_lines("A cat naps.\n  PROMPT: Objects:", markers) == "A cat naps."
    assert cut_at_lines("The prompt: a cat.", markers) == "The prompt: a cat."  # only at the start of a line
    assert cut_at_lines("Prompt: Objects:\ncat", markers) == ""


# -- generation rules ----------------------------------------------------------------------------------------


def test_a_finished_completion_is_kept_as_is() -> None:
    gen, llm = run_one(["  A dog sleeps. It is brown.  "])
    assert (gen.text, gen.finish_reason, gen.attempts, gen.max_tokens_used, gen.ok) == (
        "A dog sleeps. It is brown.",
        "stop",
        1,
        10,
        True,
    )
    assert llm.calls[0]["seeds"] == [11] and llm.calls[0]["temperature"] == 0.7 and llm.calls[0]["top_p"] == 0.95


def test_much_longer_than_asked_is_cut_at_max_sentences() -> None:
    gen, _ = run_one(["One. Two. Three. Four. Five."])
    assert (gen.text, gen.finish_reason, gen.attempts) == ("One. Two. Three.", "trimmed", 1)


def test_a_second_block_is_dropped_with_single_paragraph() -> None:
    gen, _ = run_one(["A cat naps.\n\n--- The list is: cat"], single_paragraph=True)
    assert (gen.text, gen.finish_reason) == ("A cat naps.", "trimmed")
    gen, _ = run_one(["A cat naps.\n\n--- The list is: cat"], single_paragraph=False)
    assert (gen.text, gen.finish_reason) == ("A cat naps.\n\n--- The list is: cat", "stop")


def test_an_echo_of_the_examples_is_cut_and_an_all_echo_answer_reseeded() -> None:
    markers = ("##Example -", "Prompt:")
    gen, _ = run_one(["A cat naps.\n##Example - 3:\nPrompt: a b c d e f g h"], stop_lines=markers)
    assert (gen.text, gen.finish_reason, gen.attempts) == ("A cat naps.", "trimmed", 1)  # cut at 10 words: no retry
    gen, llm = run_one(["Prompt: Objects:\ncat", "A cat."], stop_lines=markers)
    assert (gen.text, gen.attempts) == ("A cat.", 2)
    assert llm.calls[1]["seeds"] == [stable_seed(11, "retry")]


def test_cut_by_the_limit_is_retried_once_with_the_larger_limit_and_same_seed() -> None:
    fifteen = " ".join(f"w{i}" for i in range(1, 15)) + " end."  # 15 words, one sentence
    gen, llm = run_one([fifteen])
    assert (gen.text, gen.finish_reason, gen.attempts, gen.max_tokens_used) == (fifteen, "stop", 2, 20)
    assert [c["max_new_tokens"] for c in llm.calls] == [10, 20]
    assert [c["seeds"] for c in llm.calls] == [[11], [11]]


def test_cut_twice_is_an_error_unless_truncation_is_accepted() -> None:
    rambling = " ".join(f"w{i}" for i in range(25))  # 25 words, never finished
    gen, _ = run_one([rambling])
    assert not gen.ok and gen.error[0] == "TruncatedCompletion"
    assert "10 tokens" in gen.error[1] and "20 tokens" in gen.error[1]
    kept, _ = run_one([rambling], accept_truncated=True)
    assert kept.ok and (kept.finish_reason, kept.attempts, kept.max_tokens_used) == ("length", 2, 20)
    assert kept.text == " ".join(f"w{i}" for i in range(20))


def test_cut_after_max_sentences_needs_no_retry() -> None:
    # 14 words: the first 10 hold three finished sentences, so the cut lost only text beyond the limit
    gen, llm = run_one(["A b. C d. E f. G h i j k l m n"])
    assert (gen.text, gen.finish_reason, gen.attempts) == ("A b. C d. E f.", "trimmed", 1)
    assert len(llm.calls) == 1


def test_empty_is_retried_once_with_another_seed() -> None:
    gen, llm = run_one(["   ", "A cat."])
    assert (gen.text, gen.finish_reason, gen.attempts, gen.max_tokens_used) == ("A cat.", "stop", 2, 10)
    assert llm.calls[1]["seeds"] == [stable_seed(11, "retry")] != [11]
    assert llm.calls[1]["max_new_tokens"] == 10


def test_empty_twice_is_an_error() -> None:
    gen, _ = run_one(["", Completion("", "stop")])
    assert gen.error is not None and gen.error[0] == "EmptyCompletion"


def test_batch_results_keep_their_order_and_retry_only_what_needs_it() -> None:
    llm = ScriptedLLM(caption=["Fine one.", "", " ".join(["x"] * 12) + ".", "Second try."])
    convs = [user_turn(f"Prompt: {i}\nDesired caption:") for i in range(3)]
    gens = generate(llm, convs, [1, 2, 3], settings())
    assert [(g.text, g.attempts) for g in gens] == [
        ("Fine one.", 1),
        ("Second try.", 2),
        (" ".join(["x"] * 12) + ".", 2),
    ]
    # first call: all three; then the cut one with the larger limit; then the empty one with a new seed
    assert [(len(c["conversations"]), c["max_new_tokens"]) for c in llm.calls] == [(3, 10), (1, 20), (1, 10)]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="retry_max_tokens"):
        settings(retry_max_tokens=10)
    with pytest.raises(ValueError, match="max_sentences"):
        settings(max_sentences=0)


def test_a_wrong_number_of_completions_raises() -> None:
    class Short(ScriptedLLM):
        def chat(self, conversations, **kw):
            return super().chat(conversations, **kw)[:-1]

    with pytest.raises(RuntimeError, match="returned 1 completions for 2"):
        generate(Short(caption=["a.", "b."]), [CAPTION_PROMPT, user_turn("y\nDesired caption:")], [1, 2], settings())
