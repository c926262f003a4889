"""``source_caption``: a GCG caption for every source record, written by an LLM and checked mechanically.

GLaMM built most of GranD-f by repurposing open datasets with an LLM and in-context examples; two prompts do it,
both files under ``prompts/``, each shown first with the made-up examples of ``prompts/gcg_source_examples.json``:

* **relation records** (OpenPSG), ``gcg_relation_caption.txt``: the base captions and the [subject, relationship,
  object] triples between entity names (``person-1``, ``table-1``); the LLM writes a concise description through
  the relationships that keeps every name unchanged, adds nothing and uses short sentences;
* **phrase records** (RefCOCOg, Flickr30K Entities), ``gcg_phrase_caption.txt``: the referring phrases; the LLM
  writes a concise description that contains every phrase word for word, infers no action or relation the phrases
  do not state and uses short sentences.

The in-context examples are earlier turns of the conversation: for each example, a user turn (the prompt filled
with the example's captions and triples, or phrases) and an assistant turn (its desired description); then the
record's own user turn. Small chat models follow a format shown as turns far better than examples pasted into one
message. Generation goes through the ``llm`` slot with the rules of :mod:`grand_engine.stages.llm_common` (sampling,
one retry for a cut or empty completion, a completion cut where a line repeats the prompt's layout — ``Phrases:``,
``Relationships:`` … — or after its first paragraph). Every completion is then checked (:mod:`grand_engine.sources.captions`): every entity name or phrase
present verbatim (ignoring case) with an exact, word-bounded, non-overlapping span, and no entity name the
relations do not have. A rejected caption is **regenerated**: the conversation goes on with the caption and a
feedback turn (``gcg_source_feedback.txt``) naming its problems, with a new seed
(``stable_seed(seed, image_id, "source_caption", "round", r)``), for at most ``max_rounds`` rounds in all. A
record still rejected after the last round is **dropped with an error row** — ``PhraseMissing`` when the last
caption left out a name or phrase, ``CaptionRejected`` for any other problem — whose message lists the problems
of every round and the last caption.

Relation records' accepted captions are rewritten so that each entity name shows as its readable label
(``surface = "label"``: ``person-1`` → ``person``, or ``person 1`` / ``person 2`` when labels repeat) or as
written (``surface = "name"``); spans are computed while rewriting. With ``use_source_sentence``, a phrase record
whose base caption (Flickr30K: the original sentence) already passes the checks keeps it and skips the LLM.

Output: ``caption`` (the final caption), ``spans`` (one per entity, ordered by start; ``caption[start:end] ==
phrase``), ``completion`` (the accepted completion, normalised, before names were rewritten), ``rounds``,
``finish_reason``, ``from_source`` and ``rejected`` (the problems of the earlier rounds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.resources import prompt_file
from grand_engine.runtime.stage import ErrorRecord, Resources, UnitInput
from grand_engine.schema import table_schema
from grand_engine.sources.captions import SURFACES, CaptionCheck, check_phrase_caption, check_relation_caption
from grand_engine.stages.llm_common import (
    Conversation,
    GenerationSettings,
    LLMStage,
    example_markers,
    generation_error,
    render_prompt,
    user_turn,
)

RELATION_PROMPT = "gcg_relation_caption.txt"
PHRASE_PROMPT = "gcg_phrase_caption.txt"
FEEDBACK_PROMPT = "gcg_source_feedback.txt"
EXAMPLES_FILE = "gcg_source_examples.json"

SPAN = pa.struct([("key", pa.string()), ("phrase", pa.string()), ("start", pa.int32()), ("end", pa.int32())])

SOURCE_CAPTION_SCHEMA = table_schema(
    ("caption", pa.string()),  # the final caption
    ("spans", pa.list_(SPAN)),  # one per entity, ordered by start; caption[start:end] == phrase
    ("completion", pa.string()),  # the accepted completion, normalised (entity names not yet rewritten)
    ("rounds", pa.int32()),  # generation rounds it took (1 = the first caption passed; 0 = the source sentence)
    ("finish_reason", pa.string()),  # stop | trimmed | length (length only with accept_truncated); null: source
    ("from_source", pa.bool_()),  # the caption is the record's own base caption (use_source_sentence)
    ("rejected", pa.list_(pa.string())),  # the problems of each rejected round, in order
)
"""The ``source_caption`` table."""


# -- prompts ----------------------------------------------------------------------------------------------------


@cache
def source_examples() -> dict[str, list[dict[str, Any]]]:
    """The in-context examples: ``{"relation": [...], "phrase": [...]}`` (validated once)."""
    data = json.loads(prompt_file(EXAMPLES_FILE).read_text(encoding="utf-8"))
    for kind, needs in (("relation", ("captions", "relations", "caption")), ("phrase", ("phrases", "caption"))):
        examples = data.get(kind) if isinstance(data, dict) else None
        if not isinstance(examples, list) or not examples:
            raise ValueError(f"prompt file {EXAMPLES_FILE!r} must hold a non-empty {kind!r} list")
        for i, example in enumerate(examples):
            missing = [k for k in needs if k not in example]
            if missing:
                raise ValueError(f"prompt file {EXAMPLES_FILE!r}, {kind} example {i}: missing {missing}")
    return data


def _bullets(items: list[str], empty: str = "- (none)") -> str:
    return "\n".join(f"- {item}" for item in items) if items else empty


def relation_lines(relations: list[dict[str, str]] | list[list[str]]) -> str:
    """The relations as the prompt lists them, one ``- [subject, relationship, object]`` per line."""
    triples = [[r["subject"], r["predicate"], r["object"]] if isinstance(r, dict) else list(r) for r in relations]
    return _bullets([f"[{s}, {p}, {o}]" for s, p, o in triples])


def relation_prompt(captions: list[str], relations: list[dict[str, str]] | list[list[str]]) -> str:
    """The user turn of a relation record (or of a relation example)."""
    return render_prompt(
        RELATION_PROMPT, captions=_bullets(list(captions)), relations=relation_lines(relations)
    ).strip()


def phrase_prompt(phrases: list[str]) -> str:
    """The user turn of a phrase record (or of a phrase example)."""
    return render_prompt(PHRASE_PROMPT, phrases=_bullets(list(phrases))).strip()


@cache
def example_turns(kind: str) -> tuple[tuple[str, str], ...]:
    """``(user turn, assistant turn)`` of each in-context example of ``kind`` (relation | phrase)."""
    if kind == "relation":
        return tuple(
            (relation_prompt(ex["captions"], ex["relations"]), ex["caption"]) for ex in source_examples()[kind]
        )
    return tuple((phrase_prompt(ex["phrases"]), ex["caption"]) for ex in source_examples()["phrase"])


def first_conversation(row: dict[str, Any]) -> Conversation:
    """The first-round conversation of a ``source_records`` row: the examples as turns, then the record's turn."""
    kind = row["kind"]
    conversation: Conversation = []
    for user, assistant in example_turns(kind):
        conversation += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    if kind == "relation":
        record = relation_prompt(list(row.get("captions") or []), list(row.get("relations") or []))
    else:
        record = phrase_prompt([e["key"] for e in row.get("entities") or []])
    return conversation + user_turn(record)


def feedback_turn(problems: list[str]) -> dict[str, str]:
    """The user turn that asks for a caption again, naming its problems."""
    return {"role": "user", "content": render_prompt(FEEDBACK_PROMPT, problems="; ".join(problems)).strip()}


def check_caption(row: dict[str, Any], text: str, surface: str = "label") -> CaptionCheck:
    """The caption checks of :mod:`grand_engine.sources.captions` for a ``source_records`` row."""
    entities = row.get("entities") or []
    if row["kind"] == "relation":
        return check_relation_caption(
            text, [e["key"] for e in entities], [e.get("label") or "" for e in entities], surface
        )
    return check_phrase_caption(text, [e["key"] for e in entities])


# -- the stage --------------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    index: int
    image_id: str
    row: dict[str, Any]
    conversation: Conversation
    rejected: list[str]
    last: CaptionCheck | None = None


@dataclass
class SourceCaption(LLMStage):
    """GCG captions of OpenPSG / RefCOCOg / Flickr30K records, checked and regenerated (module docstring)."""

    name: ClassVar[str] = "source_caption"
    requires: ClassVar[tuple[str, ...]] = ("source_records",)
    schema: ClassVar[pa.Schema] = SOURCE_CAPTION_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=128)  # the dense caption stage's batch
    prompts: ClassVar[tuple[str, ...]] = (RELATION_PROMPT, PHRASE_PROMPT, FEEDBACK_PROMPT, EXAMPLES_FILE)
    example_prompt: ClassVar[str] = RELATION_PROMPT

    max_sentences: int | None = None  # new: never cut (a cut caption would lose phrases and be rejected)
    max_rounds: int = 3  # new: a rejected caption is regenerated with feedback; at most this many rounds in all
    surface: str = "label"  # new: relation captions show entity names as their label ("label") or as written ("name")
    use_source_sentence: bool = False  # new: a phrase record's base caption that passes the checks is kept (no LLM)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, got {self.max_rounds}")
        if self.surface not in SURFACES:
            raise ValueError(f"surface must be one of {', '.join(SURFACES)}, got {self.surface!r}")

    def setup(self) -> None:
        super().setup()
        example_turns("relation")  # fail at setup, not per batch, when the prompt files are broken
        example_turns("phrase")

    def settings_for(self, kind: str) -> GenerationSettings:
        """This stage's settings, cutting completions where a line repeats the layout of ``kind``'s prompt."""
        return replace(
            self.settings(), stop_lines=example_markers(RELATION_PROMPT if kind == "relation" else PHRASE_PROMPT)
        )

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any] | ErrorRecord]:
        out: list[dict[str, Any] | ErrorRecord | None] = [None] * len(image_ids)
        pending: list[_Pending] = []
        for k, image_id in enumerate(image_ids):
            row = unit.image_row(image_id)
            if self.use_source_sentence and row["kind"] == "phrase" and row.get("captions"):
                check = check_caption(row, row["captions"][0], self.surface)
                if check.ok:
                    out[k] = self._row(image_id, check, None, rounds=0, from_source=True, rejected=[])
                    continue
            pending.append(_Pending(k, image_id, row, first_conversation(row), []))
        for round_no in range(1, self.max_rounds + 1):
            if not pending:
                break
            pending = self._round(round_no, pending, out)
        for item in pending:
            out[item.index] = self._rejection(item)
        return out  # type: ignore[return-value]

    def _round(
        self, round_no: int, pending: list[_Pending], out: list[dict[str, Any] | ErrorRecord | None]
    ) -> list[_Pending]:
        """Generate one round for every pending record; return those still rejected."""
        still: list[_Pending] = []
        for kind in ("relation", "phrase"):
            group = [p for p in pending if p.row["kind"] == kind]
            if not group:
                continue
            seeds = [
                self.seed_for(p.image_id) if round_no == 1 else self.seed_for(p.image_id, "round", round_no)
                for p in group
            ]
            gens = self.complete([p.conversation for p in group], seeds, self.settings_for(kind))
            for item, gen in zip(group, gens, strict=True):
                if not gen.ok:
                    out[item.index] = generation_error(item.image_id, gen, f"source caption (round {round_no})")
                    continue
                check = check_caption(item.row, gen.text, self.surface)
                if check.ok:
                    out[item.index] = self._row(
                        item.image_id,
                        check,
                        gen.finish_reason,
                        rounds=round_no,
                        from_source=False,
                        rejected=item.rejected,
                    )
                    continue
                item.rejected.append(f"round {round_no}: " + "; ".join(check.problems))
                item.last = check
                item.conversation = [
                    *item.conversation,
                    {"role": "assistant", "content": check.written or gen.text},
                    feedback_turn(check.problems),
                ]
                still.append(item)
        return still

    @staticmethod
    def _row(
        image_id: str,
        check: CaptionCheck,
        finish_reason: str | None,
        *,
        rounds: int,
        from_source: bool,
        rejected: list[str],
    ) -> dict[str, Any]:
        return {
            "image_id": image_id,
            "caption": check.caption,
            "spans": [s.to_json() for s in check.spans],
            "completion": check.written,
            "rounds": rounds,
            "finish_reason": finish_reason,
            "from_source": from_source,
            "rejected": list(rejected),
        }

    def _rejection(self, item: _Pending) -> ErrorRecord:
        last = item.last
        error_type = "PhraseMissing" if last is not None and last.missing else "CaptionRejected"
        caption = last.caption if last is not None else ""
        message = (
            f"{item.image_id}: no caption passed the checks in {self.max_rounds} round(s): "
            + " | ".join(item.rejected)
            + f"; last caption: {caption!r}"
        )
        return ErrorRecord(item.image_id, error_type, message)
