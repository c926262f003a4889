"""Caption metrics of the GCG evaluation: METEOR and CIDEr over PTB-tokenised captions.

GLaMM's evaluator (``eval/gcg/evaluate.py`` of mbzuai-oryx/groundingLMM) scores captions through pycocoevalcap's
``COCOEvalCap``, which first tokenises every reference and candidate with Stanford's PTBTokenizer (a java program:
lower-cased, then the punctuation tokens of pycocoevalcap's ``PUNCTUATIONS`` list removed) and then runs BLEU,
METEOR, ROUGE-L, CIDEr and SPICE. The GCG figures are METEOR and CIDEr only. SPICE downloads Stanford CoreNLP models
on first use and is not a GCG figure, so this module calls the METEOR and CIDEr scorers directly on the same
tokenisation instead of going through ``COCOEvalCap``.

Differences from ``COCOEvalCap`` that never change a figure on well-formed input:

* PTBTokenizer runs once over references and candidates together (it tokenises line by line), on a temporary file
  in the system's temporary folder (pycocoevalcap writes it next to its jar, which fails on a read-only install);
  blank captions are not sent (their tokenisation is empty) and the number of lines that come back is checked.
* Line breaks of every kind inside a caption become spaces (pycocoevalcap replaces ``\\n`` only; a ``\\r`` would
  shift every later caption onto the wrong image).

Both METEOR and PTBTokenizer need java. Without it METEOR is not computed (``None``, with a note saying how to
install java) and CIDEr is computed on :func:`python_tokenize`'s approximation of PTB tokenisation, which the
result names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycocoevalcap.tokenizer import ptbtokenizer

JAVA_HINT = (
    "METEOR and the PTB tokenizer need a Java runtime: install one (Debian/Ubuntu: "
    "`apt-get install default-jre-headless`; macOS: `brew install openjdk`) and make sure `java` is on PATH"
)
PTB_TOKENIZER = "ptb"
"""Name of Stanford's PTBTokenizer (java) in :attr:`CaptionScores.tokenizer`."""
PYTHON_TOKENIZER = "python-approximate-ptb"
"""Name of :func:`python_tokenize` in :attr:`CaptionScores.tokenizer`."""

PUNCTUATIONS = frozenset(ptbtokenizer.PUNCTUATIONS)
"""The tokens pycocoevalcap removes after PTB tokenisation (quotes, brackets in PTB's spelling, . , ; : ! ? -)."""

_LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


class CaptionMetricError(RuntimeError):
    """A java caption tool (PTBTokenizer or METEOR) failed; the message says which and why."""


class JavaMissingError(CaptionMetricError):
    """``java`` is not on PATH."""

    def __init__(self) -> None:
        super().__init__(f"java was not found. {JAVA_HINT}")


def java_path() -> str | None:
    """The ``java`` executable on PATH, or None."""
    return shutil.which("java")


def _one_line(caption: str) -> str:
    return _LINE_BREAKS.sub(" ", caption)


def _strip_punctuation(line: str) -> str:
    # Same rule as pycocoevalcap: split on single spaces, drop the listed punctuation tokens.
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """Each caption tokenised by Stanford's PTBTokenizer (``-preserveLines -lowerCase``) with punctuation removed.

    Raises :class:`JavaMissingError` without java and :class:`CaptionMetricError` when the tokenizer fails.
    """
    java = java_path()
    if java is None:
        raise JavaMissingError()
    lines = [_one_line(c) for c in captions]
    sent = [i for i, line in enumerate(lines) if line.strip()]
    out = [""] * len(lines)
    if not sent:
        return out
    jar = Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    fd, tmp = tempfile.mkstemp(prefix="grand-engine-ptb-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines[i] for i in sent))
        cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", tmp]
        proc = subprocess.run(cmd, capture_output=True, check=False)
    finally:
        os.unlink(tmp)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise CaptionMetricError(f"PTBTokenizer ({jar.name}) exited with status {proc.returncode}: {tail}")
    tokenised = proc.stdout.decode("utf-8").split("\n")
    if len(tokenised) < len(sent):
        raise CaptionMetricError(
            f"PTBTokenizer returned {len(tokenised)} lines for {len(sent)} captions; captions and tokens no longer align"
        )
    for i, line in zip(sent, tokenised, strict=False):
        out[i] = _strip_punctuation(line)
    return out


_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(
    r"n't|'(?:s|re|ve|ll|d|m)\b|-[lr][rsc]b-"
    r"|(?<![\w.])(?:[^\W\d_]\.)+(?!\w)"  # initials and abbreviations keep their periods: "b.", "p.m.", "u.s."
    r"|\w+(?:[-/.,:]\w+)*|[$%&#@+=*<>^~|]|[^\w\s]+"
)


def python_tokenize(caption: str) -> str:
    """An approximation of :func:`ptb_tokenize` for machines without java.

    Lower-cases, splits the clitics PTB splits (``isn't`` → ``is n't``, ``dog's`` → ``dog 's``), spells brackets
    as PTB does after lower-casing (``-lrb-`` …), keeps the periods of initials and abbreviations (``p.m.``),
    keeps words joined by ``- / . , :`` together (``well-known``, ``3.5``, ``1,000``) and removes the same
    punctuation tokens. Ordinary captions come out as PTB's; rarer constructions (``5:30pm``, ``mr.``, ``?!``) can
    differ, so CIDEr computed on it is labelled approximate.
    """
    text = _one_line(caption).lower()
    text = _CLITIC.sub(r" \1", text)
    text = "".join(f" {_BRACKETS[ch]} " if ch in _BRACKETS else ch for ch in text)
    tokens = _TOKEN.findall(text)
    out = []
    for tok in tokens:
        if tok in PUNCTUATIONS:
            continue
        if re.fullmatch(r"[^\w\s$%&#@+=*<>^~|]+", tok):
            continue  # runs of quote and sentence punctuation (PTB splits them into listed tokens)
        out.append(tok)
    return " ".join(out)


def tokenize(captions: Sequence[str]) -> tuple[list[str], str]:
    """``(tokenised captions, tokenizer name)``: PTB through java when available, else :func:`python_tokenize`."""
    if java_path() is None:
        return [python_tokenize(c) for c in captions], PYTHON_TOKENIZER
    return ptb_tokenize(captions), PTB_TOKENIZER


class MeteorScorer:
    """One METEOR 1.5 java process (pycocoevalcap's ``Meteor``), reusable across evaluations.

    Starting it loads METEOR's paraphrase table (seconds), so a caller that scores several prediction sets keeps one
    scorer open. Use as a context manager or call :meth:`close`.
    """

    def __init__(self) -> None:
        if java_path() is None:
            raise JavaMissingError()
        from pycocoevalcap.meteor.meteor import Meteor

        self._meteor = Meteor()

    def score(self, refs: Mapping[Hashable, Sequence[str]], hyps: Mapping[Hashable, str]) -> float:
        """Corpus METEOR of tokenised candidates ``hyps[k]`` against tokenised references ``refs[k]``."""
        keys = list(refs)
        # METEOR's stdin protocol separates fields with "|||" and records with line breaks.
        gts = {k: [_one_line(r).replace("|||", " ") for r in refs[k]] for k in keys}
        res = {k: [_one_line(hyps[k])] for k in keys}
        try:
            value, _ = self._meteor.compute_score(gts, res)
        except (ValueError, OSError) as exc:
            process = self._meteor.meteor_p
            detail = ""
            if process.poll() is not None and process.stderr is not None:
                detail = process.stderr.read().decode("utf-8", "replace").strip()[-500:]
            raise CaptionMetricError(f"METEOR (meteor-1.5.jar) failed: {exc}. {detail}".strip()) from exc
        return float(value)

    def close(self) -> None:
        """End the java process (idempotent)."""
        process = self._meteor.meteor_p
        if process.poll() is None:
            with contextlib.suppress(OSError):  # a process that died leaves a broken pipe
                process.stdin.close()
            process.kill()
            process.wait()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cider(refs: Mapping[Hashable, Sequence[str]], hyps: Mapping[Hashable, str]) -> tuple[float, dict[Hashable, float]]:
    """``(corpus CIDEr-D, per-image CIDEr-D)`` of tokenised captions, from pycocoevalcap's ``Cider`` scorer.

    CIDEr-D weighs n-grams by their inverse document frequency over the references of *this* set of images, so the
    figure depends on the whole set: with a single image every weight is zero and so is the score.
    """
    from pycocoevalcap.cider.cider import Cider

    keys = list(refs)
    value, per_image = Cider().compute_score({k: list(refs[k]) for k in keys}, {k: [hyps[k]] for k in keys})
    return float(value), {k: float(s) for k, s in zip(keys, per_image, strict=True)}


@dataclass
class CaptionScores:
    """METEOR (None when not computed) and CIDEr of one prediction set, and how the captions were tokenised."""

    meteor: float | None
    cider: float
    cider_per_image: dict[Hashable, float]
    tokenizer: str
    notes: list[str] = field(default_factory=list)


def caption_scores(
    refs: Mapping[Hashable, Sequence[str]],
    hyps: Mapping[Hashable, str],
    meteor: MeteorScorer | bool = True,
) -> CaptionScores:
    """METEOR and CIDEr of raw captions: ``hyps[k]`` is the candidate and ``refs[k]`` the references of image ``k``.

    ``meteor``: an open :class:`MeteorScorer` to reuse, ``True`` to start (and stop) one, ``False`` to skip METEOR.
    Without java METEOR is None and CIDEr uses :func:`python_tokenize`; :attr:`CaptionScores.notes` says so.
    """
    keys = list(refs)
    if not keys:
        raise ValueError("caption metrics need at least one image")
    flat = [c for k in keys for c in refs[k]] + [hyps[k] for k in keys]
    tokens, tokenizer = tokenize(flat)
    pos = 0
    tok_refs: dict[Hashable, list[str]] = {}
    for k in keys:
        tok_refs[k] = tokens[pos : pos + len(refs[k])]
        pos += len(refs[k])
    tok_hyps = dict(zip(keys, tokens[pos:], strict=True))
    notes = []
    if tokenizer != PTB_TOKENIZER:
        notes.append(
            "java not found: METEOR was not computed and CIDEr was computed on an approximate Python PTB "
            f"tokenisation (it can differ slightly from GLaMM's). {JAVA_HINT}"
        )
    value, per_image = cider(tok_refs, tok_hyps)
    meteor_value = None
    if meteor is not False and tokenizer == PTB_TOKENIZER:
        if isinstance(meteor, MeteorScorer):
            meteor_value = meteor.score(tok_refs, tok_hyps)
        else:
            with MeteorScorer() as scorer:
                meteor_value = scorer.score(tok_refs, tok_hyps)
    return CaptionScores(meteor_value, value, per_image, tokenizer, notes)
