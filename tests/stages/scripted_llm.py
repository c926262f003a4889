"""A test double of the LLM interface (``chat(conversations, *, max_new_tokens, temperature, top_p, seed)``).

It answers from per-kind queues of given texts. The kind of a conversation is read from its last user message
(the prompt files' wording): ``caption`` (level-3 prompt), ``context`` (level-4 prompt), ``checklist``,
``repair`` (checklist repair turn) and ``regenerate`` (verification feedback turn).

Like the real seeded adapter, the same conversation asked again with the same seed gets the same underlying
answer (a retry with a larger limit continues the same text); a new conversation or a new seed takes the next
queued answer. Words stand in for tokens: an answer of more than ``max_new_tokens`` words comes back cut after
that many words (whitespace as given) with ``finish_reason="length"``. A queued :class:`Completion` is returned
exactly as given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from grand_engine.models.llm import Completion

KIND_MARKERS = (
    ("repair", "That answer could not be read"),
    ("regenerate", "Your caption mentions things that cannot be seen"),
    ("checklist", "as a JSON array of short noun phrases"),
    ("context", "Additional context:"),
    ("caption", "Desired caption:"),
)


def kind_of(conversation: list[dict[str, str]]) -> str:
    last = conversation[-1]["content"]
    for kind, marker in KIND_MARKERS:
        if marker in last:
            return kind
    raise AssertionError(f"unrecognised prompt: {last[:120]!r}")


class ScriptedLLM:
    """Answers ``chat`` calls from ``queues[kind]`` (strings or Completions) and records every call."""

    def __init__(self, **queues: Sequence[str | Completion]) -> None:
        self.queues = {kind: list(answers) for kind, answers in queues.items()}
        self.calls: list[dict[str, Any]] = []
        self._memo: dict[tuple[str, int], str | Completion] = {}

    def asked(self, kind: str) -> list[list[dict[str, str]]]:
        """Every conversation of ``kind`` sent so far, in order."""
        return [c for call in self.calls for c in call["conversations"] if kind_of(c) == kind]

    def chat(
        self,
        conversations: list[list[dict[str, str]]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | Sequence[int],
    ) -> list[Completion]:
        seeds = [seed] * len(conversations) if isinstance(seed, int) else list(seed)
        assert len(seeds) == len(conversations)
        self.calls.append(
            {
                "conversations": conversations,
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "seeds": seeds,
            }
        )
        return [self._answer(c, s, max_new_tokens) for c, s in zip(conversations, seeds, strict=True)]

    def _answer(self, conversation: list[dict[str, str]], seed: int, max_new_tokens: int) -> Completion:
        key = (repr(conversation), int(seed))
        if key not in self._memo:
            kind = kind_of(conversation)
            queue = self.queues.get(kind)
            if not queue:
                raise AssertionError(f"no scripted answer left for a {kind!r} prompt")
            self._memo[key] = queue.pop(0)
        answer = self._memo[key]
        if isinstance(answer, Completion):
            return answer
        words = list(re.finditer(r"\S+", answer))
        if len(words) > max_new_tokens:
            return Completion(answer[: words[max_new_tokens - 1].end()], "length")  # whitespace kept as given
        return Completion(answer, "stop")
