"""``extra_context``: the level-4 paragraph on use, history and hazards, written by an LLM (spec §5, step 19).

1. **Object list** (§5, :func:`render_level4_objects`): the pool is ``objects``, or ``floating_objects`` when the
   image has none (no depth filter: level 4 uses no depth). When the pool holds more than ``max_objects``, the
   objects with an attribute come first (pool order), then the others, and the list is cut at ``max_objects`` —
   also when more than ``max_objects`` have attributes (the reference's negative slice let the list overshoot,
   §14.37). Text::

       Objects:
       <label>[/<first attribute>]
       <blank>
       Landmarks:
       <category>, <fine_category>

   ``label`` is the object's ``label`` (``labels[0]`` when null); the first attribute has any text up to the
   first ":" removed (as in the scene graph). Every underscore becomes a space. An empty block is left out (no
   objects, or no landmark). An image with neither gets an error row (``NothingToDescribe``).
2. **Prompt**: ``prompts/level4_extra_context.txt`` — the two in-context examples (``prompts/level4_example.txt``
   filled with the made-up scenes of ``prompts/in_context_examples.json``, rendered by the same function), then
   the instruction (one paragraph of 5–7 sentences on usage, history, dangers; never "objects", "scene" or
   "scene graph") and the image's list.
3. **Generation**: as level 3 (temperature 0.7, top-p 0.95, 512 tokens), ``resources.batch_size`` conversations
   per call (the reference: 32), seeded with ``stable_seed(seed, image_id, "extra_context")``, and the same
   retry and trimming rules (:mod:`grand_engine.stages.llm_common`): a completion cut twice or empty twice is an
   error row; one that goes on with a made-up next example is cut there.
   The reference's ``run.py`` could not start at all (undefined argument, §14.36).
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

PROMPT = "level4_extra_context.txt"
EXAMPLE_PROMPT = "level4_example.txt"

EXTRA_CONTEXT_SCHEMA = table_schema(
    ("text", pa.string()),  # the paragraph, stripped (cut at max_sentences when trimmed)
    ("finish_reason", pa.string()),  # stop | trimmed | length (length only with accept_truncated)
    ("attempts", pa.int32()),
    ("max_tokens_used", pa.int32()),
)
"""The ``extra_context`` table."""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _first_attribute(obj: dict[str, Any]) -> str:
    from grand_engine.stages.scene_graph import correct_attribute

    attrs = obj.get("attributes")
    first = attrs if isinstance(attrs, str) else next((a for a in attrs or [] if a and a.strip()), "")
    return correct_attribute(first) if first else ""


def _object_line(obj: dict[str, Any]) -> str:
    label = obj.get("label") or next((lab for lab in obj.get("labels") or [] if lab), "")
    return "/".join(part for part in (_one_line(label), _first_attribute(obj)) if part)


def level4_pool(row: dict[str, Any], max_objects: int = 30) -> list[dict[str, Any]]:
    """Objects (else floating objects), attributed ones first when more than ``max_objects`` (step 1)."""
    pool = list(row.get("objects") or []) or list(row.get("floating_objects") or [])
    if len(pool) > max_objects:
        attributed = [o for o in pool if _first_attribute(o)]
        plain = [o for o in pool if not _first_attribute(o)]
        pool = (attributed + plain)[:max_objects]
    return pool


def render_level4_objects(row: dict[str, Any], max_objects: int = 30) -> str:
    """The level-4 text of one level-2 row (step 1); ``""`` when it has no object and no landmark."""
    lines = [line for line in (_object_line(o) for o in level4_pool(row, max_objects)) if line]
    blocks: list[list[str]] = []
    if lines:
        blocks.append(["Objects:", *lines])
    landmark = row.get("landmark")
    if isinstance(landmark, dict):
        parts = [_one_line(landmark.get(k) or "") for k in ("category", "fine_category")]
        if any(parts):
            blocks.append(["Landmarks:", ", ".join(p for p in parts if p)])
    text = "\n\n".join("\n".join(block) for block in blocks)
    return text.replace("_", " ")


@cache
def level4_examples(max_objects: int = 30) -> str:
    """The two in-context examples of the level-4 prompt, rendered (step 2)."""
    parts = []
    for index, scene in enumerate(in_context_examples(), start=1):
        objects = render_level4_objects(scene["annotation"], max_objects)
        parts.append(render_prompt(EXAMPLE_PROMPT, index=index, objects=objects, context=scene["extra_context"]))
    return "\n".join(p.strip() for p in parts)


def extra_context_conversation(objects_text: str, max_objects: int = 30) -> Conversation:
    return user_turn(render_prompt(PROMPT, examples=level4_examples(max_objects), objects=objects_text.strip()))


@dataclass
class ExtraContext(LLMStage):
    """Level-4 additional context (usage, history, dangers) from the object list and landmark (spec §5)."""

    name: ClassVar[str] = "extra_context"
    requires: ClassVar[tuple[str, ...]] = ("level2",)
    level: ClassVar[int | None] = 4
    schema: ClassVar[pa.Schema] = EXTRA_CONTEXT_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=32)  # §5: 32 prompts per call
    prompts: ClassVar[tuple[str, ...]] = (PROMPT, EXAMPLE_PROMPT, EXAMPLES_FILE)
    example_prompt: ClassVar[str] = EXAMPLE_PROMPT

    max_sentences: int | None = 14  # new: twice the 7 sentences §5 asks for; longer text is cut (null: never)
    max_objects: int = 30  # §5: at most 30 objects, attributed ones first

    def __post_init__(self) -> None:
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        super().__post_init__()

    def setup(self) -> None:
        super().setup()
        level4_examples(self.max_objects)  # fail at setup, not per batch, when the prompt files are broken

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any] | ErrorRecord]:
        out: list[dict[str, Any] | ErrorRecord | None] = [None] * len(image_ids)
        todo: list[int] = []
        conversations: list[Conversation] = []
        seeds: list[int] = []
        for k, image_id in enumerate(image_ids):
            text = render_level4_objects(unit.input_row("level2", image_id), self.max_objects)
            if not text:
                message = "the image has no object, no floating object and no landmark; there is nothing to describe"
                out[k] = ErrorRecord(image_id=image_id, error_type="NothingToDescribe", message=message)
                continue
            todo.append(k)
            conversations.append(extra_context_conversation(text, self.max_objects))
            seeds.append(self.seed_for(image_id))
        for k, gen in zip(todo, self.complete(conversations, seeds), strict=True):
            image_id = image_ids[k]
            if not gen.ok:
                out[k] = generation_error(image_id, gen, "extra context")
                continue
            out[k] = {
                "image_id": image_id,
                "text": gen.text,
                "finish_reason": gen.finish_reason,
                "attempts": gen.attempts,
                "max_tokens_used": gen.max_tokens_used,
            }
        return out  # type: ignore[return-value]
