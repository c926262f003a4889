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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.labels import Label
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema
from grand_engine.stages.region_attributes import crop_box

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

    clip: Any = collaborator()  # the CLIP adapter; loaded from the `clip` slot when None

    def setup(self) -> None:
        if self.clip is None:
            self.clip = self.load_model("clip")

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """``label_assign`` rows for ``image_ids`` (every crop of the batch encoded together)."""
        jobs: list[tuple[str, int, list[str]]] = []
        crops: list[np.ndarray] = []
        texts: list[list[str]] = []
        for image_id in image_ids:
            row = unit.input_row("link_phrases", image_id)
            multi = []
            for obj in (row.get("objects") or []) + (row.get("floating_objects") or []):
                names, candidate_texts = candidates(obj, self.use_qualifiers)
                if len(names) > 1 and obj.get("bbox") is not None:
                    multi.append((obj, names, candidate_texts))
            if not multi:
                continue
            pixels = unit.pixels(image_id)
            for obj, names, candidate_texts in multi:
                crop = crop_box(pixels, obj["bbox"])
                if crop is None:
                    continue
                jobs.append((image_id, int(obj["id"]), names))
                crops.append(crop)
                texts.append(candidate_texts)
        chosen: dict[str, list[dict[str, Any]]] = {i: [] for i in image_ids}
        if crops:
            probabilities = self.clip.classify_each(crops, texts)
            for (image_id, object_id, names), probs in zip(jobs, probabilities, strict=True):
                best = int(np.argmax(probs))
                chosen[image_id].append({"object_id": object_id, "label": names[best], "score": float(probs[best])})
        return [{"image_id": i, "assignments": chosen[i]} for i in image_ids]
