"""``video_expression``: an LLM joins each object's three descriptions into one referring expression, checked as
the dense captions are (the ``verify`` stage's checklist), and regenerated with feedback when the check fails.

1. **Merge** (Ref-SAV's last step: Sa2VA, Yuan et al., 2025, arXiv:2501.04001, section 3.3): the object's name
   and its object-, scene- and video-level descriptions go into ``prompts/video_expression.txt`` with one made-up
   example (``prompts/video_expression_example.json`` rendered with ``prompts/video_expression_example.txt``); the
   LLM writes 3 to 5 sentences that start "The object is a …" and end with what it does "Throughout the video".
   Sampling and retry rules as the dense caption's (temperature 0.7, top-p 0.95, at most 512 tokens, one retry of
   a cut or empty completion); text after ``max_sentences`` sentences is cut.
2. **Checklist** (:class:`grand_engine.stages.verify.Verify`'s steps 1–3, unchanged): the LLM lists the physical
   things the expression mentions; each item is confirmed against a vocabulary made of the three descriptions —
   the object's name and every noun chunk of the descriptions as labels (head-noun lemma match), the descriptions
   themselves as attributes (the item's lemmas occur in one of them), then sentence-embedding similarity
   (``embedder`` slot) and an open-vocabulary detector on the object's key frame (``detector`` slot). In the
   checklist, evidence ``scene_graph_*`` therefore means "found in the three descriptions".
3. **Category**: the expression must name the object — the head-noun lemma of its name (``video_object_text``'s
   ``category``) must be a lemma of the expression (person words count as ``person``). This check needs no
   checklist, so an expression without the name is regenerated even when its checklist was unusable.
4. **Regeneration**: an expression with an unconfirmed item or without the object's name is written again — the
   merge conversation, the expression as the assistant turn, then ``prompts/video_expression_feedback.txt``
   naming the problems — at most ``max_rounds`` times.

Output per object: the final ``expression`` (the first one when it passes, else the last checked regeneration),
``verification`` (:data:`grand_engine.schema.VERIFICATION`: ``verified`` only when every item is confirmed and the
name is there) and ``names_category``. An object missing a description or a name upstream gets an entry with
``expression`` null and ``error`` set. Seeds: ``stable_seed(seed, "<video>/<object>", stage, purpose, round)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.labels import PERSON_WORDS
from grand_engine.resources import prompt_file
from grand_engine.runtime.stage import ErrorRecord, Resources, UnitInput
from grand_engine.schema import VERIFICATION, table_schema
from grand_engine.stages.llm_common import Conversation, render_prompt, user_turn
from grand_engine.stages.verify import (
    CHECKLIST_EXAMPLE,
    CHECKLIST_PROMPT,
    CONFIRMED,
    REPAIR_PROMPT,
    UNCHECKED,
    UNCONFIRMED,
    Case,
    Verify,
    Vocabulary,
    normalise_item,
    quoted_list,
    rate,
)
from grand_engine.stages.video_common import by_object, frames_of

MERGE_PROMPT = "video_expression.txt"
MERGE_EXAMPLE_PROMPT = "video_expression_example.txt"
MERGE_EXAMPLE = "video_expression_example.json"
FEEDBACK_PROMPT = "video_expression_feedback.txt"
LEVELS = ("video_object_text", "video_scene_text", "video_motion_text")

EXPRESSION = pa.struct(
    [
        ("object_id", pa.int32()),
        ("category", pa.string()),  # the object's name (video_object_text)
        ("expression", pa.string()),  # the final referring expression (null when it could not be written)
        ("first_expression", pa.string()),  # the merge's first answer (equal to expression when it passed)
        ("names_category", pa.bool_()),  # the final expression names the object (step 3)
        ("verification", VERIFICATION),
        ("error", pa.string()),  # why there is no expression (null when there is)
    ]
)
"""One object's referring expression and its check."""


@cache
def merge_example() -> str:
    """The in-context example of the merge prompt, rendered."""
    data = json.loads(prompt_file(MERGE_EXAMPLE).read_text(encoding="utf-8"))
    keys = ("category", "object_text", "scene_text", "motion_text", "expression")
    missing = [k for k in keys if not isinstance(data.get(k), str)]
    if missing:
        raise ValueError(f"prompt file {MERGE_EXAMPLE!r} needs the strings {missing}")
    return render_prompt(MERGE_EXAMPLE_PROMPT, **{k: data[k] for k in keys}).strip()


def merge_conversation(category: str, object_text: str, scene_text: str, motion_text: str) -> Conversation:
    """Step 1's conversation for one object."""
    text = render_prompt(
        MERGE_PROMPT,
        example=merge_example(),
        category=category,
        object_text=object_text,
        scene_text=scene_text,
        motion_text=motion_text,
    )
    return user_turn(text)


class _KeyFrames:
    """The part of a unit the detector pass reads (``pixels``), serving each case's key frame."""

    def __init__(self, frames: dict[str, np.ndarray]) -> None:
        self._frames = frames

    def pixels(self, case_id: str) -> np.ndarray:
        return self._frames[case_id]


@dataclass
class VideoExpression(Verify):
    """Merge the three levels into a referring expression, verify it, regenerate with feedback."""

    name: ClassVar[str] = "video_expression"
    requires: ClassVar[tuple[str, ...]] = ("videos", *LEVELS)
    level: ClassVar[int | None] = None
    schema: ClassVar[pa.Schema] = table_schema(("objects", pa.list_(EXPRESSION)))
    needs_pixels: ClassVar[bool] = False
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=32)
    prompts: ClassVar[tuple[str, ...]] = (
        MERGE_PROMPT,
        MERGE_EXAMPLE_PROMPT,
        MERGE_EXAMPLE,
        FEEDBACK_PROMPT,
        CHECKLIST_PROMPT,
        CHECKLIST_EXAMPLE,
        REPAIR_PROMPT,
    )
    example_prompt: ClassVar[str] = MERGE_EXAMPLE_PROMPT

    max_sentences: int | None = 5  # the prompt asks for 3 to 5 sentences; longer text is cut

    def setup(self) -> None:
        super().setup()
        merge_example()  # fail at setup when the prompt files are broken

    # -- step 1 ----------------------------------------------------------------------------------------------

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any] | ErrorRecord]:
        rows: dict[str, list[dict[str, Any]]] = {v: [] for v in image_ids}
        cases: list[Case] = []
        info: dict[str, dict[str, Any]] = {}
        for video_id in image_ids:
            levels = [by_object(unit, stage, video_id) for stage in LEVELS]
            for object_id, looks in levels[0].items():
                entries = [looks, levels[1].get(object_id) or {}, levels[2].get(object_id) or {}]
                texts = [e.get("text") for e in entries]
                category = looks.get("category")
                if not category or not all(texts):
                    missing = [s for s, t in zip(LEVELS, texts, strict=True) if not t] or ["video_object_text"]
                    rows[video_id].append(
                        _entry(object_id, category, error=f"no description from {', '.join(missing)}")
                    )
                    continue
                case_id = f"{video_id}/{object_id}"
                conversation = merge_conversation(category, *texts)
                info[case_id] = {
                    "video_id": video_id,
                    "object_id": object_id,
                    "category": category,
                    "conversation": conversation,
                    "key_frame": (looks.get("frames") or [None])[0],
                    "slot": len(rows[video_id]),
                }
                rows[video_id].append({})
                cases.append(Case(case_id, "", self.level_vocabulary(category, texts), []))
        seeds = [self.seed_for(c.image_id, "expression", 0) for c in cases]
        first = self.complete([info[c.image_id]["conversation"] for c in cases], seeds)
        active: list[Case] = []
        for case, gen in zip(cases, first, strict=True):
            if gen.ok:
                case.captions.append(gen.text)
                active.append(case)
            else:
                meta = info[case.image_id]
                rows[meta["video_id"]][meta["slot"]] = _entry(
                    meta["object_id"], meta["category"], error=f"{gen.error[0]}: {gen.error[1]}"
                )
        self._key_frames = self._load_key_frames(unit, [info[c.image_id] | {"id": c.image_id} for c in active])
        self._info = info
        self._rounds(unit, active)
        for case in active:
            meta = info[case.image_id]
            rows[meta["video_id"]][meta["slot"]] = self._object_row(case, meta)
        return [{"image_id": v, "objects": rows[v]} for v in image_ids]

    # -- steps 2-4 -------------------------------------------------------------------------------------------

    def level_vocabulary(self, category: str, texts: list[str]) -> Vocabulary:
        """The vocabulary of step 2: the name and the descriptions' noun chunks as labels, the descriptions as
        attributes."""
        labels = [normalise_item(category)]
        for doc in self.nlp.pipe(texts):
            for chunk in doc.noun_chunks:
                item = normalise_item(chunk.text)
                if item and item not in labels:
                    labels.append(item)
        attributes = [normalise_item(t) for t in texts]
        return Vocabulary(labels=labels, attributes=[a for a in attributes if a])

    def names_category(self, text: str, category: str) -> bool:
        """Step 3: the head-noun lemma of ``category`` is a lemma of ``text`` (person words count as ``person``)."""
        ((head, _),) = self.lemmas.get([normalise_item(category)])
        if not head:
            return False
        lemmas = set()
        for token in self.nlp(text):
            lemma = (token.lemma_ or token.text).lower()
            lemmas.add("person" if lemma in PERSON_WORDS or token.text.lower() in PERSON_WORDS else lemma)
        return head in lemmas

    def _accepted(self, case: Case) -> bool:
        """Verified when every checklist item is confirmed and the expression names the object's category; whether
        it does is kept in the case's ``named`` for the feedback and the row."""
        meta = self._info[case.image_id]
        meta["named"] = self.names_category(case.caption, meta["category"])
        return meta["named"] and super()._accepted(case)

    def _regenerate_unchecked(self, active: list[Case], checked: list[Case], round_: int) -> list[Case]:
        """An expression without a checklist that does not name the category is rewritten (the name check needs no
        checklist) while rounds remain."""
        seen = {id(c) for c in checked}
        out: list[Case] = []
        for case in active:
            if id(case) in seen:
                continue
            meta = self._info[case.image_id]
            meta["named"] = self.names_category(case.caption, meta["category"])
            if case.status == UNCHECKED and not meta["named"] and round_ < self.max_rounds:
                case.status, case.verdicts = None, []
                out.append(case)
        return out

    def _detector_pass(self, unit: UnitInput, cases: list[Case]) -> None:
        """The ``verify`` detector pass on each object's key frame instead of an image."""
        with_frames = [c for c in cases if c.image_id in self._key_frames]
        super()._detector_pass(_KeyFrames(self._key_frames), with_frames)

    def _load_key_frames(self, unit: UnitInput, metas: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        if self.detector is None:
            return {}
        out: dict[str, np.ndarray] = {}
        for meta in metas:
            indices = list(unit.image_row(meta["video_id"])["frame_indices"])
            if meta["key_frame"] in indices:
                (out[meta["id"]],) = frames_of(unit, meta["video_id"], [indices.index(meta["key_frame"])])
        return out

    def _regenerate(self, cases: list[Case], round_: int) -> list[Case]:
        """Step 4 for every case with feedback; returns the cases with a usable new expression."""
        if not cases:
            return []
        conversations: list[Conversation] = []
        for case in cases:
            meta = self._info[case.image_id]
            problems = []
            failed = [v["item"] for v in case.verdicts if v["verdict"] == UNCONFIRMED]
            if failed:
                problems.append(f"it mentions things the descriptions do not: {quoted_list(failed)}")
            if not meta.get("named"):
                problems.append(f'it does not call the object a "{meta["category"]}"')
            feedback = render_prompt(FEEDBACK_PROMPT, problems="; ".join(problems), category=meta["category"])
            conversations.append(
                [*meta["conversation"], {"role": "assistant", "content": case.caption}, *user_turn(feedback)]
            )
        return self._complete_round(cases, conversations, "expression", round_)

    def _object_row(self, case: Case, meta: dict[str, Any]) -> dict[str, Any]:
        final = case.checked[-1] if case.checked and case.status != UNCHECKED else []
        before = case.checked[0] if case.checked else []
        named = meta.get("named")
        if named is None:
            named = self.names_category(case.caption, meta["category"])
        return _entry(
            meta["object_id"],
            meta["category"],
            expression=case.caption,
            first=case.captions[0],
            named=named,
            verification={
                "status": case.status,
                "rounds": case.rounds,
                "checklist": final,
                "items_checked": len(final),
                "items_confirmed": sum(v["verdict"] == CONFIRMED for v in final),
                "hallucination_rate_before": rate(before),
                "hallucination_rate_after": rate(final),
            },
        )


def _entry(
    object_id: int,
    category: str | None,
    *,
    expression: str | None = None,
    first: str | None = None,
    named: bool | None = None,
    verification: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "object_id": int(object_id),
        "category": category,
        "expression": expression,
        "first_expression": first,
        "names_category": named,
        "verification": verification,
        "error": error,
    }
