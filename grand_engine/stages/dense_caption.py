"""``dense_caption``: the level-3 dense caption written by an LLM from the rendered scene graph (spec §4.2–§4.3).

1. **Prompt** (§4.2): ``prompts/level3_dense_caption.txt`` — what the scene graph's four parts mean, ``---``, the
   two in-context examples (``prompts/level3_example.txt`` filled with each made-up scene of
   ``prompts/in_context_examples.json``, its scene graph rendered by :func:`~grand_engine.stages.scene_graph.
   build_scene_graph` like any image's), then the instruction (2–4 sentences, describe as if looking, never refer
   to the scene graph) and the image's scene graph. One user turn; the chat template is the model's own (the
   Vicuna v1.1 template when the checkpoint has none, as the reference's FastChat wrapping).
2. **Generation** (§4.3): temperature 0.7, top-p 0.95, at most 512 new tokens, ``resources.batch_size``
   conversations per ``chat`` call (the reference sent 128 prompts per vLLM call). Every conversation is seeded
   with ``stable_seed(seed, image_id, "dense_caption")`` (§14.24). The generation rules of
   :mod:`grand_engine.stages.llm_common` apply: a completion cut by the token limit is retried once with
   ``retry_max_tokens`` and then becomes an error row (the reference dropped it silently, §14.23); an empty one
   is retried once with another seed; a completion is cut where a line repeats the examples' layout
   (``##Example``, ``Prompt:``…), after its first paragraph (``single_paragraph``) and after ``max_sentences``
   sentences (``finish_reason = "trimmed"``).
3. **Empty scene graphs**: an image whose scene graph has no text, or no object *and* no short caption, gets an
   error row (``EmptySceneGraph``) — there is nothing to describe, and a caption from the landmark alone would be
   invented. An image with no object but with short captions is captioned from what its scene graph holds (the
   captions, relationships and landmark); the reference skipped such images entirely.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.runtime.stage import ErrorRecord, Resources, UnitInput
from grand_engine.schema import table_schema
from grand_engine.stages.llm_common import (
    EXAMPLES_FILE,
    Conversation,
    LLMStage,
    generation_error,
    in_context_examples,
    render_prompt,
    user_turn,
)

PROMPT = "level3_dense_caption.txt"
EXAMPLE_PROMPT = "level3_example.txt"

DENSE_CAPTION_SCHEMA = table_schema(
    ("caption", pa.string()),  # the completion, stripped (cut at max_sentences when trimmed)
    ("finish_reason", pa.string()),  # stop | trimmed | length (length only with accept_truncated)
    ("attempts", pa.int32()),  # chat calls it took (1 or 2)
    ("max_tokens_used", pa.int32()),  # token limit of the call that produced it
)
"""The ``dense_caption`` table."""


@cache
def level3_examples() -> str:
    """The two in-context examples of the level-3 prompt, rendered (spec §4.2 step 2)."""
    from grand_engine.stages.scene_graph import build_scene_graph

    parts = []
    for index, scene in enumerate(in_context_examples(), start=1):
        graph = build_scene_graph(scene["annotation"])["text"].strip()
        parts.append(render_prompt(EXAMPLE_PROMPT, index=index, scene_graph=graph, caption=scene["dense_caption"]))
    return "\n".join(p.strip() for p in parts)


def dense_caption_prompt(scene_graph_text: str) -> str:
    """The full level-3 user message for one rendered scene graph."""
    return render_prompt(PROMPT, examples=level3_examples(), scene_graph=scene_graph_text.strip()).strip()


def dense_caption_conversation(scene_graph_text: str) -> Conversation:
    return user_turn(dense_caption_prompt(scene_graph_text))


def short_caption_lines(text: str) -> list[str]:
    """The lines of the ``Short Captions:`` block of a rendered scene graph."""
    lines = text.splitlines()
    try:
        start = lines.index("Short Captions:") + 1
    except ValueError:
        return []
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        out.append(line)
    return out


def empty_scene_graph_reason(row: dict[str, Any]) -> str | None:
    """Why a ``scene_graph`` row cannot be captioned, or ``None`` when it can (module docstring, step 3)."""
    text = row.get("text")
    if not text or not text.strip():
        return "the scene graph has no text"
    if not (row.get("num_objects") or 0) and not short_caption_lines(text):
        return "the scene graph has no object with a depth and no short caption; there is nothing to describe"
    return None


@dataclass
class DenseCaption(LLMStage):
    """Level-3 dense captions from the scene graph with an LLM (spec §4.2–§4.3)."""

    name: ClassVar[str] = "dense_caption"
    requires: ClassVar[tuple[str, ...]] = ("scene_graph",)
    level: ClassVar[int | None] = 3
    schema: ClassVar[pa.Schema] = DENSE_CAPTION_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=128)  # §4.3: 128 prompts per call
    prompts: ClassVar[tuple[str, ...]] = (PROMPT, EXAMPLE_PROMPT, EXAMPLES_FILE)
    example_prompt: ClassVar[str] = EXAMPLE_PROMPT

    def setup(self) -> None:
        super().setup()
        level3_examples()  # fail at setup, not per batch, when the prompt files are broken

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any] | ErrorRecord]:
        out: list[dict[str, Any] | ErrorRecord | None] = [None] * len(image_ids)
        todo: list[int] = []
        conversations: list[Conversation] = []
        seeds: list[int] = []
        for k, image_id in enumerate(image_ids):
            row = unit.input_row("scene_graph", image_id)
            reason = empty_scene_graph_reason(row)
            if reason:
                out[k] = ErrorRecord(image_id=image_id, error_type="EmptySceneGraph", message=reason)
                continue
            todo.append(k)
            conversations.append(dense_caption_conversation(row["text"]))
            seeds.append(self.seed_for(image_id))
        for k, gen in zip(todo, self.complete(conversations, seeds), strict=True):
            image_id = image_ids[k]
            if not gen.ok:
                out[k] = generation_error(image_id, gen, "dense caption")
                continue
            out[k] = {
                "image_id": image_id,
                "caption": gen.text,
                "finish_reason": gen.finish_reason,
                "attempts": gen.attempts,
                "max_tokens_used": gen.max_tokens_used,
            }
        return out  # type: ignore[return-value]
