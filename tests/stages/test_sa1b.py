"""The ``sa1b`` stage called directly, and the demo shard built from scikit-image photos."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.demo import DEMO_MTIME, build_demo_shard
from grand_engine.io import rle
from grand_engine.io.images import ImageError, probe_image
from grand_engine.io.sa1b import index_shard, read_locator
from grand_engine.runtime.stage import UnitInput, get_stage_class
from grand_engine.schema import IMAGES_SCHEMA
from grand_engine.stages.sa1b import SA1BStage
from tests.io.shards import box_mask, sa1b_json

W, H = 8, 6


def image_row(image_id: str, width: int = W, height: int = H) -> dict:
    return {
        "image_id": image_id,
        "file_name": f"{image_id}.jpg",
        "width": width,
        "height": height,
        "format": "JPEG",
        "orientation": 1,
        "source": "/nowhere.tar",
        "offset": 0,
        "size": 1,
        "ann_source": None,
        "ann_offset": None,
        "ann_size": None,
    }


def run(docs: dict[str, bytes | None], sizes: dict[str, tuple[int, int]] | None = None):
    """Run the stage on images ``docs`` (image_id -> JSON bytes or None); sizes default to W×H."""
    sizes = sizes or {}
    rows = [image_row(i, *sizes.get(i, (W, H))) for i in docs]
    unit = UnitInput(
        "sa_000000/00000",
        pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA),
        annotation_loader=lambda row: docs[row["image_id"]],
    )
    stage = SA1BStage.configure()
    stage.setup()
    result = stage.process(unit)
    assert result.table.schema.equals(SA1BStage.schema)
    return result


def dumps(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def good_doc(image_num: int = 1) -> dict:
    doc = sa1b_json(image_num, W, H, [box_mask(H, W, 2, 6, 1, 4), box_mask(H, W, 0, 1, 0, 8)])
    doc["annotations"][0]["crop_box"] = [2.0, 1.0, 4.0, 5.0]
    return doc


def test_stage_contract() -> None:
    assert get_stage_class("sa1b") is SA1BStage
    assert (SA1BStage.requires, SA1BStage.level, SA1BStage.needs_annotations) == (("images",), 1, True)
    assert SA1BStage.schema.names == ["image_id", "annotations", "num_annotations", "image_width", "image_height"]


def test_good_image_gives_typed_row_with_xyxy_boxes() -> None:
    result = run({"sa_1": dumps(good_doc())})
    assert result.errors == []
    [row] = result.table.to_pylist()
    assert (row["image_id"], row["num_annotations"], row["image_width"], row["image_height"]) == ("sa_1", 2, 8, 6)
    first, second = row["annotations"]
    # Mask rows 2-5, cols 1-3: SA-1B XYWH [1, 2, 3, 4] -> xyxy [1, 2, 4, 6].
    assert first["bbox"] == [1.0, 2.0, 4.0, 6.0]
    assert second["bbox"] == [0.0, 0.0, 8.0, 1.0]
    assert first["crop_box"] == [2.0, 1.0, 6.0, 6.0]  # XYWH [2, 1, 4, 5]
    assert second["crop_box"] == [0.0, 0.0, 8.0, 6.0]
    assert (first["id"], first["area"], second["area"]) == (1000, 12.0, 8.0)
    assert first["predicted_iou"] == pytest.approx(0.9) and first["stability_score"] == pytest.approx(0.95)
    assert first["point_coords"] == [[1.0, 2.0]]
    assert first["segmentation"] == rle.encode(box_mask(H, W, 2, 6, 1, 4))
    assert np.array_equal(rle.decode(second["segmentation"]), box_mask(H, W, 0, 1, 0, 8))


def test_uncompressed_rle_is_stored_compressed() -> None:
    doc = good_doc()
    doc["annotations"][0]["segmentation"] = {"size": [H, W], "counts": [6 * 1 + 2, 4, 2, 4, 2, 4, 24]}
    [row] = run({"sa_1": dumps(doc)}).table.to_pylist()
    assert row["annotations"][0]["segmentation"] == rle.encode(box_mask(H, W, 2, 6, 1, 4))


def test_bad_rle_is_an_error_row_and_other_images_survive() -> None:
    bad = good_doc(2)
    bad["annotations"][1]["segmentation"]["counts"] = "0!!"
    result = run({"sa_1": dumps(good_doc()), "sa_2": dumps(bad), "sa_3": dumps(good_doc(3))})
    assert result.table.column("image_id").to_pylist() == ["sa_1", "sa_3"]
    [err] = result.errors
    assert (err.image_id, err.error_type) == ("sa_2", "InvalidAnnotation")
    assert "sa_2.json" in err.message and "id=2001" in err.message and "COCO alphabet" in err.message


@pytest.mark.parametrize(
    ("mutate", "error_type", "words"),
    [
        (lambda d: d["image"].update(width=10), "AnnotationSizeMismatch", ["10×6", "8×6"]),
        (
            lambda d: d["annotations"][1].update(segmentation=rle.encode(np.ones((H + 1, W), bool))),
            "AnnotationSizeMismatch",
            ["id=1001", "[7, 8]", "[6, 8]"],
        ),
        (
            lambda d: d["annotations"][0].update(segmentation=rle.encode(np.zeros((H, W), bool))),
            "InvalidAnnotation",
            ["id=1000", "zero area"],
        ),
        (lambda d: d["annotations"][1].update(bbox=[0, 0, "8", 1]), "InvalidAnnotation", ["id=1001", "bbox"]),
        (lambda d: d["annotations"][0].pop("id"), "InvalidAnnotation", ["index 0", "no 'id'"]),
        (lambda d: d["annotations"][0].pop("segmentation"), "InvalidAnnotation", ["id=1000", "segmentation"]),
        (lambda d: d.pop("image"), "MalformedAnnotationJSON", ["'image' block"]),
        (lambda d: d.update(annotations={}), "MalformedAnnotationJSON", ["'annotations'"]),
    ],
)
def test_bad_annotations_give_error_rows(mutate, error_type: str, words: list[str]) -> None:
    doc = good_doc()
    mutate(doc)
    result = run({"sa_1": dumps(doc)})
    assert result.table.num_rows == 0
    [err] = result.errors
    assert (err.image_id, err.error_type) == ("sa_1", error_type)
    for w in words:
        assert w in err.message


def test_malformed_json_is_an_error_row() -> None:
    result = run({"sa_1": b'{"image": {"width": 8,', "sa_2": b"[1, 2]", "sa_3": b"\xff\xfe"})
    assert result.table.num_rows == 0
    assert [(e.image_id, e.error_type) for e in result.errors] == [
        ("sa_1", "MalformedAnnotationJSON"),
        ("sa_2", "MalformedAnnotationJSON"),
        ("sa_3", "MalformedAnnotationJSON"),
    ]
    assert "not valid JSON" in result.errors[0].message


def test_no_json_gives_zero_annotations() -> None:
    result = run({"a": None}, sizes={"a": (5, 3)})
    assert result.errors == []
    assert result.table.to_pylist() == [
        {"image_id": "a", "annotations": [], "num_annotations": 0, "image_width": 5, "image_height": 3}
    ]


# -- the demo shard ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_shard(tmp_path_factory.mktemp("demo"))


def test_demo_shard_layout(demo_shard: Path) -> None:
    assert demo_shard.name == "sa_000000.tar"
    assert demo_shard.stat().st_size < 3_000_000
    with tarfile.open(demo_shard) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names[0] == "README.txt"
    assert names[1:] == [f"sa_{n}.{ext}" for n in range(1, 8) for ext in ("jpg", "json")] + ["sa_8.jpg"]
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(DEMO_MTIME, 0, 0, 0o644)}


def test_demo_shard_indexes_as_expected(demo_shard: Path) -> None:
    index = index_shard(demo_shard)
    assert [(m.image_id, m.error_type) for m in index.members] == [
        *((f"sa_{n}", None) for n in range(1, 8)),
        ("sa_8", "MissingAnnotation"),
    ]
    infos = {m.image_id: probe_image(read_locator(m.image)) for m in index.members[:5]}
    assert all(i.format == "JPEG" and max(i.width, i.height) <= 640 for i in infos.values())
    assert (infos["sa_1"].width, infos["sa_1"].height) == (512, 512)  # astronaut is 512×512
    with pytest.raises(ImageError, match="truncated JPEG"):
        probe_image(read_locator(index.members[5].image))  # sa_6: header fine, data cut


def test_demo_shard_through_the_stage(demo_shard: Path) -> None:
    index = index_shard(demo_shard)
    rows, anns = [], {}
    for m in index.members:
        if m.error_type is not None:
            continue
        try:
            info = probe_image(read_locator(m.image))
        except ImageError:
            continue
        row = image_row(m.image_id, info.width, info.height)
        row.update(ann_source=m.annotation.source, ann_offset=m.annotation.offset, ann_size=m.annotation.size)
        rows.append(row)
        anns[m.image_id] = read_locator(m.annotation)
    assert sorted(anns) == ["sa_1", "sa_2", "sa_3", "sa_4", "sa_5", "sa_7"]
    for raw in anns.values():
        assert "not SAM" in json.loads(raw)["mask_source"]
    result = run(anns, sizes={r["image_id"]: (r["width"], r["height"]) for r in rows})
    assert result.table.column("image_id").to_pylist() == ["sa_1", "sa_2", "sa_3", "sa_4", "sa_5"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("sa_7", "AnnotationSizeMismatch")]
    assert "id=7001" in result.errors[0].message
    for row in result.table.to_pylist():
        assert 10 <= row["num_annotations"] <= 40
        masks = [a["segmentation"] for a in row["annotations"]]
        boxes = np.array([a["bbox"] for a in row["annotations"]], dtype=np.float32)
        np.testing.assert_array_equal(boxes, rle.to_bbox_xyxy(masks))
        assert [a["area"] for a in row["annotations"]] == rle.area(masks).astype(np.float32).tolist()
