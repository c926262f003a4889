"""``verify``: check the dense caption for hallucinated objects and regenerate it with feedback (§14.51, new).

The reference has no verification of LLM text (spec §4.3, §14.51). This stage adds one, per image:

1. **Checklist**: the LLM lists, as a JSON array of short noun phrases, every physical thing the caption says
   is visible (greedy by default, ``checklist_temperature``). The conversation is a one-shot chat: the request
   (``prompts/verify_checklist.txt``) for the example caption of ``prompts/verify_checklist_example.json``, its
   answer as the assistant turn, then the same request for the image's caption (small models follow an example
   given as a chat turn far better than one written inside the request). The answer is
   parsed with ``json.loads`` only — never ``eval`` — from the whole answer, else from its first fenced code
   block, else from its first ``[`` to its last ``]``; the value must be an array of strings (or an object with
   one key holding such an array). Items are lower-cased, whitespace-collapsed, stripped of end punctuation and
   of a leading article, deduplicated; items of more than ``max_item_words`` words are dropped (sentences, not
   noun phrases) and only the first ``max_items`` are kept (an answer much longer than asked; an array cut by the
   token limit twice is closed after its last complete item and parsed the same way). An answer that
   is not such JSON gets one repair turn (``prompts/verify_checklist_repair.txt``: the bad answer as the
   assistant turn, then a request for the JSON only); the usual generation rules apply to each call (a cut
   answer is retried once with a larger limit, an empty one once with another seed). Still unusable, or an
   empty list, the caption is kept with status ``unchecked``.
2. **Scene graph**: each item is checked against the image's ``level2`` vocabulary — objects' ``label``,
   ``labels`` and ``attributes``, floating objects' ``labels`` — in this order:

   * ``scene_graph_exact``: the normalised item equals a normalised label or attribute (score 1);
   * ``scene_graph_lemma`` (spaCy): the item's head-noun lemma (the root when it is a noun, else the first
     noun) equals a label's — person words (man, women, people…) all count as ``person``
     (:data:`grand_engine.labels.PERSON_WORDS`), as level-1 labels do — or the item's lemma sequence (articles
     and numbers left out, person words as they are) occurs token-aligned inside an attribute's lemma sequence,
     so "man" never matches "a woman" (§14.41) (score 1);
   * ``scene_graph_embedding``: the best cosine similarity of the item to a label or attribute (sentence
     embeddings) is ``>= similarity_threshold`` (score = that similarity).
3. **Detector**: items still unconfirmed are queried on the image with the open-vocabulary detector; an item is
   confirmed (``detector``) when one of its boxes scores ``>= detector_threshold`` (score = the best box).
   An item left unconfirmed gets evidence ``none`` and the best score of the last check that ran for it.
4. **Regeneration**: when any item is unconfirmed, the caption is regenerated — the level-3 prompt
   (:mod:`grand_engine.stages.dense_caption`), the current caption as the assistant turn, then
   ``prompts/verify_feedback.txt`` naming the unconfirmed items — and steps 1–3 run on the new caption; at most
   ``max_rounds`` regenerations (level-3 sampling: temperature 0.7, top-p 0.95, 512 tokens, same retry rules).

Output: ``caption`` is the final caption — the original when it passes, else the last regeneration that got a
checklist — and ``verification`` (:data:`grand_engine.schema.VERIFICATION`): ``status`` ``verified`` (every item
of the final caption confirmed), ``failed`` (unconfirmed items remain after ``max_rounds`` regenerations, or a
regeneration / its checklist was unusable, in which case the last checked caption is kept) or ``unchecked``
(no usable checklist for the original caption); ``rounds`` = regenerations performed; ``checklist`` = the final
caption's items with verdict, evidence and score; ``hallucination_rate_before`` / ``_after`` = unconfirmed /
checked items of the original / final caption (null when nothing was checked).

Seeds: ``stable_seed(seed, image_id, "verify", <"checklist"|"caption">, round)``. The ``embedder``, ``detector``
and ``spacy`` slots are optional: a step whose model is not configured is skipped (``spacy`` falls back to
:func:`grand_engine.phrases.load_nlp`, so lemmas are always checked).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.labels import PERSON_WORDS
from grand_engine.resources import prompt_file
from grand_engine.runtime.stage import ErrorRecord, Resources, UnitInput, collaborator
from grand_engine.schema import VERIFICATION, table_schema
from grand_engine.stages.dense_caption import EXAMPLE_PROMPT as LEVEL3_EXAMPLE_PROMPT
from grand_engine.stages.dense_caption import PROMPT as LEVEL3_PROMPT
from grand_engine.stages.dense_caption import dense_caption_prompt
from grand_engine.stages.llm_common import (
    EXAMPLES_FILE,
    Conversation,
    Generation,
    GenerationSettings,
    LLMStage,
    render_prompt,
    stable_seed,
    user_turn,
)

CHECKLIST_PROMPT = "verify_checklist.txt"
CHECKLIST_EXAMPLE = "verify_checklist_example.json"
REPAIR_PROMPT = "verify_checklist_repair.txt"
FEEDBACK_PROMPT = "verify_feedback.txt"

VERIFY_SCHEMA = table_schema(
    ("caption", pa.string()),  # the final caption: the original if verified, else the last checked regeneration
    ("verification", VERIFICATION),
)
"""The ``verify`` table."""

EXACT, LEMMA, EMBEDDING, DETECTOR, NONE = (
    "scene_graph_exact",
    "scene_graph_lemma",
    "scene_graph_embedding",
    "detector",
    "none",
)
CONFIRMED, UNCONFIRMED = "confirmed", "unconfirmed"
VERIFIED, FAILED, UNCHECKED = "verified", "failed", "unchecked"

_ARTICLES = ("a ", "an ", "the ")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)
_SKIP_POS = {"DET", "NUM", "PUNCT", "SPACE"}


# -- checklist parsing ---------------------------------------------------------------------------------------


def normalise_item(text: str) -> str:
    """Lower case, underscores to spaces, whitespace collapsed, end punctuation and a leading article removed."""
    out = " ".join(str(text).replace("_", " ").lower().split()).strip(" .,;:!?\"'`()[]{}")
    for article in _ARTICLES:
        if out.startswith(article):
            out = out[len(article) :]
            break
    return out.strip()


def _as_items(value: Any) -> list[str] | None:
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def parse_checklist(text: str, max_items: int = 20, max_item_words: int = 6) -> list[str] | None:
    """The items of a checklist answer, or ``None`` when it holds no JSON array of strings (step 1)."""
    text = (text or "").strip()
    candidates = [text]
    fenced = _FENCE.search(text)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, RecursionError):
            continue
        items = _as_items(value)
        if items is None:
            continue
        out: list[str] = []
        for raw in items:
            item = normalise_item(raw)
            if item and len(item.split()) <= max_item_words and item not in out:
                out.append(item)
        return out[:max_items]
    return None


def close_cut_array(text: str) -> str:
    """A JSON array cut by the token limit, closed after its last complete string item (``""`` when there is
    none): ``'["dog", "sofa", "la'`` gives ``'["dog", "sofa"]'``. The result is still parsed by ``json.loads``."""
    start, end = text.find("["), text.rfind('",')
    return text[start : end + 1] + "]" if 0 <= start < end else ""


@cache
def checklist_example() -> tuple[str, str]:
    """The one-shot example: its caption and its answer as JSON text."""
    data = json.loads(prompt_file(CHECKLIST_EXAMPLE).read_text(encoding="utf-8"))
    caption, answer = data.get("caption"), data.get("answer")
    if not isinstance(caption, str) or not isinstance(answer, list) or not all(isinstance(a, str) for a in answer):
        raise ValueError(f"prompt file {CHECKLIST_EXAMPLE!r} needs a 'caption' string and an 'answer' list of strings")
    return caption, json.dumps(answer)


def checklist_conversation(caption: str) -> Conversation:
    """Step 1's conversation: the example request and answer, then the request for ``caption``."""
    example_caption, example_answer = checklist_example()
    return [
        *user_turn(render_prompt(CHECKLIST_PROMPT, caption=example_caption)),
        {"role": "assistant", "content": example_answer},
        *user_turn(render_prompt(CHECKLIST_PROMPT, caption=caption)),
    ]


# -- the scene-graph vocabulary ------------------------------------------------------------------------------


@dataclass
class Vocabulary:
    """What the upstream models saw in one image: normalised labels and attributes (step 2)."""

    labels: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)

    @property
    def phrases(self) -> list[str]:
        return self.labels + [a for a in self.attributes if a not in self.labels]


def _add(target: list[str], text: Any) -> None:
    if isinstance(text, str):
        item = normalise_item(text.split(":", 1)[1] if ":" in text else text)
        if item and item not in target:
            target.append(item)


def build_vocabulary(level2_row: dict[str, Any]) -> Vocabulary:
    """Labels and attributes of the objects and labels of the floating objects of a ``level2`` row."""
    vocab = Vocabulary()
    for obj in level2_row.get("objects") or []:
        _add(vocab.labels, obj.get("label"))
        for label in obj.get("labels") or []:
            _add(vocab.labels, label)
        attrs = obj.get("attributes")
        for attr in [attrs] if isinstance(attrs, str) else attrs or []:
            _add(vocab.attributes, attr)
    for obj in level2_row.get("floating_objects") or []:
        _add(vocab.labels, obj.get("label"))
        for label in obj.get("labels") or []:
            _add(vocab.labels, label)
    return vocab


# -- lemma matching ------------------------------------------------------------------------------------------


class LemmaCache:
    """Head-noun lemma and content-lemma sequence of short phrases, parsed once per phrase (bounded)."""

    def __init__(self, nlp: Any, limit: int = 100_000) -> None:
        self.nlp = nlp
        self.limit = limit
        self._cache: dict[str, tuple[str, tuple[str, ...]]] = {}

    def get(self, phrases: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
        missing = [p for p in dict.fromkeys(phrases) if p not in self._cache]
        if len(self._cache) + len(missing) > self.limit:
            self._cache.clear()
            missing = list(dict.fromkeys(phrases))
        for phrase, doc in zip(missing, self.nlp.pipe(missing), strict=True):
            self._cache[phrase] = _analyse(doc)
        return [self._cache[p] for p in phrases]


def _lemma(token: Any) -> str:
    return (token.lemma_ or token.text).lower()


def _analyse(doc: Any) -> tuple[str, tuple[str, ...]]:
    """Head-noun lemma (person words mapped to ``person``, as level-1 labels are) and the content lemmas."""
    tokens = [t for t in doc if t.pos_ not in _SKIP_POS]
    if not tokens:
        return "", ()
    nouns = [t for t in tokens if t.pos_ in ("NOUN", "PROPN")]
    root = next((t for t in nouns if t.dep_ == "ROOT"), None)
    head = root or (nouns[0] if nouns else tokens[-1])  # "dog lying on a rug": the root is the verb
    head_lemma = _lemma(head)
    if head_lemma in PERSON_WORDS or head.text.lower() in PERSON_WORDS:
        head_lemma = "person"
    return head_lemma, tuple(_lemma(t) for t in tokens)


def _contains(seq: tuple[str, ...], sub: tuple[str, ...]) -> bool:
    n = len(sub)
    return n > 0 and any(seq[i : i + n] == sub for i in range(len(seq) - n + 1))


# -- the stage -----------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One caption's verification state across rounds (an image's dense caption; a video object's expression)."""

    image_id: str
    scene_graph: str
    vocab: Vocabulary
    captions: list[str]  # the original, then every usable regeneration
    checked: list[list[dict[str, Any]]] = field(default_factory=list)  # verdicts per caption that got a checklist
    items: list[str] = field(default_factory=list)  # the current caption's checklist
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0
    status: str | None = None

    @property
    def caption(self) -> str:
        return self.captions[-1]


def rate(verdicts: list[dict[str, Any]]) -> float | None:
    """The hallucination rate of a checklist: unconfirmed items / checked items (``None`` when none was checked)."""
    if not verdicts:
        return None
    return sum(v["verdict"] == UNCONFIRMED for v in verdicts) / len(verdicts)


def quoted_list(items: Sequence[str]) -> str:
    """``"a"``, ``"a" and "b"``, ``"a", "b" and "c"``: checklist items as the feedback prompts name them."""
    quoted = [f'"{item}"' for item in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


@dataclass
class Verify(LLMStage):
    """Checklist verification of the dense caption against the scene graph and a detector (§14.51).

    The generation parameters of :class:`LLMStage` apply to regenerated captions (as ``dense_caption``); the
    checklist has its own (``checklist_*``).
    """

    name: ClassVar[str] = "verify"
    requires: ClassVar[tuple[str, ...]] = ("dense_caption", "scene_graph", "level2", "images")
    level: ClassVar[int | None] = 3
    schema: ClassVar[pa.Schema] = VERIFY_SCHEMA
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("llm", "detector", "embedder", "spacy")
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=128)  # §4.3: 128 prompts per call
    prompts: ClassVar[tuple[str, ...]] = (
        LEVEL3_PROMPT,
        LEVEL3_EXAMPLE_PROMPT,
        EXAMPLES_FILE,
        CHECKLIST_PROMPT,
        CHECKLIST_EXAMPLE,
        REPAIR_PROMPT,
        FEEDBACK_PROMPT,
    )
    example_prompt: ClassVar[str] = LEVEL3_EXAMPLE_PROMPT

    checklist_temperature: float = 0.0  # new: the checklist is extraction, so greedy
    checklist_max_tokens: int = 256  # new: about 20 short phrases as JSON
    checklist_retry_max_tokens: int = 512  # new: one retry with twice the limit
    max_items: int = 20  # new: items kept per checklist (an answer much longer than asked is cut)
    max_item_words: int = 6  # new: longer "items" are sentences, not noun phrases, and are dropped
    similarity_threshold: float = 0.75  # new: all-MiniLM-L6-v2 puppy/dog 0.80, couch/sofa 0.86, car/truck 0.69
    detector_threshold: float = 0.1  # the OWL slot's level-1 vote threshold (step 10a, detect_ov 0.1)
    max_rounds: int = 2  # new: regenerations with feedback before the caption is marked failed

    detector: Any = collaborator()  # open-vocabulary detector adapter (optional slot)
    embedder: Any = collaborator()  # sentence-embedding adapter (optional slot)
    nlp: Any = collaborator()  # spaCy pipeline (the `spacy` slot, else the packaged English model)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.checklist_settings()
        if self.max_rounds < 0:
            raise ValueError(f"max_rounds must be >= 0, got {self.max_rounds}")
        if self.max_items < 1 or self.max_item_words < 1:
            raise ValueError("max_items and max_item_words must be >= 1")

    def checklist_settings(self) -> GenerationSettings:
        return GenerationSettings(
            max_tokens=self.checklist_max_tokens,
            retry_max_tokens=self.checklist_retry_max_tokens,
            temperature=self.checklist_temperature,
            top_p=1.0,
        )

    # -- setup ---------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the models that were not handed in (``llm``, ``detector``, ``embedder``, ``nlp``)."""
        super().setup()
        if self.detector is None:
            self.detector = self.load_model("detector", required=False)
        if self.embedder is None:
            self.embedder = self.load_model("embedder", required=False)
        if self.nlp is None:
            spacy_adapter = self.load_model("spacy", required=False)
            if spacy_adapter is not None:
                self.nlp = spacy_adapter.nlp
            else:
                from grand_engine.phrases import load_nlp  # deferred: loading spaCy takes a second

                self.nlp = load_nlp()
        self.lemmas = LemmaCache(self.nlp)
        dense_caption_prompt("")  # fail at setup when the prompt files are broken
        checklist_conversation("")

    # -- processing ----------------------------------------------------------------------------------------

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any] | ErrorRecord]:
        out: dict[str, dict[str, Any] | ErrorRecord] = {}
        cases: list[Case] = []
        for image_id in image_ids:
            caption = (unit.input_row("dense_caption", image_id).get("caption") or "").strip()
            if not caption:
                out[image_id] = ErrorRecord(image_id, "EmptyCaption", "dense_caption has no caption for this image")
                continue
            graph = unit.input_row("scene_graph", image_id).get("text") or ""
            vocab = build_vocabulary(unit.input_row("level2", image_id))
            cases.append(Case(image_id, graph, vocab, [caption]))

        self._rounds(unit, cases)
        for case in cases:
            out[case.image_id] = self._row(case)
        return [out[i] for i in image_ids]

    def _rounds(self, unit: UnitInput, cases: list[Case]) -> None:
        """Steps 1-4 until every case is verified, failed or out of rounds: checklist, matching, and a new caption
        for each case not yet accepted while rounds remain."""
        active = cases
        for round_ in range(self.max_rounds + 1):
            if not active:
                break
            checked = self._checklists(active, round_)
            self._match(unit, checked)
            regenerate: list[Case] = []
            for case in checked:
                case.checked.append(case.verdicts)
                if self._accepted(case):
                    case.status = VERIFIED
                elif round_ == self.max_rounds:
                    case.status = FAILED
                else:
                    regenerate.append(case)
            regenerate += self._regenerate_unchecked(active, checked, round_)
            active = self._regenerate(regenerate, round_ + 1)

    def _accepted(self, case: Case) -> bool:
        """A checked caption is verified when every checklist item is confirmed."""
        return all(v["verdict"] == CONFIRMED for v in case.verdicts)

    def _regenerate_unchecked(self, active: list[Case], checked: list[Case], round_: int) -> list[Case]:
        """Cases without a checklist this round that still get a new caption (none: they stay unchecked)."""
        return []

    def _checklists(self, cases: list[Case], round_: int) -> list[Case]:
        """Step 1 for the current caption of every case; returns the cases that got a non-empty checklist."""
        settings = self.checklist_settings()
        prompts = [checklist_conversation(c.caption) for c in cases]
        seeds = [self.seed_for(c.image_id, "checklist", round_) for c in cases]
        gens = self.complete(prompts, seeds, settings)
        items: list[list[str] | None] = [self._items(g) for g in gens]

        bad = [k for k, found in enumerate(items) if found is None]
        if bad:
            repairs: list[Conversation] = [
                [
                    *prompts[k],
                    {"role": "assistant", "content": gens[k].text or "(no answer)"},
                    *user_turn(render_prompt(REPAIR_PROMPT)),
                ]
                for k in bad
            ]
            repair_seeds = [stable_seed(seeds[k], "repair") for k in bad]
            for k, gen in zip(bad, self.complete(repairs, repair_seeds, settings), strict=True):
                items[k] = self._items(gen)

        kept: list[Case] = []
        for case, found in zip(cases, items, strict=True):
            if found:
                case.items = found
                kept.append(case)
            elif len(case.captions) == 1:
                case.status = UNCHECKED  # no usable checklist for the original caption
            else:
                case.captions.pop()  # the regeneration cannot be checked: keep the last checked caption
                case.status = FAILED
        return kept

    def _items(self, gen: Generation) -> list[str] | None:
        if gen.ok:
            return parse_checklist(gen.text, self.max_items, self.max_item_words)
        if gen.error and gen.error[0] == "TruncatedCompletion":
            return parse_checklist(close_cut_array(gen.text), self.max_items, self.max_item_words)
        return None

    def _match(self, unit: UnitInput, cases: list[Case]) -> None:
        """Steps 2–3: a verdict for every checklist item of every case."""
        for case in cases:
            case.verdicts = [self._match_vocabulary(item, case.vocab) for item in case.items]
        self._embedding_pass(cases)
        self._detector_pass(unit, cases)

    def _match_vocabulary(self, item: str, vocab: Vocabulary) -> dict[str, Any]:
        if item in vocab.labels or item in vocab.attributes:
            return _verdict(item, CONFIRMED, EXACT, 1.0)
        (head, seq), *labels = self.lemmas.get([item, *vocab.labels])
        if head and any(head == label_head for label_head, _ in labels):
            return _verdict(item, CONFIRMED, LEMMA, 1.0)
        if seq and any(_contains(attr_seq, seq) for _, attr_seq in self.lemmas.get(vocab.attributes)):
            return _verdict(item, CONFIRMED, LEMMA, 1.0)
        return _verdict(item, UNCONFIRMED, NONE, 0.0)

    def _embedding_pass(self, cases: list[Case]) -> None:
        if self.embedder is None:
            return
        for case in cases:
            pending = [k for k, v in enumerate(case.verdicts) if v["verdict"] == UNCONFIRMED]
            phrases = case.vocab.phrases
            if not pending or not phrases:
                continue
            sims = np.asarray(self.embedder.similarity([case.items[k] for k in pending], phrases), dtype=np.float64)
            for row, k in enumerate(pending):
                best = float(sims[row].max())
                if best >= self.similarity_threshold:
                    case.verdicts[k] = _verdict(case.items[k], CONFIRMED, EMBEDDING, best)
                else:
                    case.verdicts[k]["score"] = best

    def _detector_pass(self, unit: UnitInput, cases: list[Case]) -> None:
        if self.detector is None:
            return
        todo = [c for c in cases if any(v["verdict"] == UNCONFIRMED for v in c.verdicts)]
        step = max(1, int(getattr(self.detector, "batch_size", 8)))
        for start in range(0, len(todo), step):
            part = todo[start : start + step]
            queries = [[v["item"] for v in c.verdicts if v["verdict"] == UNCONFIRMED] for c in part]
            images = [unit.pixels(c.image_id) for c in part]
            found = self.detector.detect(images, queries, threshold=0.0)
            for case, dets in zip(part, found, strict=True):
                best: dict[str, float] = {}
                for label, score in zip(dets.labels, np.asarray(dets.scores, dtype=np.float64), strict=True):
                    best[label] = max(best.get(label, 0.0), float(score))
                for k, v in enumerate(case.verdicts):
                    if v["verdict"] != UNCONFIRMED:
                        continue
                    score = best.get(v["item"], 0.0)
                    if score >= self.detector_threshold and v["item"] in best:
                        case.verdicts[k] = _verdict(v["item"], CONFIRMED, DETECTOR, score)
                    else:
                        case.verdicts[k]["score"] = score

    def _regenerate(self, cases: list[Case], round_: int) -> list[Case]:
        """Step 4: a new caption for every case with feedback; returns the cases with a usable one."""
        if not cases:
            return []
        conversations: list[Conversation] = []
        for case in cases:
            failed = [v["item"] for v in case.verdicts if v["verdict"] == UNCONFIRMED]
            conversations.append(
                [
                    *user_turn(dense_caption_prompt(case.scene_graph)),
                    {"role": "assistant", "content": case.caption},
                    *user_turn(render_prompt(FEEDBACK_PROMPT, failed_items=quoted_list(failed))),
                ]
            )
        return self._complete_round(cases, conversations, "caption", round_)

    def _complete_round(
        self, cases: list[Case], conversations: list[Conversation], purpose: str, round_: int
    ) -> list[Case]:
        """One regeneration round: each case's conversation completed (seeded by image, ``purpose`` and round);
        returns the cases that got a usable caption. A case whose generation fails is marked failed and keeps its
        last checked caption."""
        seeds = [self.seed_for(c.image_id, purpose, round_) for c in cases]
        kept: list[Case] = []
        for case, gen in zip(cases, self.complete(conversations, seeds), strict=True):
            case.rounds = round_
            if gen.ok:
                case.captions.append(gen.text)
                kept.append(case)
            else:
                case.status = FAILED
        return kept

    def _row(self, case: Case) -> dict[str, Any]:
        final = case.checked[-1] if case.checked and case.status != UNCHECKED else []
        before = case.checked[0] if case.checked else []
        return {
            "image_id": case.image_id,
            "caption": case.caption,
            "verification": {
                "status": case.status,
                "rounds": case.rounds,
                "checklist": final,
                "items_checked": len(final),
                "items_confirmed": sum(v["verdict"] == CONFIRMED for v in final),
                "hallucination_rate_before": rate(before),
                "hallucination_rate_after": rate(final),
            },
        }


def _verdict(item: str, verdict: str, evidence: str, score: float) -> dict[str, Any]:
    return {"item": item, "verdict": verdict, "evidence": evidence, "score": float(score)}
