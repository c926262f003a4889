"""The Ref-SAV export of a video run: referring expressions with their masklets, in the layout Ref-SAV and MeViS use.

``DEST/meta_expressions.json``::

    {"videos": {"sav_000001": {
        "video": "sav_000001.mp4", "width": 320, "height": 240, "fps": 24.0,
        "frames": ["00000", "00004", …],                # the sampled video frames, zero-padded
        "expressions": {"0": {"exp": "The object is a …", "obj_id": [0], "anno_id": ["sav_000001_0"],
                              "category": "cat", "object_level": "…", "scene_level": "…", "video_level": "…",
                              "verification": "verified", "masklet_id": 0, "source": "manual"}}}}}

``DEST/mask_dict.json``: ``{"sav_000001_0": [RLE or null, …]}`` — one COCO RLE (``{"size": [H, W], "counts"}``)
per entry of ``frames``, null where the object has no mask on that frame. Sa2VA's Ref-SAV loaders read
``meta_expressions["videos"][video]["expressions"][id]["exp"]`` and ``mask_dict[anno_id]``; the extra keys carry
the three levels and the check.

``grand-engine export OUT DEST --format ref-sav`` writes it (``ref-sav-verified``: only the expressions that passed
their check). :class:`RefSav` is an :class:`~grand_engine.grandf.formats.ExportFormat` that reads the
``video_expression`` table and *joins* (``joins``) the video's rows of ``videos`` (the video input kind's root
table), of the masklet table and of the three description stages, which the export reads unit by unit (one unit's
tables in memory at a time). The masks come from ``video_tracks`` when the run has that stage, else from
``video_masklets`` (a run without SAM 2). Objects without an expression, or (``ref-sav-verified``) whose expression
did not pass its check, are counted in the report's ``skipped``, never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from grand_engine.grandf.formats import ExportFormat
from grand_engine.grandf.writers import AtomicText, dumps
from grand_engine.io import rle

__all__ = ["LEVEL_STAGES", "MASKLET_STAGES", "RefSav", "RefSavVerified", "RefSavWriter"]

LEVEL_STAGES = ("video_object_text", "video_scene_text", "video_motion_text")
MASKLET_STAGES = ("video_tracks", "video_masklets")
"""The tables an object's masks can come from, in order of preference."""
META_FILE, MASK_FILE = "meta_expressions.json", "mask_dict.json"


class RefSavWriter:
    """``meta_expressions.json`` and ``mask_dict.json`` written video by video (both atomic, as every writer)."""

    def __init__(self, dest: str | Path) -> None:
        dest = Path(dest)
        self.meta = AtomicText(dest / META_FILE)
        self.masks = AtomicText(dest / MASK_FILE)
        self.meta.write('{"videos": {')
        self.masks.write("{")
        self.videos = 0
        self.annotations = 0

    def add(self, video_id: str, meta: dict[str, Any], masks: dict[str, list[Any]]) -> None:
        self.meta.write(("\n" if self.videos == 0 else ",\n") + f"{dumps(video_id)}: {dumps(meta)}")
        for anno_id, per_frame in masks.items():
            self.masks.write(("\n" if self.annotations == 0 else ",\n") + f"{dumps(anno_id)}: {dumps(per_frame)}")
            self.annotations += 1
        self.videos += 1

    def close(self) -> int:
        self.meta.write("\n}}\n")
        self.masks.write("\n}\n")
        return self.meta.close() + self.masks.close()

    def abort(self) -> None:
        self.meta.abort()
        self.masks.abort()


class RefSav(ExportFormat):
    """Ref-SAV layout: one ``meta_expressions`` entry and one masklet per described object (module docstring)."""

    name = "ref-sav"
    description = "Ref-SAV / MeViS layout: meta_expressions.json + mask_dict.json, one expression per video object"
    table = "video_expression"
    joins: ClassVar[tuple[str, ...]] = ("videos", *MASKLET_STAGES, *LEVEL_STAGES)
    verified_only: ClassVar[bool] = False  # write only the expressions whose check passed

    @classmethod
    def default_dest(cls, layout: str) -> str:
        return "ref_sav"

    @classmethod
    def writes_folder(cls, layout: str) -> bool:
        return True

    def open(self, dest: Path) -> RefSavWriter:
        return RefSavWriter(dest)

    def records(self, row: dict[str, Any], file_name: str) -> Iterator[tuple[str, dict[str, Any], dict]]:
        video = row.get("videos")
        if video is None:
            raise ValueError("the video has no videos row")
        masklets = next((row[name] for name in MASKLET_STAGES if name in row), None)
        tracks = {int(o["object_id"]): o for o in (masklets or {}).get("objects") or []}
        levels = {
            stage: {int(o["object_id"]): o for o in (row.get(stage) or {}).get("objects") or []}
            for stage in LEVEL_STAGES
        }
        frames = [f"{int(i):05d}" for i in video["frame_indices"]]
        expressions: dict[str, dict[str, Any]] = {}
        masks: dict[str, list[Any]] = {}
        for entry in row.get("objects") or []:
            object_id = int(entry["object_id"])
            status = (entry.get("verification") or {}).get("status")
            if not entry.get("expression"):
                self.report.skipped["object_without_expression"] += 1
                continue
            if self.verified_only and status != "verified":
                self.report.skipped[f"object_{status or 'unverified'}"] += 1
                continue
            obj = tracks.get(object_id)
            if obj is None:
                self.report.skipped["object_without_masklet"] += 1
                continue
            anno_id = f"{row['image_id']}_{object_id}"
            expressions[str(len(expressions))] = {
                "exp": entry["expression"],
                "obj_id": [object_id],
                "anno_id": [anno_id],
                "category": entry.get("category"),
                "object_level": (levels["video_object_text"].get(object_id) or {}).get("text"),
                "scene_level": (levels["video_scene_text"].get(object_id) or {}).get("text"),
                "video_level": (levels["video_motion_text"].get(object_id) or {}).get("text"),
                "verification": status,
                "masklet_id": obj.get("masklet_id"),
                "source": obj.get("source"),
            }
            masks[anno_id] = list(obj["masks"])
        if not expressions:
            self.report.skipped["video_without_expression"] += 1
            return
        meta = {
            "video": video["file_name"],
            "width": int(video["width"]),
            "height": int(video["height"]),
            "fps": float(video["fps"]),
            "frames": frames,
            "expressions": expressions,
        }
        yield row["image_id"], meta, masks

    def check(self, record: tuple[str, dict[str, Any], dict], row: dict[str, Any]) -> list[str]:
        _, meta, masks = record
        problems = []
        for anno_id, per_frame in masks.items():
            if len(per_frame) != len(meta["frames"]):
                problems.append(f"{anno_id}: {len(per_frame)} masks for {len(meta['frames'])} frames")
                continue
            for k, seg in enumerate(per_frame):
                if seg is None:
                    continue
                try:
                    rle.run_lengths(seg)
                    size = [int(v) for v in seg["size"]]
                except rle.RLEError as exc:
                    problems.append(f"{anno_id}, frame {meta['frames'][k]}: {exc}")
                    break
                if size != [meta["height"], meta["width"]]:
                    problems.append(f"{anno_id}, frame {meta['frames'][k]}: mask size {size} is not the video's")
                    break
        return problems

    def write(self, writer: RefSavWriter, record: tuple[str, dict[str, Any], dict], row: dict[str, Any]) -> None:
        video_id, meta, masks = record
        writer.add(video_id, meta, masks)
        self.report.items["expressions"] += len(meta["expressions"])
        self.report.items["masks"] += sum(1 for per_frame in masks.values() for m in per_frame if m is not None)

    def close(self, writer: RefSavWriter) -> int:
        return writer.close()


class RefSavVerified(RefSav):
    """The Ref-SAV layout with only the expressions that passed their check."""

    name = "ref-sav-verified"
    description = "the Ref-SAV layout, only the expressions whose checklist verification passed"
    verified_only = True
