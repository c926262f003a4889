"""``ovss``: stuff regions by training-free open-vocabulary semantic segmentation (CASS), optional, after ``tagging``.

GranD's detectors and SAM cover things; stuff (sky, road, grass, wall, water) is where its level 1 is weakest. This
stage labels every pixel of the image with one class of a per-image vocabulary — the image's ``tagging`` tags plus
a stuff list (by default COCO-Stuff's 91 stuff classes) — with CASS (:mod:`grand_engine.ovss`: CLIP ViT-B/16 in the
``clip`` slot, DINO ViT-B/16 in the ``vfm`` slot), and stores one region per class present: its mask (COCO RLE), tight
box, area, score (mean probability over its pixels) and kind (``stuff`` for stuff-list classes, ``tag`` for the
others). Classes covering less than ``min_area_fraction`` of the image are dropped.

``level1`` merges the ``stuff`` regions as objects that do not duplicate a detector/SAM object (mask IoU rule,
:func:`grand_engine.ovss.regions.add_stuff_objects`). Off in ``manifests/grand.yaml`` by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.ovss import (
    DEFAULT_STUFF_FILE,
    CassConfig,
    ovss_row,
    ovss_vocabulary,
    regions_from_segmentation,
    stuff_name,
    stuff_vocabulary,
)
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import BOX, RLE, table_schema

__all__ = ["OVSS_SCHEMA", "OvssStage"]

OVSS_SCHEMA = table_schema(
    ("labels", pa.list_(pa.string())),
    ("kinds", pa.list_(pa.string())),
    ("scores", pa.list_(pa.float32())),
    ("areas", pa.list_(pa.int64())),
    ("boxes", pa.list_(BOX)),
    ("masks", pa.list_(RLE)),
    version="1",
)
"""The ``ovss`` table: one entry per class region of the image's label map, aligned lists in vocabulary order."""


@dataclass
class OvssStage(Stage):
    """Per-class region masks of a CASS label map over the image's tags plus a stuff list."""

    name: ClassVar[str] = "ovss"
    requires: ClassVar[tuple[str, ...]] = ("images", "tagging")
    level: ClassVar[int | None] = 1
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema] = OVSS_SCHEMA
    batching: ClassVar[Batching] = "image"  # one image = several windows through both backbones already
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("clip", "vfm")
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=1)

    stuff: str | list[str] = DEFAULT_STUFF_FILE  # the stuff list: a packaged category file or a list of class names
    use_tags: bool = True  # add the image's `tagging` tags to the vocabulary (things compete with stuff per pixel)
    min_area_fraction: float = 0.001  # drop classes covering < 0.1 % of the image (chosen here: specks, not regions)
    cass: dict[str, Any] = field(default_factory=dict)  # CassConfig overrides (short_side, energy, templates, …)

    segmenter: Any = collaborator()  # a CassSegmenter; built from the `clip` and `vfm` slots when None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_area_fraction <= 1.0:
            raise ValueError(f"ovss: min_area_fraction must be in [0, 1], got {self.min_area_fraction!r}")
        if isinstance(self.stuff, str):
            self.stuff_names: tuple[str, ...] = stuff_vocabulary(self.stuff)
        elif isinstance(self.stuff, Sequence) and all(isinstance(s, str) for s in self.stuff):
            self.stuff_names = tuple(dict.fromkeys(n for n in (stuff_name(s) for s in self.stuff) if n))
        else:
            raise ValueError(f"ovss: stuff must be a packaged file name or a list of class names, got {self.stuff!r}")
        if not self.stuff_names and not self.use_tags:
            raise ValueError("ovss: the vocabulary would be empty (no stuff classes and use_tags is false)")
        options = dict(self.cass)
        if "templates" in options:
            options["templates"] = tuple(options["templates"])
        try:
            self.config = CassConfig(**options)
        except TypeError as err:
            raise ValueError(f"ovss: bad `cass` parameters {sorted(options)}: {err}") from None

    def inputs(self) -> tuple[str, ...]:
        return ("images", "tagging") if self.use_tags else ("images",)

    def setup(self) -> None:
        if self.segmenter is None:
            from grand_engine.ovss import CassSegmenter  # deferred: builds torch models

            self.segmenter = CassSegmenter(self.load_model("clip"), self.load_model("vfm"), self.config)

    def vocabulary(self, unit: UnitInput, image_id: str) -> tuple[str, ...]:
        """The image's tags (when ``use_tags``) then the stuff classes, normalised and deduplicated."""
        tags: list[str] = []
        if self.use_tags:
            tags = unit.input_row("tagging", image_id).get("tags") or []
        return ovss_vocabulary(tags, self.stuff_names)

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        vocabulary = self.vocabulary(unit, image_id)
        if not vocabulary:
            raise ValueError("ovss: the image has no tags and the stuff list is empty")
        result = self.segmenter.segment(unit.pixels(image_id), vocabulary)
        regions = regions_from_segmentation(
            result.labels, result.scores, result.vocabulary, set(self.stuff_names), self.min_area_fraction
        )
        return {"image_id": image_id, **ovss_row(regions)}
