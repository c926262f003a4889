"""``label_assign``: one label per multi-label object, chosen by CLIP (GranD step 16, EVA-CLIP slot).

For every object and floating object of ``link_phrases`` with more than one candidate label, the box is cropped
from the image (outward-rounded and clamped to it; an empty crop is skipped, as in the reference), encoded with
the CLIP model, and compared with the object's **own** candidate labels: ``softmax(100 · cos)`` over them, the
argmax wins (spec step 16). Candidates are encoded without a prompt template, as the reference did; the text of a
candidate is its normalised name, followed by its LVIS qualifier in parentheses when it has one
(``use_qualifiers``; the reference encoded the raw LVIS strings such as ``sandal_(type_of_shoe)``, so the
qualifier took part in the choice there too). The chosen ``label`` is always the candidate's name, so it is
always one of the object's ``labels``.

Objects with one label (or none) get no entry: ``level2`` uses ``labels[0]`` for them, then applies the
person normalisation of step 17. Ids are ``link_phrases`` ids.

``mode: pooled`` (not the reference's) encodes each image once and pools every object's embedding from the patch
tokens its crop covers (:mod:`grand_engine.models.pooling`; SigLIP's attention-pooling head, ``hf_clip``), instead
of one CLIP pass per crop (``mode: crops``, the reference's and the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.labels import Label
from grand_engine.models.clip import softmax_scores
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema
from grand_engine.stages.region_attributes import crop_box, crop_box_bounds
from grand_engine.stages.sam_classify import CLASSIFIER_MODES

ASSIGNMENT = pa.struct([("object_id", pa.int32()), ("label", pa.string()), ("score", pa.float32())])
"""The label CLIP chose for one object (``object_id`` is a ``link_phrases`` id) and its softmax probability."""

LABEL_ASSIGN_SCHEMA = table_schema(("assignments", pa.list_(ASSIGNMENT)))
"""The ``label_assign`` table."""


def candidates(obj: dict[str, Any], use_qualifiers: bool = True) -> tuple[list[str], list[str]]:
    """An object's distinct candidate labels (first-seen order) and the text CLIP encodes for each."""
    names: list[str] = []
    texts: list[str] = []
    qualifiers = list(obj.get("qualifiers") or [])
    for i, name in enumerate(obj.get("labels") or []):
        if not name or name in names:
            continue
        qualifier = qualifiers[i] if i < len(qualifiers) and qualifiers[i] else ""
        names.append(name)
        texts.append(Label(name, qualifier).display if use_qualifiers else name)
    return names, texts


@dataclass
class LabelAssign(Stage):
    """Choose one label among each multi-label object's own candidates by CLIP similarity of its box crop."""

    name: ClassVar[str] = "label_assign"
    requires: ClassVar[tuple[str, ...]] = ("link_phrases",)
    level: ClassVar[int | None] = 2
    schema: ClassVar[pa.Schema] = LABEL_ASSIGN_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("clip",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=32)

    use_qualifiers: bool = True  # spec step 16 encoded raw LVIS names, qualifier included
    mode: str = "crops"  # crops (step 16: one CLIP pass per crop) | pooled (one pass per image, pooled per object)

    clip: Any = collaborator()  # the CLIP adapter; loaded from the `clip` slot when None

    def __post_init__(self) -> None:
        if self.mode not in CLASSIFIER_MODES:
            raise ValueError(f"label_assign: mode must be one of {CLASSIFIER_MODES}, got {self.mode!r}")

    def setup(self) -> None:
        if self.clip is None:
            self.clip = self.load_model("clip")

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """``label_assign`` rows for ``image_ids`` (every crop of the batch encoded together)."""
        jobs: list[tuple[str, int, list[str]]] = []
        texts: list[list[str]] = []
        regions: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}  # image -> (pixels, crop bounds of its objects)
        for image_id in image_ids:
            multi = self._multi_label_objects(unit.input_row("link_phrases", image_id))
            if not multi:
                continue
            pixels = unit.pixels(image_id)
            for obj, names, candidate_texts in multi:
                bounds = crop_box_bounds(pixels, obj["bbox"])
                if bounds[2] <= bounds[0] or bounds[3] <= bounds[1]:
                    continue  # an empty crop is skipped, as in the reference
                jobs.append((image_id, int(obj["id"]), names))
                texts.append(candidate_texts)
                regions.setdefault(image_id, (pixels, []))[1].append(bounds)
        chosen: dict[str, list[dict[str, Any]]] = {i: [] for i in image_ids}
        if jobs:
            for (image_id, object_id, names), probs in zip(jobs, self._score(regions, texts), strict=True):
                best = int(np.argmax(probs))
                chosen[image_id].append({"object_id": object_id, "label": names[best], "score": float(probs[best])})
        return [{"image_id": i, "assignments": chosen[i]} for i in image_ids]

    def _multi_label_objects(self, row: dict[str, Any]) -> list[tuple[dict[str, Any], list[str], list[str]]]:
        """The objects of a ``link_phrases`` row with a box and more than one candidate, with names and texts."""
        out = []
        for obj in (row.get("objects") or []) + (row.get("floating_objects") or []):
            names, candidate_texts = candidates(obj, self.use_qualifiers)
            if len(names) > 1 and obj.get("bbox") is not None:
                out.append((obj, names, candidate_texts))
        return out

    def _score(
        self, regions: dict[str, tuple[np.ndarray, list[np.ndarray]]], texts: list[list[str]]
    ) -> list[np.ndarray]:
        """Probabilities over each object's own candidates, objects in image order (as ``regions`` holds them)."""
        if self.mode == "pooled":
            parts = self.clip.encode_regions([p for p, _ in regions.values()], [r for _, r in regions.values()])
            embeds = np.concatenate(parts)
            return [softmax_scores(embeds[i : i + 1], self.clip.encode_texts(t))[0] for i, t in enumerate(texts)]
        crops = [crop_box(pixels, b) for pixels, bounds in regions.values() for b in bounds]
        return self.clip.classify_each(crops, texts)
