"""The checks an LLM caption of a source record must pass, and the exact spans of its phrases.

Both prompts ask the LLM to keep text unchanged (entity names, referring phrases), so the check is mechanical:

1. **Normalise** (:func:`normalise_caption`): whitespace runs (newlines too) become one space; double quotes and
   spaces around the caption are removed until none is left (GLaMM's loaders strip them before using offsets).
2. **Phrase records** (:func:`check_phrase_caption`): every phrase must occur in the caption, ignoring case. Its
   span is its *first* occurrence — exactly ``caption.lower().find(phrase.lower())``, the search GLaMM's RefCOCOg
   loader makes — and that occurrence must be word-bounded (``man`` first found inside ``woman`` is a problem,
   since the loader would ground the wrong text). No two spans may overlap or touch (the RefCOCOg loader trims a
   span whose end reaches the next start, and GCG tagging cannot nest spans).
3. **Relation records** (:func:`check_relation_caption`): every entity name of the relations must occur
   word-bounded, ignoring case (longer names are matched first, so ``table-1`` inside ``dining table-1`` is not
   counted twice); a ``<word>-<number>`` token that is not one of the record's names is a problem (the caption
   added an entity). The accepted caption is then rewritten: each name occurrence becomes its *surface text*
   (:func:`surface_texts`) — by default its readable label (``person-1`` → ``person``), or the label and the
   number when several entities of the record share the label (``person 1``, ``person 2``), with the first
   letter's case kept; with ``surface="name"`` names stay as written. The span of an entity is its first
   occurrence in the rewritten caption, computed while rewriting, so ``caption[start:end]`` is the surface exactly.

A caption with a problem is rejected (:attr:`CaptionCheck.ok` is false) and its problems are what the feedback turn
tells the LLM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from grand_engine.sources.spans import (
    collapse,
    entity_names,
    first_occurrence,
    overlaps,
    strip_quotes,
    word_bounded,
    word_occurrences,
)

SURFACES = ("label", "name")
"""How entity names appear in the final caption of a relation record (see the module docstring)."""


@dataclass(frozen=True)
class Span:
    """Where the phrase of one entity is in the final caption: ``caption[start:end] == phrase``."""

    key: str  # the entity's key (entity name or referring phrase)
    phrase: str  # the caption's own text at the span
    start: int
    end: int

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "phrase": self.phrase, "start": self.start, "end": self.end}


@dataclass
class CaptionCheck:
    """The verdict on one caption: the final text, the spans (ordered by start) and the problems found."""

    caption: str  # the final caption (relation records: names rewritten)
    written: str = ""  # the completion after normalisation, before any rewriting
    spans: list[Span] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # keys that do not occur at all
    problems: list[str] = field(default_factory=list)  # every problem, missing keys included

    @property
    def ok(self) -> bool:
        return not self.problems


def normalise_caption(text: str) -> str:
    """Step 1 of the module docstring."""
    return strip_quotes(collapse(text or ""))


def _missing_problem(missing: list[str]) -> str:
    return "it leaves out " + ", ".join(repr(k) for k in missing)


def _overlap_problems(spans: list[Span]) -> list[str]:
    pairs = overlaps([(s.start, s.end) for s in spans])
    return [f"{spans[i].phrase!r} and {spans[j].phrase!r} overlap or touch" for i, j in pairs]


def check_phrase_caption(text: str, phrases: Sequence[str]) -> CaptionCheck:
    """Step 2 of the module docstring."""
    caption = normalise_caption(text)
    out = CaptionCheck(caption, caption)
    if not caption:
        out.problems.append("it is empty")
        return out
    for key in phrases:
        start = first_occurrence(caption, key)
        if start < 0:
            out.missing.append(key)
            continue
        end = start + len(key)
        if not word_bounded(caption, start, end):
            around = caption[max(0, start - 10) : end + 10]
            out.problems.append(f"{key!r} first appears inside another word (…{around}…)")
            continue
        out.spans.append(Span(key, caption[start:end], start, end))
    if out.missing:
        out.problems.insert(0, _missing_problem(out.missing))
    out.spans.sort(key=lambda s: (s.start, s.end))
    out.problems += _overlap_problems(out.spans)
    return out


def surface_texts(names: Sequence[str], labels: Sequence[str], surface: str = "label") -> dict[str, str]:
    """``{entity name: text the final caption shows}`` (module docstring, step 3)."""
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}, got {surface!r}")
    if surface == "name":
        return {n: n for n in names}
    plain = [(label or n.rsplit("-", 1)[0]).strip() for n, label in zip(names, labels, strict=True)]
    shared = Counter(p.lower() for p in plain)
    out: dict[str, str] = {}
    for name, label in zip(names, plain, strict=True):
        number = name.rsplit("-", 1)[1] if "-" in name else ""
        out[name] = f"{label} {number}" if shared[label.lower()] > 1 and number else label
    if len({v.lower() for v in out.values()}) != len(out):  # e.g. labels "person" and "person 2": keep names
        return {n: n for n in names}
    return out


def _match_case(original: str, replacement: str) -> str:
    if original[:1].isupper() and replacement[:1].islower():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def check_relation_caption(
    text: str, names: Sequence[str], labels: Sequence[str], surface: str = "label"
) -> CaptionCheck:
    """Step 3 of the module docstring; ``names`` and ``labels`` are aligned (an entity's name and label)."""
    surfaces = surface_texts(names, labels, surface)
    written = normalise_caption(text)
    out = CaptionCheck(written, written)
    if not written:
        out.problems.append("it is empty")
        return out
    masked = list(written)
    hits: list[tuple[int, int, str]] = []  # (start, end, name) in the written caption
    for name in sorted(names, key=len, reverse=True):
        found = word_occurrences("".join(masked), name)
        if not found:
            out.missing.append(name)
            continue
        for start in found:
            hits.append((start, start + len(name), name))
            masked[start : start + len(name)] = ["\0"] * len(name)
    if out.missing:
        out.missing.sort(key=list(names).index)
        out.problems.append(_missing_problem(out.missing))
    unknown = sorted({token for token, _, _ in entity_names("".join(masked))})
    if unknown:
        out.problems.append("it names " + ", ".join(repr(u) for u in unknown) + ", which the relationships do not")
    if out.problems:
        return out
    # Rewrite every occurrence into its surface text; the first occurrence of each entity gives its span.
    hits.sort()
    parts: list[str] = []
    pos = 0
    length = 0
    first: dict[str, Span] = {}
    for start, end, name in hits:
        parts.append(written[pos:start])
        length += start - pos
        shown = _match_case(written[start:end], surfaces[name])
        if name not in first:
            first[name] = Span(name, shown, length, length + len(shown))
        parts.append(shown)
        length += len(shown)
        pos = end
    parts.append(written[pos:])
    out.caption = "".join(parts)
    out.spans = sorted(first.values(), key=lambda s: (s.start, s.end))
    out.problems += _overlap_problems(out.spans)
    return out
