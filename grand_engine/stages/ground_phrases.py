"""``ground_phrases``: noun phrases of the two captions, each grounded to one box (GranD step 13, MDETR slot).

1. **Phrases** — each caption (``caption_blip2`` → ``caption_index`` 0, ``caption_vlm`` → 1) goes through
   :func:`grand_engine.phrases.extract_phrases_many`: spaCy parses the reference's capitalised copy of the
   caption; the primary ("subtree of every NOUN") extractor runs, and the fallback extractor only when the
   primary finds nothing (spec step 13). Every phrase is a character span ``[start, end)`` of the caption as
   stored (``caption[start:end] == phrase``).
2. **Grounding** — the grounding model (Grounding DINO in place of MDETR) reads the image and the whole caption
   once; each phrase's span is mapped to its tokens and every predicted box is scored for the phrase by the mean
   token probability. The phrase keeps its **best-scoring** box, when that score is > ``threshold`` (0.5, the
   reference's query-probability cut); otherwise ``box`` is null and ``score`` still records the best score.
   A span that maps to no token (beyond the text limit) has a null box and a null score.

Deliberate differences from the reference (§14.32): the reference kept the *first* query over the threshold by
query index rather than the best one, and keyed phrases by their text so a repeated phrase collapsed while its
nouns did not, misaligning nouns and boxes. Here every extracted phrase is its own entry carrying its own noun,
span and caption index, in caption order then extraction order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.phrases import extract_phrases_many, load_nlp
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import BOX, table_schema

CAPTION_STAGES: tuple[str, ...] = ("caption_blip2", "caption_vlm")
"""Caption tables in ``caption_index`` order (0 = BLIP-2 slot, 1 = VLM slot)."""

PHRASE = pa.struct(
    [
        ("caption_index", pa.int8()),  # 0 = caption_blip2, 1 = caption_vlm
        ("noun", pa.string()),  # the phrase's head noun as written in the caption
        ("phrase", pa.string()),  # caption[start:end]
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("box", BOX),  # best box, null when its score is not above the threshold
        ("score", pa.float32()),  # best box's score for the phrase (null when the span has no token)
    ]
)
"""One extracted phrase and its grounding."""

GROUND_PHRASES_SCHEMA = table_schema(("phrases", pa.list_(PHRASE)))
"""The ``ground_phrases`` table."""


@dataclass
class GroundPhrases(Stage):
    """Extract noun phrases from both captions with spaCy and ground each to its best box."""

    name: ClassVar[str] = "ground_phrases"
    requires: ClassVar[tuple[str, ...]] = CAPTION_STAGES
    level: ClassVar[int | None] = 2
    schema: ClassVar[pa.Schema] = GROUND_PHRASES_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("grounder", "spacy")
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=8)

    threshold: float = 0.5  # spec step 13: keep a box whose phrase probability is > 0.5
    capitalize: bool = True  # spec step 13: spaCy parses caption.capitalize() (spans still index the caption)

    grounder: Any = collaborator()  # the phrase-grounding adapter; loaded from the `grounder` slot when None
    nlp: Any = collaborator()  # spaCy pipeline: the `spacy` slot, else the packaged English model

    def setup(self) -> None:
        if self.grounder is None:
            self.grounder = self.load_model("grounder")
        if self.nlp is None:
            spacy = self.load_model("spacy", required=False)
            self.nlp = spacy.nlp if spacy is not None else load_nlp()

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """``ground_phrases`` rows for ``image_ids`` (captions parsed in one ``nlp.pipe`` pass, every caption of the
        batch grounded in one grounder call)."""
        captions = [[unit.input_row(stage, i).get("caption") for stage in CAPTION_STAGES] for i in image_ids]
        flat = [c or "" for caps in captions for c in caps]
        extracted = extract_phrases_many(self.nlp, flat, capitalize=self.capitalize)
        n = len(CAPTION_STAGES)
        jobs: list[tuple[int, int]] = []  # (image index, caption index) of every caption with phrases
        requests = []
        for k, image_id in enumerate(image_ids):
            pixels = None
            for index in range(n):
                phrases = extracted[k * n + index]
                if not phrases:
                    continue
                pixels = unit.pixels(image_id) if pixels is None else pixels
                jobs.append((k, index))
                requests.append((pixels, flat[k * n + index], [(p.start, p.end) for p in phrases]))
        # threshold 0 here: the adapter returns every span's best box, the stage applies its own strict cut.
        results = self.grounder.ground_phrases_batch(requests, threshold=0.0) if requests else []
        rows: list[dict[str, Any]] = [{"image_id": image_id, "phrases": []} for image_id in image_ids]
        for (k, index), found in zip(jobs, results, strict=True):
            rows[k]["phrases"].extend(self._entries(index, extracted[k * n + index], found))
        return rows

    def _entries(self, index: int, phrases: list[Any], results: list[Any]) -> list[dict[str, Any]]:
        """The rows' phrase entries of one caption from the grounder's ``(xyxy, score)`` or None per phrase."""
        out: list[dict[str, Any]] = []
        for phrase, result in zip(phrases, results, strict=True):
            box, score = None, None
            if result is not None:
                xyxy, best = result
                score = float(best) if math.isfinite(best) else None
                if score is not None and score > self.threshold:
                    box = [float(v) for v in xyxy]
            out.append(
                {
                    "caption_index": index,
                    "noun": phrase.noun,
                    "phrase": phrase.phrase,
                    "start": phrase.start,
                    "end": phrase.end,
                    "box": box,
                    "score": score,
                }
            )
        return out
