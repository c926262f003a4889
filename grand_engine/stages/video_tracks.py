"""``video_tracks``: complete the selected masklets with SAM 2 video propagation, or create masklets where none are.

* **Complete** (``complete``): an object whose masklet has sampled frames without annotation (null masks: the
  video was sampled more densely than it was annotated, or frames were never annotated) is tracked by SAM 2 from
  its annotated frames — at most ``max_prompt_frames`` of them, spread evenly, as conditioning masks — and the
  predictions fill the missing frames (``propagated`` counts them). Annotated frames keep their masks. An object
  whose every sampled frame is annotated is passed through unchanged, without running the model.
* **Create** (``create``): a video with no selected masklet (a folder of plain videos, or every masklet rejected)
  gets new ones as SA-V's automatic masklets were made — SAM 2 prompted with a regular grid of
  ``points_per_side``² points on the first sampled frame. Each point's mask is a candidate; candidates whose
  object score logit is under ``min_object_score`` or whose area is outside ``[min_area_fraction,
  max_area_fraction]`` of the frame are dropped, the rest are de-duplicated greedily by mask IoU (highest score
  first, ``nms_iou``), the best ``max_new_objects`` are kept and propagated over every sampled frame
  (``source = "sam2"``, ``masklet_id`` null).

Every object's statistics (:func:`grand_engine.stages.video_common.masklet_stats`) are recomputed on its final
masks. The frames SAM 2 sees are the sampled frames of the ``videos`` row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.io import rle
from grand_engine.runtime.stage import Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema
from grand_engine.stages.video_common import VIDEO_OBJECT, frames_of, masklet_stats, objects_of

VIDEO_TRACKS_SCHEMA = table_schema(
    ("objects", pa.list_(VIDEO_OBJECT)),  # every object with a mask on every sampled frame
    ("created", pa.int32()),  # objects SAM 2 created (0 when the video had masklets)
    ("candidates", pa.int32()),  # grid points tried when creating (0 otherwise)
)
"""The ``video_tracks`` table."""


def grid_points(width: int, height: int, per_side: int) -> list[tuple[float, float]]:
    """``per_side``² points at the centres of a regular grid over a ``width×height`` frame (as SAM's automatic mask
    generator places its prompts)."""
    xs = (np.arange(per_side) + 0.5) * width / per_side
    ys = (np.arange(per_side) + 0.5) * height / per_side
    return [(float(x), float(y)) for y in ys for x in xs]


def pick_candidates(
    masks: list[np.ndarray],
    scores: np.ndarray,
    *,
    min_score: float,
    min_area_fraction: float,
    max_area_fraction: float,
    nms_iou: float,
    limit: int,
) -> list[int]:
    """Indices of the candidate masks to keep (see the module docstring), best score first."""
    if not masks:
        return []
    pixels = masks[0].size
    areas = np.array([int(m.sum()) for m in masks])
    ok = [
        i
        for i in range(len(masks))
        if scores[i] >= min_score and min_area_fraction * pixels <= areas[i] <= max_area_fraction * pixels
    ]
    ok.sort(key=lambda i: (-float(scores[i]), i))
    if not ok:
        return []
    encoded = rle.encode(np.stack([masks[i] for i in ok]))
    ious = rle.iou_matrix(encoded, encoded)
    kept: list[int] = []
    for k in range(len(ok)):
        if all(ious[k, j] <= nms_iou for j in kept):
            kept.append(k)
            if len(kept) == limit:
                break
    return [ok[k] for k in kept]


def even_subset(items: list[int], limit: int) -> list[int]:
    """At most ``limit`` of ``items``, spread evenly (first and last kept)."""
    if len(items) <= limit:
        return list(items)
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, limit)).astype(int))
    return [items[int(p)] for p in picks]


@dataclass
class VideoTracks(Stage):
    """SAM 2 propagation: complete partial masklets, create masklets for videos without any."""

    name: ClassVar[str] = "video_tracks"
    requires: ClassVar[tuple[str, ...]] = ("videos", "video_masklets")
    level: ClassVar[int | None] = None
    schema: ClassVar[pa.Schema] = VIDEO_TRACKS_SCHEMA
    model_slots: ClassVar[tuple[str, ...]] = ("sam2",)
    default_resources: ClassVar[Resources] = Resources(gpus=1.0, cpus=1.0, batch_size=1)

    complete: bool = True  # fill sampled frames without annotation by propagating the annotated ones
    create: bool = True  # give videos without a selected masklet new masklets from a point grid
    max_prompt_frames: int = 4  # new: annotated frames used as conditioning masks per object (spread evenly)
    points_per_side: int = 8  # new: 64 grid prompts; SAM's automatic generator uses 32² for whole-image coverage
    min_object_score: float = 0.0  # SAM 2's own presence test: an object score logit above 0 means "present"
    min_area_fraction: float = 0.01  # new: a created object under 1 % of the frame is too small to describe
    max_area_fraction: float = 0.8  # new: a mask over 80 % of the frame is background, not an object
    nms_iou: float = 0.7  # SAM's automatic mask generator de-duplicates at box IoU 0.7; here mask IoU
    max_new_objects: int = 5  # new: created objects per video

    sam2: Any = collaborator()  # the loaded SAM 2 video adapter

    def __post_init__(self) -> None:
        if self.max_prompt_frames < 1 or self.points_per_side < 1:
            raise ValueError("max_prompt_frames and points_per_side must be >= 1")

    def setup(self) -> None:
        if self.sam2 is None:
            self.sam2 = self.load_model("sam2")

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        objects = objects_of(unit, "video_masklets", image_id)
        rate = float(unit.image_row(image_id)["sample_fps"])
        created = candidates = 0
        if objects and self.complete:
            objects = self.completed(unit, image_id, objects, rate)
        elif not objects and self.create:
            objects, candidates = self.created(unit, image_id, rate)
            created = len(objects)
        return {"image_id": image_id, "objects": objects, "created": created, "candidates": candidates}

    def completed(self, unit: UnitInput, image_id: str, objects: list[dict[str, Any]], rate: float) -> list[dict]:
        """Objects with their missing frames filled by propagation (objects without gaps unchanged)."""
        gaps = [o for o in objects if any(m is None for m in o["masks"])]
        prompts: dict[int, dict[int, np.ndarray]] = {}
        for obj in gaps:
            known = [i for i, m in enumerate(obj["masks"]) if m is not None]
            if known:
                prompts[int(obj["object_id"])] = {
                    i: np.asarray(rle.decode(obj["masks"][i]), dtype=bool)
                    for i in even_subset(known, self.max_prompt_frames)
                }
        if not prompts:
            return objects
        tracked = self.sam2.propagate(frames_of(unit, image_id), prompts)
        out = []
        for obj in objects:
            masks = tracked.get(int(obj["object_id"]))
            if masks is None:
                out.append(obj)
                continue
            filled = [i for i, m in enumerate(obj["masks"]) if m is None]
            new_masks = list(obj["masks"])
            encoded = rle.encode(np.stack([masks[i] for i in filled]))
            for i, seg in zip(filled, encoded, strict=True):
                new_masks[i] = seg
            out.append(self._with_masks(obj, new_masks, rate, propagated=len(filled)))
        return out

    def created(self, unit: UnitInput, image_id: str, rate: float) -> tuple[list[dict[str, Any]], int]:
        """New objects from the point grid (see the module docstring) and the number of points tried."""
        frames = frames_of(unit, image_id)
        first = frames[0]
        points = grid_points(first.shape[1], first.shape[0], self.points_per_side)
        masks, scores = self.sam2.segment_points(first, points)
        keep = pick_candidates(
            masks,
            scores,
            min_score=self.min_object_score,
            min_area_fraction=self.min_area_fraction,
            max_area_fraction=self.max_area_fraction,
            nms_iou=self.nms_iou,
            limit=self.max_new_objects,
        )
        if not keep:
            return [], len(points)
        tracked = self.sam2.propagate(frames, {n: {0: masks[i]} for n, i in enumerate(keep)})
        objects = []
        for n in range(len(keep)):
            encoded = rle.encode(np.stack(tracked[n]))
            base = {"object_id": n, "masklet_id": None, "source": "sam2"}
            objects.append(self._with_masks(base, encoded, rate, propagated=len(frames) - 1))
        return objects, len(points)

    @staticmethod
    def _with_masks(obj: dict[str, Any], masks: list[dict[str, Any]], rate: float, propagated: int) -> dict:
        areas = [None if m is None else int(rle.area(m)[0]) for m in masks]
        return {**obj, "masks": masks, "areas": areas, **masklet_stats(areas, rate), "propagated": propagated}
