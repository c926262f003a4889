"""The whole GranD-f source construction on the hand-built fixtures, stage by stage, without the driver.

:func:`build_output` reads a fixture with its dataset's reader, writes record shards, indexes them, runs
``source_records`` → ``source_masks`` → ``source_caption`` → ``source_gcg`` on the unit and lays out an output folder
as a run does, so the exports read it through the real store. The LLM answers from :data:`CAPTIONS` (what a good LLM
would write, checked like any completion); the SAM stand-in returns each box as its mask, so mask areas are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grand_engine.io import rle
from grand_engine.models.llm import Completion
from grand_engine.runtime.stage import UnitInput
from grand_engine.sources.flickr30k import read_flickr30k
from grand_engine.sources.openpsg import read_openpsg
from grand_engine.sources.refcocog import read_refcocog
from grand_engine.sources.shards import index_record_shard, write_record_shards
from grand_engine.stages.source_caption import SourceCaption
from grand_engine.stages.source_gcg import SourceGcg
from grand_engine.stages.source_masks import SourceMasks
from grand_engine.stages.source_records import SOURCE_RECORDS_SCHEMA, SourceRecords
from grand_engine.testing import run_stage
from tests.grandf.level4 import write_output
from tests.sources.fixtures import write_flickr30k, write_openpsg, write_refcocog

CAPTIONS: dict[str, list[str]] = {
    # relation records (keyed by an entity name of the record)
    "dining table-1": ["Person-1 stands beside person-2. Person-2 is standing on the dining table-1."],
    "cat-1": ['"A cat-1 is lying on a blanket-1."'],
    # phrase records (keyed by a phrase of the record); the first RefCOCOg answer drops a phrase: round 2 fixes it
    "the man on the left": [
        "The man on the left waits.",
        "The man on the left waits. A woman in red. stands still.",
    ],
    "the cup": ["The cup is on view."],
    "a test phrase": ["Here is a test phrase."],
    "Two men": ["Two men are there."],
    "red hats": ["The men wear red hats."],
}


class FixtureLLM:
    """Answers from :data:`CAPTIONS`: the first key found in the record's turn (after the two in-context examples,
    a user and an assistant turn each); round ``k`` takes the ``k``-th answer."""

    def chat(self, conversations, *, max_new_tokens, temperature, top_p, seed) -> list[Completion]:
        out = []
        for conv in conversations:
            record = conv[4]["content"]
            key = next(k for k in CAPTIONS if f"- {k}\n" in record + "\n" or f"{k}]" in record or f"[{k}," in record)
            rounds = sum(1 for m in conv[4:] if m["role"] == "user")
            out.append(Completion(CAPTIONS[key][rounds - 1], "stop"))
        return out


class BoxSam:
    """A SAM stand-in: the mask of each box prompt is the box's pixel rectangle."""

    def segment_boxes_with_scores(self, image, boxes, max_boxes_per_call: int = 64):
        h, w = image.shape[:2]
        masks = []
        for x1, y1, x2, y2 in boxes:
            mask = np.zeros((h, w), dtype=bool)
            mask[int(y1) : int(y2), int(x1) : int(x2)] = True
            masks.append(rle.encode(mask))
        return masks, np.ones(len(masks), np.float32)


def run_chain(shards: Sequence[Path]) -> dict[str, pa.Table]:
    """The four stages on one unit made of every member of ``shards``; returns each stage's table."""
    members = [m for shard in shards for m in index_record_shard(shard).members]
    root = SourceRecords.configure()
    records = root.process(UnitInput("fixture/00000", SOURCE_RECORDS_SCHEMA.empty_table(), members=members)).table
    loader = lambda row: np.full((row["height"], row["width"], 3), 100, np.uint8)  # noqa: E731
    unit = UnitInput("fixture/00000", records, pixel_loader=loader)
    masks = run_stage(SourceMasks.configure(sam=BoxSam()), unit).table
    captions = run_stage(SourceCaption.configure(llm=FixtureLLM()), unit).table
    keep = pc.is_in(records.column("image_id"), value_set=captions.column("image_id"))
    unit = UnitInput(
        "fixture/00000",
        records.filter(keep),
        {
            "source_caption": captions,
            "source_masks": masks.filter(pc.is_in(masks.column("image_id"), value_set=captions.column("image_id"))),
        },
        pixel_loader=loader,
    )
    gcg = run_stage(SourceGcg.configure({"box_masks": "source_masks"}), unit).table
    return {"source_records": records, "source_masks": masks, "source_caption": captions, "source_gcg": gcg}


def build_output(root: Path) -> Path:
    """Fixtures → shards → the four stages → an output folder (``root/out``) holding one unit per dataset."""
    readers = {
        "openpsg": lambda d: read_openpsg(**write_openpsg(d)),
        "refcocog": lambda d: read_refcocog(**write_refcocog(d), splits=("train", "val", "test")),
        "flickr30k": lambda d: read_flickr30k(**write_flickr30k(d)),
    }
    units = {}
    for name, read in readers.items():
        shards = write_record_shards(read(root / "datasets" / name), root / "shards" / name, name)
        units[f"{name}-00000/00000"] = run_chain(shards)
    out = root / "out"
    write_output(out, units)
    return out
