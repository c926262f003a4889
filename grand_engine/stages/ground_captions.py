"""``ground_captions``: ground the short captions and the dense caption to object ids (GranD step 20, §6).

Every caption is stored exactly as produced (no stripping, no punctuation removal, no ``unicode_escape``);
phrases are found *in* it, so every detail's ``tokens_positive`` ``[start, end)`` indexes the stored caption and
``caption[start:end]`` is the detail's ``phrase`` (the reference computed offsets on one string and stored
another, §14.41). Matching is case-insensitive and whitespace-tolerant (a run of whitespace in the caption
matches one space of the phrase), and always whole-word: a phrase only matches where it neither starts nor
ends inside a word, so "man" never matches "woman".

**Candidates** (what a caption phrase can be grounded to), built from the ``level2`` row:

* *attributes*: every attribute of every object and floating object (text up to the first ":" removed, as
  the scene graph does for a leaked ``Assistant:`` prefix; non-word characters at either end stripped),
  grounded to that object;
* *relationships*: every ``relationships`` phrase, grounded to **all** its object ids (the reference used the
  minimum id for short captions and ``object_ids[0]`` in its fuzzy pass, while the box came from another id,
  §14.40).

**Passes**, in order; a phrase grounded by one pass is not looked at again:

1. **exact** — dense caption (step 20b pass 1): for each object and floating object, the first of its
   attributes found in the caption that is not already a detail; then every relationship phrase found in the
   caption. Short captions (step 20a): the relationship phrases found in the caption. The first occurrence
   gives the span.
2. **lemma** (step 20b pass 2): the caption's noun phrases (:func:`grand_engine.phrases.extract_phrases`, the
   reference's "llava style" extractor) that no detail covers yet (same text, or a span inside a detail's span)
   are scored against every candidate: 1.0 when one contains the other as a whole-word sequence, else the
   fraction of the shorter text's content lemmas (spaCy, stop words and punctuation removed) that are lemmas
   of the longer text — whole lemmas, where the reference tested substrings ("man" in "woman"). The best
   candidate (first on ties) is taken when its score is ``>= lemma_overlap``.
3. **embedding** (project addition; the reference's spaCy-vector pass is disabled): the phrases still
   ungrounded are compared with every candidate by cosine similarity of sentence embeddings (the ``embedder``
   slot, all-MiniLM-L6-v2); best candidate when ``>= embedding_threshold``. Skipped when no embedder is
   configured.
4. **noun** (step 20b pass 3): each phrase still ungrounded is parsed on its own and split by the reference's
   "blip2 style" extractor into (noun, sub-phrase) pairs; a sub-phrase is grounded when exactly one object
   *or floating object* (the reference searched ``objects`` only, §14.41) has the noun among its ``labels`` /
   ``label`` (equal to the word or its lemma, or differing by a trailing "s"; ``man``/``woman``/``men``/
   ``women`` also match ``person``, which is what level 1 turns them into), or exactly two do and one box
   encloses the other (the enclosing one is taken).

Passes 2–4 always run on the dense caption. On short captions the reference ran pass 1 only; here passes 2–4
run on them too (``short_caption_fallbacks``), so a phrase the phrase grounder could not box is still linked.

**Filtering** (the reference's ``filter_groundings`` on spans): one detail per phrase text (lower-cased,
whitespace collapsed; the first pass wins), then a detail whose span lies inside a longer detail's span with
the same ids is dropped. Details are ordered by span start. Each detail has ``ids`` (distinct, in candidate
order), ``bbox`` (those objects' ``level2`` boxes; ``level3`` replaces them by the final boxes) and ``match``.

The dense caption is the ``verify`` stage's final caption; a null caption gives a null ``dense_caption.caption``
with no details. ``short_captions`` has one entry per ``level2`` caption, in order ([BLIP-2, VLM]).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa

from grand_engine.labels import gender_normalise
from grand_engine.phrases import extract_phrases, fallback_phrases, load_nlp, parse_text
from grand_engine.runtime.stage import Resources, Stage, UnitInput, collaborator
from grand_engine.schema import DETAIL, SHORT_CAPTION, table_schema
from grand_engine.validate import MATCH_KINDS

__all__ = [
    "DENSE_GROUNDING",
    "GROUND_CAPTIONS_SCHEMA",
    "Candidate",
    "CaptionGrounder",
    "GroundCaptions",
    "Grounded",
    "NounTarget",
    "attribute_groups",
    "clean_phrase",
    "find_phrase",
    "fold_case",
    "noun_targets",
    "relationship_candidates",
    "to_details",
]

DENSE_GROUNDING = pa.struct([("caption", pa.string()), ("details", pa.list_(DETAIL))])
"""The grounded dense caption (``level3`` adds the verification record to make a ``DENSE_CAPTION``)."""

GROUND_CAPTIONS_SCHEMA = table_schema(
    ("short_captions", pa.list_(SHORT_CAPTION)),  # one per level-2 caption, in order
    ("dense_caption", DENSE_GROUNDING),
)
"""The ``ground_captions`` table."""


# -- text helpers -------------------------------------------------------------------------------------------


def fold_case(text: str) -> str:
    """Lower-case ``text`` without changing its length (a character whose lower case is longer, e.g. "İ", is
    kept), so offsets into the folded text are offsets into ``text``."""
    low = text.lower()
    if len(low) == len(text):  # lower() never shortens; equal length means every character mapped 1:1
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _key(text: str) -> str:
    """The comparison key of a phrase: case folded, whitespace collapsed."""
    return " ".join(fold_case(text).split())


_EDGE = re.compile(r"^\W+|\W+$")


def clean_phrase(text: str | None, *, drop_prefix: bool = False) -> str:
    """A candidate's matching form: text up to the first ":" removed when ``drop_prefix``, non-word characters
    at both ends stripped, case folded, whitespace collapsed (``""`` when nothing is left)."""
    if not text:
        return ""
    if drop_prefix and ":" in text:
        text = text.split(":", 1)[1]
    return _key(_EDGE.sub("", _key(text)))


@lru_cache(maxsize=1 << 16)
def _pattern(phrase: str) -> re.Pattern[str]:
    words = phrase.split()
    body = r"\s+".join(re.escape(w) for w in words)
    before = r"(?<!\w)" if re.match(r"\w", words[0][0]) else ""
    after = r"(?!\w)" if re.match(r"\w", words[-1][-1]) else ""
    return re.compile(before + body + after)


def find_phrase(folded_caption: str, phrase: str) -> tuple[int, int] | None:
    """``(start, end)`` of the first whole-word occurrence of ``phrase`` (a :func:`clean_phrase` form) in the
    case-folded caption, whitespace runs matching single spaces; ``None`` when absent."""
    if not phrase or not phrase.strip():
        return None
    match = _pattern(phrase).search(folded_caption)
    return (match.start(), match.end()) if match else None


_WORD = re.compile(r"\w+")


def _words(text: str) -> str:
    return " ".join(_WORD.findall(fold_case(text)))


def _contains_words(long: str, short: str) -> bool:
    """Whether the word sequence of ``short`` occurs in that of ``long`` (whole words)."""
    a, b = _words(short), _words(long)
    return bool(a) and f" {a} " in f" {b} "


# -- candidates ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """Something a caption phrase can be grounded to: its matching text and the object ids it stands for."""

    text: str
    ids: tuple[int, ...]


class NounTarget(NamedTuple):
    """An object or floating object as the noun pass sees it."""

    id: int
    labels: frozenset[str]
    box: tuple[float, float, float, float] | None


class Grounded(NamedTuple):
    """One grounded phrase: its span ``[start, end)`` in the caption, the ids and the pass that found it."""

    start: int
    end: int
    ids: tuple[int, ...]
    match: str


def _entries(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in (row.get("objects") or []) + (row.get("floating_objects") or []) if o is not None]


def attribute_groups(row: dict[str, Any]) -> list[list[Candidate]]:
    """Per object then floating object (list order), its attribute candidates in attribute order."""
    groups = []
    for obj in _entries(row):
        if obj.get("id") is None:
            continue
        texts = dict.fromkeys(clean_phrase(a, drop_prefix=True) for a in obj.get("attributes") or [])
        texts.pop("", None)
        if texts:
            groups.append([Candidate(t, (int(obj["id"]),)) for t in texts])
    return groups


def relationship_candidates(row: dict[str, Any]) -> list[Candidate]:
    """One candidate per relationship phrase (with at least one id), grounded to all its ids."""
    out = []
    for rel in row.get("relationships") or []:
        text = clean_phrase(rel.get("phrase"))
        ids = tuple(dict.fromkeys(int(i) for i in rel.get("object_ids") or [] if i is not None))
        if text and ids:
            out.append(Candidate(text, ids))
    return out


def noun_targets(row: dict[str, Any]) -> list[NounTarget]:
    """Every object and floating object with its label set (``labels`` and ``label``, case folded)."""
    out = []
    for obj in _entries(row):
        if obj.get("id") is None:
            continue
        labels = {_key(lab) for lab in obj.get("labels") or [] if lab}
        if obj.get("label"):
            labels.add(_key(obj["label"]))
        box = obj.get("bbox")
        box_t = tuple(float(v) for v in box) if box is not None and len(box) == 4 else None
        out.append(NounTarget(int(obj["id"]), frozenset(labels), box_t))
    return out


# -- the grounder -------------------------------------------------------------------------------------------


class _Lemmas(NamedTuple):
    content: tuple[str, ...]  # lemmas of the non-stop, non-punctuation tokens
    every: frozenset[str]  # lemmas and lower-cased words of every non-punctuation token


class CaptionGrounder:
    """The four matching passes over one caption (see the module docstring).

    ``nlp`` is a spaCy English pipeline; ``embedder`` anything with ``encode(texts) -> unit vectors`` (the
    ``sentence`` adapter), or ``None`` to skip the embedding pass. Lemmas and embeddings are cached per text.
    """

    def __init__(
        self,
        nlp: Any,
        embedder: Any = None,
        *,
        lemma_overlap: float = 0.75,
        embedding_threshold: float = 0.7,
        cache_size: int = 100_000,
    ) -> None:
        self.nlp = nlp
        self.embedder = embedder
        self.lemma_overlap = float(lemma_overlap)
        self.embedding_threshold = float(embedding_threshold)
        self.cache_size = int(cache_size)
        self._lemma_cache: dict[str, _Lemmas] = {}
        self._vector_cache: dict[str, np.ndarray] = {}
        self._tag_only = [p for p in ("parser", "ner") if p in getattr(nlp, "pipe_names", ())]

    # -- cached model calls -------------------------------------------------------------------------------

    def lemmas(self, texts: Iterable[str]) -> dict[str, _Lemmas]:
        """Content lemmas and all lemmas of each text (parsed without the dependency parser)."""
        texts = list(dict.fromkeys(texts))
        todo = [t for t in texts if t not in self._lemma_cache]
        if todo:
            if len(self._lemma_cache) + len(todo) > self.cache_size:
                self._lemma_cache.clear()
            for text, doc in zip(todo, self.nlp.pipe(todo, disable=self._tag_only), strict=True):
                words = [t for t in doc if not (t.is_punct or t.is_space)]
                content = tuple(fold_case(t.lemma_ or t.text) for t in words if not t.is_stop)
                every = frozenset(fold_case(t.lemma_ or t.text) for t in words) | {fold_case(t.text) for t in words}
                self._lemma_cache[text] = _Lemmas(content, every)
        return {t: self._lemma_cache[t] for t in texts}

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Unit embedding vectors of ``texts`` (rows in order)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._vector_cache))
        if todo:
            if len(self._vector_cache) + len(todo) > self.cache_size:
                self._vector_cache.clear()
            for text, vec in zip(todo, np.asarray(self.embedder.encode(todo), dtype=np.float32), strict=True):
                self._vector_cache[text] = vec
        return np.stack([self._vector_cache[t] for t in texts])

    # -- scoring --------------------------------------------------------------------------------------------

    def lemma_score(self, a: str, b: str, lemmas: dict[str, _Lemmas]) -> float:
        """1.0 when one phrase contains the other as whole words, else the share of the shorter phrase's content
        lemmas that are lemmas of the longer one (0 when the shorter has no content word)."""
        short, long = (a, b) if len(a) <= len(b) else (b, a)
        content = lemmas[short].content
        if not content:
            return 0.0
        if _contains_words(long, short):
            return 1.0
        every = lemmas[long].every
        return sum(1 for lem in content if lem in every) / len(content)

    # -- the passes -----------------------------------------------------------------------------------------

    def ground(
        self,
        caption: str | None,
        exact_groups: Sequence[Sequence[Candidate]],
        pool: Sequence[Candidate],
        targets: Sequence[NounTarget],
        *,
        fallbacks: bool = True,
    ) -> list[Grounded]:
        """The grounded phrases of ``caption``: pass 1 over ``exact_groups`` (the first candidate of a group
        found in the caption wins), then, when ``fallbacks``, passes 2–4 on its extracted noun phrases with
        ``pool`` as candidates and ``targets`` for the noun pass; filtered and ordered by span."""
        if not caption or not caption.strip():
            return []
        found = _Found(caption)
        self._exact_pass(found, exact_groups)
        if fallbacks:
            pending = [p for p in extract_phrases(self.nlp, caption) if not found.covered(p.start, p.end)]
            pool = [c for c in pool if c.text]
            if pending and pool:
                pending = self._lemma_pass(found, pending, pool)
            if pending and pool and self.embedder is not None:
                pending = self._embedding_pass(found, pending, pool)
            if pending and targets:
                self._noun_pass(found, pending, targets)
        return _filter(found.grounded)

    def _exact_pass(self, found: _Found, exact_groups: Sequence[Sequence[Candidate]]) -> None:
        """Pass 1: per group, the first candidate found in the caption that is not already a detail."""
        folded = fold_case(found.caption)
        for group in exact_groups:
            for cand in group:
                if cand.text in found.used:
                    continue
                span = find_phrase(folded, cand.text)
                if span is not None and found.add(*span, cand.ids, "exact"):
                    break

    def _lemma_pass(self, found: _Found, pending: list[Any], pool: Sequence[Candidate]) -> list[Any]:
        """Pass 2: the best candidate by lemma overlap, when ``>= lemma_overlap``; returns the phrases left."""
        lemmas = self.lemmas([_key(p.phrase) for p in pending] + [c.text for c in pool])
        rest = []
        for p in pending:
            if found.covered(p.start, p.end):
                continue
            text = _key(p.phrase)
            scores = [self.lemma_score(text, c.text, lemmas) for c in pool]
            best = int(np.argmax(scores))
            if not (scores[best] >= self.lemma_overlap and found.add(p.start, p.end, pool[best].ids, "lemma")):
                rest.append(p)
        return rest

    def _embedding_pass(self, found: _Found, pending: list[Any], pool: Sequence[Candidate]) -> list[Any]:
        """Pass 3: the most similar candidate by sentence embedding, when ``>= embedding_threshold``; returns the
        phrases left."""
        sims = self.vectors([_key(p.phrase) for p in pending]) @ self.vectors([c.text for c in pool]).T
        rest = []
        for i, p in enumerate(pending):
            if found.covered(p.start, p.end):
                continue
            best = int(np.argmax(sims[i]))
            if not (
                sims[i, best] >= self.embedding_threshold and found.add(p.start, p.end, pool[best].ids, "embedding")
            ):
                rest.append(p)
        return rest

    def _noun_pass(self, found: _Found, pending: list[Any], targets: Sequence[NounTarget]) -> None:
        """Pass 4: each sub-phrase whose head noun names exactly one target (or the enclosing one of two)."""
        phrases = [p for p in pending if not found.covered(p.start, p.end)]
        docs = self.nlp.pipe([parse_text(p.phrase) for p in phrases])
        for p, doc in zip(phrases, docs, strict=True):
            for sub in fallback_phrases(doc, p.phrase):
                target = _unique_target(_noun_forms(doc, sub), targets)
                if target is not None:
                    found.add(p.start + sub.start, p.start + sub.end, (target,), "noun")


class _Found:
    """The phrases grounded in one caption so far, and the phrase texts they use."""

    def __init__(self, caption: str) -> None:
        self.caption = caption
        self.grounded: list[Grounded] = []
        self.used: set[str] = set()

    def add(self, start: int, end: int, ids: Iterable[int], match: str) -> bool:
        """Record ``[start, end)`` as grounded to ``ids``; ``False`` when its text is empty or already used, or
        (for a fallback pass) when a detail inside the span already grounds exactly these objects."""
        key = _key(self.caption[start:end])
        if not key or key in self.used or end <= start:
            return False
        ids = tuple(dict.fromkeys(ids))
        if match != "exact" and any(
            start <= g.start and g.end <= end and set(g.ids) == set(ids) for g in self.grounded
        ):  # a detail inside this span already grounds exactly these objects, more precisely
            return False
        self.used.add(key)
        self.grounded.append(Grounded(start, end, ids, match))
        return True

    def covered(self, start: int, end: int) -> bool:
        """Whether the span's text is already a detail, or the span lies inside a detail's span."""
        if _key(self.caption[start:end]) in self.used:
            return True
        return any(g.start <= start and end <= g.end for g in self.grounded)


def _noun_forms(doc: Any, sub: Any) -> tuple[set[str], set[str]]:
    """The sub-phrase's head noun as written and as lemma; the same plus ``person`` for the gendered words."""
    forms = {fold_case(sub.noun)}
    for tok in doc:
        if tok.pos_ == "NOUN" and sub.start <= tok.idx < sub.end and tok.text == sub.noun:
            forms.add(fold_case(tok.lemma_ or tok.text))
            break
    forms.discard("")
    return forms, forms | {gender_normalise(f) for f in forms}


def _label_matches(label: str, forms: set[str]) -> bool:
    return any(label == f or label == f + "s" or f == label + "s" for f in forms)


def _encloses(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> bool:
    return a is not None and b is not None and a[0] <= b[0] and a[1] <= b[1] and a[2] >= b[2] and a[3] >= b[3]


def _unique_target(forms: tuple[set[str], set[str]], targets: Sequence[NounTarget]) -> int | None:
    """The id of the one object whose labels match, or of the enclosing one of exactly two nested matches.

    ``forms`` is (the word and its lemma, the same plus ``person`` for a gendered word); the second set is
    only used when the first matches nothing, so "woman" prefers an object labelled "woman" to a "person".
    """
    hits = [t for t in targets if any(_label_matches(lab, forms[0]) for lab in t.labels)]
    if not hits:
        hits = [t for t in targets if any(_label_matches(lab, forms[1]) for lab in t.labels)]
    if len(hits) == 1:
        return hits[0].id
    if len(hits) == 2:
        a, b = hits
        if _encloses(a.box, b.box):
            return a.id
        if _encloses(b.box, a.box):
            return b.id
    return None


def _filter(found: list[Grounded]) -> list[Grounded]:
    """Drop a detail inside a longer detail's span with the same ids; order by span."""
    kept: list[Grounded] = []
    for g in sorted(found, key=lambda g: g.start - g.end):  # longest first, stable
        if any(k.start <= g.start and g.end <= k.end and set(k.ids) == set(g.ids) for k in kept):
            continue
        kept.append(g)
    return sorted(kept, key=lambda g: (g.start, -g.end))


def to_details(caption: str, grounded: Sequence[Grounded], boxes: dict[int, Any]) -> list[dict[str, Any]]:
    """``DETAIL`` dicts: the phrase is the caption's own text at the span; ``bbox`` aligned with ``ids``.

    Raises ``ValueError`` when a grounded id is not an object or floating object of the row.
    """
    out = []
    for g in grounded:
        missing = [i for i in g.ids if i not in boxes]
        if missing:
            raise ValueError(f"grounded phrase {caption[g.start : g.end]!r} names unknown object id(s) {missing}")
        if g.match not in MATCH_KINDS:
            raise ValueError(f"unknown match kind {g.match!r}")
        out.append(
            {
                "phrase": caption[g.start : g.end],
                "tokens_positive": [g.start, g.end],
                "ids": list(g.ids),
                "bbox": [None if boxes[i] is None else list(boxes[i]) for i in g.ids],
                "match": g.match,
            }
        )
    return out


# -- the stage ----------------------------------------------------------------------------------------------


@dataclass
class GroundCaptions(Stage):
    """Ground the short captions and the verified dense caption to object ids (exact → lemma → embedding → noun)."""

    name: ClassVar[str] = "ground_captions"
    requires: ClassVar[tuple[str, ...]] = ("level2", "verify")
    level: ClassVar[int | None] = 3
    schema: ClassVar[pa.Schema] = GROUND_CAPTIONS_SCHEMA
    model_slots: ClassVar[tuple[str, ...]] = ("spacy", "embedder")
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=64)

    lemma_overlap: float = 0.75  # spec step 20b pass 2: keep candidates with lemma overlap >= 0.75
    embedding_threshold: float = 0.7  # project addition (no reference value): MiniLM cosine similarity >= 0.7
    short_caption_fallbacks: bool = True  # run passes 2-4 on short captions too (step 20a had exact matching only)
    check_invariants: bool = True  # validate the captions' details against the level-2 row

    nlp: Any = collaborator()  # spaCy pipeline: the `spacy` slot, else the packaged English model
    embedder: Any = collaborator()  # sentence-embedding adapter (optional `embedder` slot)

    def setup(self) -> None:
        if self.nlp is None:
            spacy = self.load_model("spacy", required=False)
            self.nlp = spacy.nlp if spacy is not None else load_nlp()
        if self.embedder is None:
            self.embedder = self.load_model("embedder", required=False)
        self.grounder = CaptionGrounder(
            self.nlp, self.embedder, lemma_overlap=self.lemma_overlap, embedding_threshold=self.embedding_threshold
        )

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        level2 = unit.input_row("level2", image_id)
        caption = unit.input_row("verify", image_id).get("caption")
        row = self.ground_row(level2, caption)
        row["image_id"] = image_id
        return row

    def ground_row(self, level2: dict[str, Any], dense_caption: str | None) -> dict[str, Any]:
        """``short_captions`` and ``dense_caption`` of one image from its ``level2`` row and dense caption."""
        grounder = self.grounder
        boxes = {int(o["id"]): o.get("bbox") for o in _entries(level2) if o.get("id") is not None}
        attributes = attribute_groups(level2)
        relationships = relationship_candidates(level2)
        pool = [c for group in attributes for c in group] + relationships
        targets = noun_targets(level2)

        short = []
        for caption in level2.get("captions") or []:
            grounded = grounder.ground(
                caption, [[c] for c in relationships], pool, targets, fallbacks=self.short_caption_fallbacks
            )
            short.append({"caption": caption, "details": to_details(caption, grounded, boxes) if caption else []})

        dense_details: list[dict[str, Any]] = []
        if dense_caption:
            grounded = grounder.ground(dense_caption, attributes + [[c] for c in relationships], pool, targets)
            dense_details = to_details(dense_caption, grounded, boxes)
        out = {"short_captions": short, "dense_caption": {"caption": dense_caption, "details": dense_details}}
        if self.check_invariants:
            self.require_valid({**level2, **out}, 2, what="grounded captions")
        return out
