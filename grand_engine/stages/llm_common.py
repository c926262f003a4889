"""Shared helpers of the LLM stages (``dense_caption``, ``verify``, ``extra_context``; spec §4.2–§5).

* **Prompts** are files under ``prompts/`` filled with ``string.Template`` (:func:`render_prompt`); code never
  concatenates prompt text. The in-context examples (two made-up scenes, each with a level-2 style annotation,
  a dense caption and an extra-context paragraph) are ``prompts/in_context_examples.json``
  (:func:`in_context_examples`).
* **Seeds** (§14.24: the reference sampled unseeded): every conversation gets
  ``stable_seed(seed, image_id, purpose…)`` — the first 8 bytes of the SHA-256 of the parts joined by
  ``"\\x1f"``, modulo ``2**31``. ``seed`` is the stage's ``seed`` parameter (the pipeline passes the manifest's
  top-level ``seed`` unless the stage block sets its own); the hash is stable across processes and Python
  versions (unlike ``hash()``), so a rerun reproduces every completion, whatever batch the image lands in (the
  LLM adapter seeds each conversation separately).
* **Generation rules** (:func:`generate`), applied to every completion (§14.23: the reference silently dropped
  every completion cut at 512 tokens):

  1. the text is stripped and cut where a line repeats the layout of the in-context examples (``stop_lines``,
     e.g. ``##Example - 3:`` or ``Prompt:``; compared without ``#``, spaces and case — small models go on with a
     made-up next example); with ``single_paragraph`` (captions and paragraphs, not the JSON checklist) it is cut
     at the first blank line that follows a complete sentence (small models go on with a second, unasked-for
     block); a completion with more than ``max_sentences`` sentences (when set) is cut after that sentence. Either
     cut is reported as ``finish_reason = "trimmed"`` — also when the token limit cut the completion, since the
     cut part would be dropped anyway;
  2. a completion cut by the token limit (``"length"``) is retried **once** with ``retry_max_tokens`` and the
     same seed (the adapter's per-conversation sampler then re-draws the same prefix and continues it);
  3. an empty completion (also one that was all echo) is retried **once** with a new seed
     (``stable_seed(seed, "retry")``) and the same limit;
  4. a completion still cut after its retry is an error (``TruncatedCompletion``), or with
     ``accept_truncated`` kept with ``finish_reason = "length"``; still empty, an error (``EmptyCompletion``).
     Errors become error rows (``_errors/<stage>``), never silently dropped.

* :class:`LLMStage` is the base of the three stages: the generation parameters, the ``llm`` collaborator, the
  seed rule and batching, declared once.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

from grand_engine.resources import prompt_file
from grand_engine.runtime.stage import Batching, ErrorRecord, Stage, collaborator

Conversation = list[dict[str, str]]

EXAMPLES_FILE = "in_context_examples.json"
"""The two made-up in-context scenes shared by the level-3 and level-4 prompts (spec §4.2, §5)."""

FINISH_STOP, FINISH_LENGTH, FINISH_TRIMMED = "stop", "length", "trimmed"

# A sentence ends at ".", "!" or "?" (repeats allowed), optionally followed by closing quotes or brackets,
# then whitespace or the end of the text.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s|$)")
_ENDS_SENTENCE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*$")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


# -- prompts -------------------------------------------------------------------------------------------------


@cache
def prompt_template(name: str) -> string.Template:
    """The ``string.Template`` of ``prompts/<name>`` (read once per process)."""
    return string.Template(prompt_file(name).read_text(encoding="utf-8"))


def render_prompt(name: str, **values: Any) -> str:
    """``prompts/<name>`` with its ``$placeholders`` filled; a missing value raises ``ValueError`` naming it."""
    try:
        return prompt_template(name).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise ValueError(f"prompt {name!r} needs a value for ${exc.args[0]}") from None


@cache
def in_context_examples() -> tuple[dict[str, Any], ...]:
    """The in-context scenes: each has ``annotation`` (a level-2 style row), ``dense_caption`` and
    ``extra_context`` (the desired outputs)."""
    data = json.loads(prompt_file(EXAMPLES_FILE).read_text(encoding="utf-8"))
    scenes = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(scenes, list) or not scenes:
        raise ValueError(f"prompt file {EXAMPLES_FILE!r} must hold a non-empty 'examples' list")
    for i, scene in enumerate(scenes):
        missing = [k for k in ("annotation", "dense_caption", "extra_context") if k not in scene]
        if missing:
            raise ValueError(f"prompt file {EXAMPLES_FILE!r}, example {i}: missing {missing}")
    return tuple(scenes)


def user_turn(text: str) -> Conversation:
    """A one-message conversation."""
    return [{"role": "user", "content": text.strip()}]


# -- seeds ---------------------------------------------------------------------------------------------------


def stable_seed(*parts: Any) -> int:
    """A seed in ``[0, 2**31)`` from the SHA-256 of ``parts`` (stable across processes and platforms)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


# -- sentences -----------------------------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``; a trailing piece without end punctuation counts as one (unfinished) sentence."""
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.end()].strip()
        if piece:
            out.append(piece)
        start = match.end()
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def complete_sentences(text: str) -> int:
    """How many sentences of ``text`` end with ``.``, ``!`` or ``?``."""
    return sum(1 for s in split_sentences(text) if _SENTENCE_END.search(s))


def cut_sentences(text: str, limit: int) -> str:
    """``text`` up to the end of its ``limit``-th complete sentence (unchanged when it has fewer)."""
    for n, match in enumerate(_SENTENCE_END.finditer(text), start=1):
        if n == limit:
            return text[: match.end()].strip()
    return text.strip()


# -- generation ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling and the retry rules of one kind of completion (see the module docstring)."""

    max_tokens: int
    retry_max_tokens: int
    temperature: float
    top_p: float
    max_sentences: int | None = None
    accept_truncated: bool = False
    single_paragraph: bool = False
    stop_lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.retry_max_tokens <= self.max_tokens:
            raise ValueError(
                f"retry_max_tokens ({self.retry_max_tokens}) must be larger than max_tokens ({self.max_tokens})"
            )
        if self.max_sentences is not None and self.max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1 or null, got {self.max_sentences}")


@dataclass(frozen=True)
class Generation:
    """One final completion: ``text``, ``finish_reason`` (``stop`` | ``length`` | ``trimmed``), the number of
    ``chat`` calls it took, the token limit of the last one, and ``error`` (``(type, message)``) when unusable."""

    text: str
    finish_reason: str
    attempts: int
    max_tokens_used: int
    error: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _line_key(text: str) -> str:
    return re.sub(r"[#\s]", "", text).lower()


@cache
def example_markers(name: str) -> tuple[str, ...]:
    """The line openings of an in-context example template (each line up to its first placeholder, and up to its
    first ":"), e.g. ``("##Example -", "Prompt:", "Desired caption:", "------")`` — a completion line starting
    with one of them repeats the prompt's layout."""
    out: list[str] = []
    for line in prompt_file(name).read_text(encoding="utf-8").splitlines():
        head = line.split("$", 1)[0]
        head = head[: head.index(":") + 1] if ":" in head else head
        if head.strip() and _line_key(head):
            out.append(head.strip())
    return tuple(dict.fromkeys(out))


def cut_at_lines(text: str, markers: Sequence[str]) -> str:
    """``text`` up to the first line that starts with one of ``markers`` (ignoring ``#``, spaces and case)."""
    keys = [_line_key(m) for m in markers if _line_key(m)]
    if not keys:
        return text
    offset = 0
    for line in text.splitlines(keepends=True):
        if any(_line_key(line).startswith(k) for k in keys):
            return text[:offset].rstrip()
        offset += len(line)
    return text


def first_paragraph(text: str) -> str:
    """``text`` up to the first blank line that follows a complete sentence (``text`` when there is none)."""
    for match in _BLANK_LINE.finditer(text):
        head = text[: match.start()].rstrip()
        if _ENDS_SENTENCE.search(head):
            return head
    return text


def _assess(text: str, finish_reason: str, settings: GenerationSettings) -> tuple[str, str, str]:
    """``(verdict, text, finish_reason)``; verdict ``ok``, ``longer`` (retry with a larger limit) or ``reseed``
    (empty: retry with another seed)."""
    text = (text or "").strip()
    trimmed = False
    if settings.stop_lines:
        kept = cut_at_lines(text, settings.stop_lines)
        trimmed = kept != text
        text = kept
    if settings.single_paragraph:
        paragraph = first_paragraph(text)
        trimmed = trimmed or paragraph != text
        text = paragraph
    if not text:
        # nothing but echo, or nothing at all: another seed; blank output cut by the limit: a larger limit
        return ("longer" if finish_reason != FINISH_STOP and not trimmed else "reseed"), text, finish_reason
    limit = settings.max_sentences
    count = complete_sentences(text)
    if limit is not None and count > limit:
        return "ok", cut_sentences(text, limit), FINISH_TRIMMED
    if finish_reason != FINISH_STOP:
        if trimmed:
            return "ok", text, FINISH_TRIMMED  # the paragraph ended before the token limit cut the rest
        if limit is not None and count == limit:
            return "ok", cut_sentences(text, limit), FINISH_TRIMMED  # only text beyond the limit was lost
        return "longer", text, finish_reason
    return "ok", text, FINISH_TRIMMED if trimmed else FINISH_STOP


def _chat(llm: Any, conversations: list[Conversation], seeds: list[int], max_tokens: int, s: GenerationSettings):
    out = llm.chat(conversations, max_new_tokens=max_tokens, temperature=s.temperature, top_p=s.top_p, seed=seeds)
    if len(out) != len(conversations):
        raise RuntimeError(f"the LLM returned {len(out)} completions for {len(conversations)} conversations")
    return out


def generate(
    llm: Any, conversations: Sequence[Conversation], seeds: Sequence[int], settings: GenerationSettings
) -> list[Generation]:
    """Complete every conversation under the generation rules (module docstring); one result per conversation.

    ``llm`` is anything with the ``LLM.chat`` interface. The first attempt is one batched call; the retries are
    at most two more (one for cut completions, one for empty ones).
    """
    convs, seeds = list(conversations), [int(s) for s in seeds]
    if len(seeds) != len(convs):
        raise ValueError(f"got {len(seeds)} seeds for {len(convs)} conversations")
    if not convs:
        return []
    results: list[Generation | None] = [None] * len(convs)
    longer: list[int] = []
    reseed: list[int] = []
    for i, completion in enumerate(_chat(llm, convs, seeds, settings.max_tokens, settings)):
        verdict, text, reason = _assess(completion.text, completion.finish_reason, settings)
        if verdict == "ok":
            results[i] = Generation(text, reason, 1, settings.max_tokens)
        else:
            (longer if verdict == "longer" else reseed).append(i)

    retries = [(longer, settings.retry_max_tokens, [seeds[i] for i in longer])]
    retries.append((reseed, settings.max_tokens, [stable_seed(seeds[i], "retry") for i in reseed]))
    for indices, limit, retry_seeds in retries:
        if not indices:
            continue
        outs = _chat(llm, [convs[i] for i in indices], retry_seeds, limit, settings)
        for i, completion in zip(indices, outs, strict=True):
            results[i] = _retried(completion, limit, settings)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _retried(completion: Any, limit: int, settings: GenerationSettings) -> Generation:
    """The result of a second attempt made with token limit ``limit``: its text, the cut text when
    ``accept_truncated``, else an error."""
    verdict, text, reason = _assess(completion.text, completion.finish_reason, settings)
    if verdict == "ok":
        return Generation(text, reason, 2, limit)
    if verdict == "longer" and settings.accept_truncated and text:
        return Generation(text, FINISH_LENGTH, 2, limit)
    if verdict == "longer":
        message = (
            f"the completion was cut by the token limit at {settings.max_tokens} tokens and again at "
            f"{limit} tokens (raise max_tokens / retry_max_tokens, or set accept_truncated)"
        )
        return Generation(text, FINISH_LENGTH, 2, limit, ("TruncatedCompletion", message))
    message = "the LLM returned an empty completion (or only a repeat of the prompt's layout) twice"
    return Generation("", FINISH_STOP, 2, limit, ("EmptyCompletion", message))


def generation_error(image_id: str, gen: Generation, what: str) -> ErrorRecord:
    """The error row of an unusable completion, naming what was being generated."""
    assert gen.error is not None
    kind, message = gen.error
    return ErrorRecord(image_id=image_id, error_type=kind, message=f"{what}: {message}")


# -- the LLM stage base --------------------------------------------------------------------------------------


@dataclass
class LLMStage(Stage):
    """Base of the stages that write text with an LLM (``dense_caption``, ``verify``, ``extra_context``).

    It declares the generation parameters once (the reference's sampling, §4.3, and the retry rules of this module),
    the ``llm`` slot and collaborator, batched processing, the seed rule and the prompt files. A subclass sets
    ``prompts`` (every prompt file it reads: their contents are part of its fingerprint) and ``example_prompt``
    (the in-context example template whose layout a completion must not repeat), redeclares a parameter only to
    change its default, and implements ``process_batch`` with :meth:`complete`.
    """

    batching: ClassVar[Batching] = "batch"
    model_slots: ClassVar[tuple[str, ...]] = ("llm",)
    prompts: ClassVar[tuple[str, ...]] = ()
    example_prompt: ClassVar[str] = ""

    temperature: float = 0.7  # §4.3 SamplingParams(temperature=0.7)
    top_p: float = 0.95  # §4.3 SamplingParams(top_p=0.95)
    max_tokens: int = 512  # §4.3 SamplingParams(max_tokens=512)
    retry_max_tokens: int = 1024  # §14.23 fix: a cut completion is retried once with twice the limit
    max_sentences: int | None = 8  # new: twice the 4 sentences §4.2 asks for; longer text is cut (null: never)
    accept_truncated: bool = False  # new: keep a completion cut twice (finish_reason "length") instead of an error
    single_paragraph: bool = True  # new: drop what follows the first blank line after a complete sentence
    seed: int = 0  # §14.24: the run seed (the pipeline passes manifest.seed); see stable_seed

    llm: Any = collaborator()  # the loaded LLM adapter (anything with ``LLM.chat``); built by setup() when None

    def __post_init__(self) -> None:
        self.settings()  # validate the parameters when the stage is configured

    def settings(self) -> GenerationSettings:
        """The generation settings of this stage's main completion."""
        return GenerationSettings(
            max_tokens=self.max_tokens,
            retry_max_tokens=self.retry_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            max_sentences=self.max_sentences,
            accept_truncated=self.accept_truncated,
            single_paragraph=self.single_paragraph,
            stop_lines=example_markers(self.example_prompt) if self.example_prompt else (),
        )

    def prompt_files(self) -> list[str]:
        """The prompt files this stage reads (their contents are part of its fingerprint)."""
        return sorted(set(self.prompts))

    def setup(self) -> None:
        if self.llm is None:
            self.llm = self.load_model("llm")

    def seed_for(self, image_id: str, *purpose: Any) -> int:
        """The seed of one conversation: ``stable_seed(seed, image_id, stage name, *purpose)``."""
        return stable_seed(self.seed, image_id, self.name, *purpose)

    def complete(
        self, conversations: Sequence[Conversation], seeds: Sequence[int], settings: GenerationSettings | None = None
    ) -> list[Generation]:
        """:func:`generate` with this stage's LLM and (by default) its settings."""
        return generate(self.llm, conversations, seeds, settings or self.settings())
