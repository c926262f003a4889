"""``source_masks`` (SAM masks for box-only phrases) and ``source_gcg`` (the grounded GCG record of a source record)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.io import rle
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.source_caption import SOURCE_CAPTION_SCHEMA
from grand_engine.stages.source_gcg import SourceGcg
from grand_engine.stages.source_masks import SOURCE_MASKS_SCHEMA, SourceMasks
from grand_engine.stages.source_records import SOURCE_RECORDS_SCHEMA
from grand_engine.testing import run_stage
from tests.sources.fixtures import H, W

PIXELS = np.full((H, W, 3), 128, dtype=np.uint8)


def box_rle(x1: int, y1: int, x2: int, y2: int) -> dict:
    mask = np.zeros((H, W), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return rle.encode(mask)


def row(image_id: str, dataset: str, entities: list[dict], **extra) -> dict:
    return {
        "image_id": image_id,
        "file_name": f"{image_id}.jpg",
        "width": W,
        "height": H,
        "format": "JPEG",
        "dataset": dataset,
        "split": extra.get("split", "train"),
        "kind": "phrase",
        "source_key": image_id,
        "captions": [],
        "entities": entities,
        "relations": [],
        "dropped": extra.get("dropped", []),
    }


def entity(key: str, **fields) -> dict:
    return {
        "key": key,
        "label": "",
        "object_id": fields.pop("object_id", 1),
        "bbox": fields.pop("bbox", None),
        "segmentation": fields.pop("segmentation", None),
        "polygons": fields.pop("polygons", None),
    }


def unit_of(rows: list[dict], inputs: dict[str, pa.Table] | None = None, pixels: bool = True) -> UnitInput:
    table = pa.Table.from_pylist(rows, schema=SOURCE_RECORDS_SCHEMA)
    loader = (lambda r: PIXELS) if pixels else None
    return UnitInput("s/00000", table, inputs or {}, pixel_loader=loader)


class BoxSam:
    """A stand-in SAM that returns each box's rectangle as the mask (score 0.5) and records its calls."""

    def __init__(self) -> None:
        self.calls: list[list[list[float]]] = []

    def segment_boxes_with_scores(self, image, boxes, max_boxes_per_call=64):
        self.calls.append([list(map(float, b)) for b in boxes])
        return [box_rle(*(int(v) for v in b)) for b in boxes], np.full(len(boxes), 0.5, np.float32)


# -- source_masks ---------------------------------------------------------------------------------------------


def test_only_box_only_entities_are_segmented():
    flickr = row(
        "f1",
        "flickr30k",
        [entity("Two men", bbox=[2, 3, 20, 22], object_id=1), entity("red hats", bbox=[5, 0, 15, 6], object_id=4)],
    )
    refcoco = row("r1", "refcocog", [entity("the man", bbox=[5, 5, 15, 25], polygons=[[5, 5, 15, 5, 15, 25]])])
    sam = BoxSam()
    result = run_stage(SourceMasks.configure(sam=sam), unit_of([flickr, refcoco]))
    rows = {r["image_id"]: r["masks"] for r in result.table.to_pylist()}
    assert rows["r1"] == [] and sam.calls == [[[2, 3, 20, 22], [5, 0, 15, 6]]]
    men, hats = rows["f1"]
    assert (men["key"], men["object_id"], men["score"]) == ("Two men", 1, 0.5)
    assert int(rle.area(men["segmentation"])[0]) == 18 * 19 and hats["key"] == "red hats"


def test_without_box_only_entities_sam_is_never_loaded():
    stage = SourceMasks.configure()  # no model in the slot: loading it would raise
    result = run_stage(
        stage, unit_of([row("r1", "refcocog", [entity("x", segmentation=box_rle(0, 0, 5, 5))])], pixels=False)
    )
    assert result.errors == [] and result.table.column("masks").to_pylist() == [[]]


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    from grand_engine.models import tiny

    dest = tmp_path_factory.mktemp("tiny")
    tiny.build_one("sam-vit-tiny", dest)
    return dest / "sam-vit-tiny"


def test_the_real_tiny_sam_gives_one_image_sized_mask_per_box(tiny_sam):
    from grand_engine.config import ModelSpec

    stage = SourceMasks.configure(models={"sam": ModelSpec(id=str(tiny_sam), family="sam")})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    table = pa.Table.from_pylist(
        [row("f1", "flickr30k", [entity("a", bbox=[2, 3, 20, 22]), entity("b", bbox=[0, 0, 40, 30])])],
        schema=SOURCE_RECORDS_SCHEMA,
    )
    result = run_stage(stage, UnitInput("s/00000", table, pixel_loader=lambda r: image))
    (masks,) = result.table.column("masks").to_pylist()
    assert [m["key"] for m in masks] == ["a", "b"]
    assert all(m["segmentation"]["size"] == [H, W] for m in masks)


# -- source_gcg -----------------------------------------------------------------------------------------------


def caption_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SOURCE_CAPTION_SCHEMA)


def caption_row(image_id: str, caption: str, spans: list[tuple[str, str, int, int]]) -> dict:
    return {
        "image_id": image_id,
        "caption": caption,
        "completion": caption,
        "rounds": 1,
        "finish_reason": "stop",
        "from_source": False,
        "rejected": [],
        "spans": [{"key": k, "phrase": p, "start": s, "end": e} for k, p, s, e in spans],
    }


def test_groundings_from_segments_polygons_and_sam_masks():
    records = [
        row(
            "p1",
            "openpsg",
            [
                entity("person-1", segmentation=box_rle(5, 5, 15, 25), bbox=[5, 5, 15, 25], object_id=2),
                entity("cat-1", segmentation=rle.encode(np.ones((5, 5), bool)), object_id=3),
            ],
        ),
        row(
            "r1",
            "refcocog",
            [
                entity("the man", polygons=[[5, 5, 15, 5, 15, 25, 5, 25]], bbox=[5, 5, 15, 25]),
                entity("a ghost", polygons=[[50, 50, 60, 50, 60, 60]]),
            ],
            split="val",
            dropped=[{"phrase": "a dog", "reason": "unknown_annotation"}],
        ),
        row("f1", "flickr30k", [entity("Two men", bbox=[2, 3, 20, 22])]),
    ]
    captions = caption_table(
        [
            caption_row("p1", "A cat beside a person.", [("cat-1", "cat", 2, 5), ("person-1", "person", 15, 21)]),
            caption_row("r1", "The man and a ghost.", [("the man", "The man", 0, 7), ("a ghost", "a ghost", 12, 19)]),
            caption_row("f1", "Two men sit.", [("Two men", "Two men", 0, 7)]),
        ]
    )
    sam = pa.Table.from_pylist(
        [
            {"image_id": i, "masks": m}
            for i, m in [
                ("p1", []),
                ("r1", []),
                ("f1", [{"key": "Two men", "object_id": 1, "segmentation": box_rle(2, 3, 20, 22), "score": 0.9}]),
            ]
        ],
        schema=SOURCE_MASKS_SCHEMA,
    )
    stage = SourceGcg.configure({"box_masks": "source_masks"})
    assert stage.inputs() == ("source_records", "source_caption", "source_masks")
    result = run_stage(stage, unit_of(records, {"source_caption": captions, "source_masks": sam}, pixels=False))
    assert result.errors == []
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    p1 = rows["p1"]
    assert (p1["dataset"], p1["split"], p1["file_name"], p1["width"], p1["height"]) == (
        "openpsg",
        "train",
        "p1.jpg",
        W,
        H,
    )
    (person,) = p1["groundings"]  # cat-1's mask is 5x5, not the image's 30x40
    assert (
        person["phrase"] == "person"
        and person["token_positives"] == [15, 21]
        and person["mask_source"] == "segmentation"
    )
    assert p1["dropped"] == [{"phrase": "cat", "reason": "mask_size_mismatch"}]
    r1 = rows["r1"]
    (man,) = r1["groundings"]
    assert man["mask_source"] == "polygons" and int(rle.area(man["rle_masks"][0])[0]) == 200
    assert man["polygons"] == [[5, 5, 15, 5, 15, 25, 5, 25]] and man["bbox"] == [5, 5, 15, 25]
    assert r1["dropped"] == [
        {"phrase": "a dog", "reason": "unknown_annotation"},
        {"phrase": "a ghost", "reason": "empty_mask"},
    ]
    (men,) = rows["f1"]["groundings"]
    assert men["mask_source"] == "sam" and men["bbox"] == [2, 3, 20, 22] and men["key"] == "Two men"


def test_a_record_without_a_grounded_span_is_an_error_row_and_bad_spans_are_refused():
    records = [
        row("f1", "flickr30k", [entity("Two men", bbox=[2, 3, 20, 22])]),
        row("f2", "flickr30k", [entity("a dog", bbox=[0, 0, 5, 5])]),
    ]
    captions = caption_table(
        [
            caption_row("f1", "Two men sit.", [("Two men", "Two men", 0, 7)]),
            caption_row("f2", "A dog runs.", [("a dog", "a do", 0, 4)]),
        ]
    )
    result = run_stage(SourceGcg.configure(), unit_of(records, {"source_caption": captions}, pixels=False))
    errors = {e.image_id: e for e in result.errors}
    assert errors["f1"].error_type == "NoGroundedPhrase" and "'Two men': no_mask" in errors["f1"].message
    assert errors["f2"].error_type == "ValueError" and "selects 'A do', not 'a do'" in errors["f2"].message
