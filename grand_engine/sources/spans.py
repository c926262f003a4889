"""Exact phrase spans in captions: the text rules shared by the source readers and the caption checks.

Offsets are Python string indices (Unicode code points), ``[start, end)``. A phrase *occurs* at a position when
the caption's text there equals the phrase ignoring case, and the occurrence is *word-bounded* when the character
before it and the character after it (if any) are not letters, digits or ``_`` — so ``man`` does not occur in
``woman`` and ``person-1`` does not occur in ``person-12``.
"""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")
_NAME = re.compile(r"(?<![\w-])([A-Za-z]+-\d+)(?![\w-])")
"""A word, a hyphen and a number (``person-1``): how an entity name of the relation prompt ends."""


def collapse(text: str) -> str:
    """``text`` stripped, with every run of whitespace (newlines included) turned into one space."""
    return _SPACE.sub(" ", text).strip()


def strip_quotes(text: str) -> str:
    """``text`` without the double quotes and spaces around it, repeated until nothing changes — GLaMM's GCG
    loader applies ``caption.strip('"').strip()`` before it uses the offsets, so that must leave the caption
    unchanged."""
    while True:
        stripped = text.strip('"').strip()
        if stripped == text:
            return text
        text = stripped


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def word_bounded(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` is not glued to a letter, digit or ``_`` on either side."""
    return (start == 0 or not _is_word_char(text[start - 1])) and (end == len(text) or not _is_word_char(text[end]))


def first_occurrence(text: str, phrase: str) -> int:
    """Start of the first case-insensitive occurrence of ``phrase`` in ``text`` (``-1`` when none): exactly what
    ``text.lower().find(phrase.lower())`` gives, the search GLaMM's RefCOCOg loader makes."""
    return text.lower().find(phrase.lower())


def word_occurrences(text: str, phrase: str) -> list[int]:
    """Starts of every word-bounded, case-insensitive occurrence of ``phrase`` in ``text`` (non-overlapping)."""
    if not phrase:
        return []
    low, key = text.lower(), phrase.lower()
    out: list[int] = []
    start = low.find(key)
    while start != -1:
        if word_bounded(text, start, start + len(key)):
            out.append(start)
            start = low.find(key, start + len(key))
        else:
            start = low.find(key, start + 1)
    return out


def contains_word(text: str, phrase: str) -> bool:
    """True when ``phrase`` occurs word-bounded in ``text`` (ignoring case)."""
    return bool(word_occurrences(text, phrase))


def entity_names(text: str) -> list[tuple[str, int, int]]:
    """Every ``<word>-<number>`` token of ``text`` as ``(token, start, end)`` (the last word of a name such as
    ``dining table-2``)."""
    return [(m.group(1), m.start(1), m.end(1)) for m in _NAME.finditer(text)]


def overlaps(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of spans (sorted by start) that overlap or touch: GLaMM's RefCOCOg loader trims a
    span whose end is ``>=`` the next start, so spans must be separated by at least one character."""
    order = sorted(range(len(spans)), key=lambda k: spans[k])
    return [(order[k], order[k + 1]) for k in range(len(order) - 1) if spans[order[k]][1] >= spans[order[k + 1]][0]]
