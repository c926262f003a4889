"""``tagging``: image tags with scores (GranD step 3), by CLIP zero-shot over a tag vocabulary.

The reference ran two taggers, RAM and Tag2Text (independent sigmoid scores, thresholds 0.68 per class / 0.65,
vocabularies of 4,585 and 3,429 tags that are not even in its repository, §14.28), and used the tags only as
open-vocabulary queries for steps 6 and 7. Here one ``clip`` slot (EVA02-CLIP-L by default) scores every tag of
a vocabulary at once:

* **vocabulary** — the lines of the packaged category files ``vocabulary_files`` (LVIS v1 then COCO), each
  normalised by :func:`grand_engine.labels.normalise_label` (lower case, underscores → spaces, the LVIS
  qualifier dropped from the tag), deduplicated in first-seen order, blanks dropped. With the default files this
  is exactly :func:`grand_engine.labels.tag_vocabulary`;
* **scores** — ``softmax(100 · cos(image, text))`` over the whole vocabulary (each tag's text is
  ``template`` filled with the tag); text embeddings are computed once per worker;
* **selection** — tags with score ``>= threshold``, at most ``top_k`` of them, in descending score order (ties
  in vocabulary order). The softmax makes scores sum to 1 over ~1,200 tags, so they are not comparable with
  RAM's sigmoid thresholds; the defaults keep the few tags CLIP is confident about, which is what the
  downstream open-vocabulary detectors need (they filter the boxes themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.labels import normalise_label, read_category_file
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema

TAGGING_SCHEMA = table_schema(("tags", pa.list_(pa.string())), ("scores", pa.list_(pa.float32())), version="1")
"""The ``tagging`` table: normalised tag names and their scores, aligned, best first."""

DEFAULT_VOCABULARY_FILES = ("lvis_v1_categories.txt", "coco_categories.txt")


def build_vocabulary(files: Sequence[str]) -> list[str]:
    """Normalised tag names of the packaged category ``files``, deduplicated in first-seen order."""
    seen: dict[str, None] = {}
    for name in files:
        for raw in read_category_file(name):
            tag = normalise_label(raw).name
            if tag:
                seen.setdefault(tag, None)
    return list(seen)


def select_tags(scores: np.ndarray, vocabulary: Sequence[str], threshold: float, top_k: int) -> tuple[list, list]:
    """``(tags, scores)`` with ``score >= threshold``, best first (stable: ties keep vocabulary order), at most
    ``top_k`` (``0`` = no limit)."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= np.float32(threshold)]
    if top_k > 0:
        order = order[:top_k]
    return [vocabulary[i] for i in order], [float(scores[i]) for i in order]


@dataclass
class TaggingStage(Stage):
    """Tags with scores from CLIP zero-shot classification over the tag vocabulary (step 3 slot)."""

    name: ClassVar[str] = "tagging"
    requires: ClassVar[tuple[str, ...]] = ("images",)
    level: ClassVar[int | None] = 1
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema] = TAGGING_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("clip",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=32)

    threshold: float = 0.01  # softmax score >= 0.01 (step 3's RAM/Tag2Text sigmoid thresholds 0.68/0.65 don't apply)
    top_k: int = 20  # at most 20 tags per image (RAM-like tag counts); 0 = no limit
    template: str = "a photo of a {}."  # CLIP text for each tag (`{}` = the tag)
    vocabulary_files: tuple[str, ...] = DEFAULT_VOCABULARY_FILES  # packaged category lists (LVIS + COCO)

    clip: Any = collaborator()  # the CLIP adapter; loaded from the `clip` slot when None

    def __post_init__(self) -> None:
        self.vocabulary_files = tuple(self.vocabulary_files)
        if "{}" not in self.template:
            raise ValueError(f"tagging: template must contain '{{}}', got {self.template!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"tagging: top_k must be an integer >= 0, got {self.top_k!r}")

    def setup(self) -> None:
        self.vocabulary = build_vocabulary(self.vocabulary_files)
        if not self.vocabulary:
            raise ValueError(f"tagging: the vocabulary files {list(self.vocabulary_files)} hold no tags")
        if self.clip is None:
            self.clip = self.load_model("clip")
        self.text_embeds = self.clip.encode_texts([self.template.replace("{}", t) for t in self.vocabulary])

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``image_ids`` (one image-encoder call for the batch)."""
        from grand_engine.models.clip import softmax_scores

        scores = softmax_scores(self.clip.encode_images([unit.pixels(i) for i in image_ids]), self.text_embeds)
        rows = []
        for image_id, row_scores in zip(image_ids, scores, strict=True):
            tags, kept = select_tags(row_scores, self.vocabulary, self.threshold, self.top_k)
            rows.append({"image_id": image_id, "tags": tags, "scores": kept})
        return rows
