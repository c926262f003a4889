"""``region_attributes``: a short description of every large object (GranD step 15, GPT4RoI slot).

Which objects: the ``objects`` of ``link_phrases`` (not floating objects) whose box covers at least
``min_area_fraction`` (2 %) of the image; smaller objects keep their region-caption attributes unchanged
(spec step 15). Ids are ``link_phrases`` ids; the ``level2`` stage puts each description first in the object's
``attributes``, before its region-caption attributes, and then runs the big-box promotion of step 15.

How the description is produced depends on the model in the ``vlm`` slot (``mode``):

* ``region`` — a Florence-2 checkpoint describes each box in place (``<REGION_TO_DESCRIPTION>`` with the box as
  location tokens), the closest maintained equivalent of GPT4RoI's box-token prompt;
* ``crop`` — any other captioning VLM is shown the box crop with the instruction of the prompt file
  ``prompts/<prompt>`` (``region_attributes.txt``);
* ``auto`` (default) — ``region`` for Florence-2 checkpoints, else ``crop``.

Each answer is cleaned by :func:`clean_description`: leftover location tokens are removed, a chat-role prefix
("ASSISTANT:", "GPT:" …) and everything before it is dropped, whitespace is collapsed. The reference took the
text after the first ": " and crashed when there was none (§14.33); here an answer without a prefix is kept
whole, and an answer that is empty after cleaning gives no description (the object keeps its other
attributes) rather than an empty string.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import box_area
from grand_engine.resources import prompt_file
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema

REGION_DESCRIPTION = pa.struct([("object_id", pa.int32()), ("description", pa.string())])
"""One object's region description (``object_id`` is a ``link_phrases`` id)."""

REGION_ATTRIBUTES_SCHEMA = table_schema(("descriptions", pa.list_(REGION_DESCRIPTION)))
"""The ``region_attributes`` table."""

_LOC_TOKEN = re.compile(r"<loc_\d+>")
_ROLE_PREFIX = re.compile(r"(?:^|[\s\]>#])(?:assistant|gpt|answer)\s*:", re.IGNORECASE)


def clean_description(text: str | None) -> str:
    """A model answer as a one-line description (see the module docstring); ``""`` when nothing is left."""
    if not text:
        return ""
    text = _LOC_TOKEN.sub(" ", text)
    for special in ("<s>", "</s>", "<pad>"):
        text = text.replace(special, " ")
    prefixes = list(_ROLE_PREFIX.finditer(text))
    if prefixes:
        text = text[prefixes[-1].end() :]
    return " ".join(text.split())


def large_objects(row: dict[str, Any], min_area_fraction: float) -> list[dict[str, Any]]:
    """The ``objects`` of a ``link_phrases`` row whose box area is >= ``min_area_fraction`` of the image."""
    width, height = row.get("width"), row.get("height")
    if not width or not height:
        raise ValueError(f"row has no valid image size (width={width!r}, height={height!r})")
    image_area = float(width) * float(height)
    out = []
    for obj in row.get("objects") or []:
        box = obj.get("bbox")
        if box is None or len(box) != 4 or not all(v is not None and math.isfinite(v) for v in box):
            raise ValueError(f"object id {obj.get('id')} has no usable bbox ({box!r})")
        if box_area(box) >= min_area_fraction * image_area:
            out.append(obj)
    return out


def crop_box_bounds(pixels: np.ndarray, box: Any) -> np.ndarray:
    """The integer xyxy bounds :func:`crop_box` cuts (``box`` rounded outwards and clamped to the image), as
    float64; ``x2 <= x1`` or ``y2 <= y1`` when the crop is empty."""
    h, w = pixels.shape[:2]
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    return np.array([x1, y1, x2, y2], dtype=np.float64)


def crop_box(pixels: np.ndarray, box: Any) -> np.ndarray | None:
    """The pixels of ``box`` (outward-rounded, clamped to the image), or ``None`` when that is empty."""
    x1, y1, x2, y2 = (int(v) for v in crop_box_bounds(pixels, box))
    if x2 <= x1 or y2 <= y1:
        return None
    return np.ascontiguousarray(pixels[y1:y2, x1:x2])


@dataclass
class RegionAttributes(Stage):
    """Describe every object covering >= 2 % of the image with the region-description VLM."""

    name: ClassVar[str] = "region_attributes"
    requires: ClassVar[tuple[str, ...]] = ("link_phrases",)
    level: ClassVar[int | None] = 2
    schema: ClassVar[pa.Schema] = REGION_ATTRIBUTES_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("vlm",)
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=8)

    min_area_fraction: float = 0.02  # spec step 15: only objects whose box covers >= 2 % of the image
    max_new_tokens: int = 256  # spec step 15 allowed 1024; region descriptions are a few words
    mode: str = "auto"  # auto | region (Florence-2 box prompt) | crop (any VLM on the box crop)
    prompt: str = "region_attributes.txt"  # crop mode: instruction given with each crop (prompt file)

    vlm: Any = collaborator()  # the VLM adapter; loaded from the `vlm` slot when None

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "region", "crop"):
            raise ValueError(f"region_attributes: mode must be 'auto', 'region' or 'crop', got {self.mode!r}")
        if not 0.0 <= self.min_area_fraction <= 1.0:
            raise ValueError(f"region_attributes: min_area_fraction must be in [0, 1], got {self.min_area_fraction}")

    def setup(self) -> None:
        if self.vlm is None:
            self.vlm = self.load_model("vlm")
        is_florence = getattr(self.vlm, "model_type", "") == "florence2"
        self.use_region = self.mode == "region" or (self.mode == "auto" and is_florence)
        if self.use_region and not is_florence:
            raise ValueError(
                f"region_attributes: mode 'region' needs a Florence-2 checkpoint, got {self.models['vlm'].id!r}"
            )
        self.prompt_text = "" if self.use_region else prompt_file(self.prompt).read_text(encoding="utf-8").strip()

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """``region_attributes`` rows for ``image_ids``."""
        selected = {i: large_objects(unit.input_row("link_phrases", i), self.min_area_fraction) for i in image_ids}
        texts = self._describe_regions(unit, selected) if self.use_region else self._describe_crops(unit, selected)
        rows = []
        for image_id in image_ids:
            descriptions = []
            for obj in selected[image_id]:
                text = clean_description(texts.get((image_id, int(obj["id"]))))
                if text:
                    descriptions.append({"object_id": int(obj["id"]), "description": text})
            rows.append({"image_id": image_id, "descriptions": descriptions})
        return rows

    def _describe_regions(
        self, unit: UnitInput, selected: dict[str, list[dict[str, Any]]]
    ) -> dict[tuple[str, int], str]:
        """Region mode: Florence-2's description of each selected box, by (image, id): every box of the batch in one
        call (each image encoded once, the boxes decoded together)."""
        chosen = [(image_id, objects) for image_id, objects in selected.items() if objects]
        if not chosen:
            return {}
        answers = self.vlm.region_descriptions(
            [unit.pixels(i) for i, _ in chosen],
            [[o["bbox"] for o in objects] for _, objects in chosen],
            max_new_tokens=self.max_new_tokens,
        )
        texts: dict[tuple[str, int], str] = {}
        for (image_id, objects), per_image in zip(chosen, answers, strict=True):
            for obj, answer in zip(objects, per_image, strict=True):
                texts[(image_id, int(obj["id"]))] = answer
        return texts

    def _describe_crops(
        self, unit: UnitInput, selected: dict[str, list[dict[str, Any]]]
    ) -> dict[tuple[str, int], str]:
        """Crop mode: the VLM's answer to the prompt for each selected box's crop, one call for the batch, by
        (image, id); a box with no crop gets none."""
        keys, crops = [], []
        for image_id, objects in selected.items():
            if not objects:
                continue
            pixels = unit.pixels(image_id)
            for obj in objects:
                crop = crop_box(pixels, obj["bbox"])
                if crop is not None:
                    keys.append((image_id, int(obj["id"])))
                    crops.append(crop)
        if not crops:
            return {}
        generations = self.vlm.generate(crops, self.prompt_text, max_new_tokens=self.max_new_tokens)
        return {key: gen.text for key, gen in zip(keys, generations, strict=True)}
