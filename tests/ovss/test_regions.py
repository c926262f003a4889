"""Label map → RLE regions, the `ovss` row, and the level-1 stuff merge, on hand-built 4×6 fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from grand_engine.io import rle
from grand_engine.ovss.regions import (
    OVSS_SOURCE,
    STUFF_OBJECT_FIELDS,
    StuffRegion,
    add_stuff_objects,
    ovss_row,
    regions_from_row,
    regions_from_segmentation,
)
from grand_engine.schema import OBJECT

VOCAB = ("dog", "sky", "grass", "wall")
STUFF = {"sky", "grass", "wall"}
W, H = 6, 4


def label_map() -> tuple[np.ndarray, np.ndarray]:
    """Rows 0-1 sky; rows 2-3: columns 0-1 dog, columns 2-5 grass; no wall."""
    labels = np.array([[1] * 6, [1] * 6, [0, 0, 2, 2, 2, 2], [0, 0, 2, 2, 2, 2]], dtype=np.int32)
    scores = np.where(labels == 1, 0.8, np.where(labels == 0, 0.5, 0.9)).astype(np.float32)
    scores[0, 0] = 0.4  # sky mean: (11 · 0.8 + 0.4) / 12
    return labels, scores


def regions() -> list[StuffRegion]:
    return regions_from_segmentation(*label_map(), VOCAB, STUFF)


def test_regions_from_segmentation_by_hand() -> None:
    dog, sky, grass = regions()
    labels, _ = label_map()
    assert [r.label for r in (dog, sky, grass)] == ["dog", "sky", "grass"]  # vocabulary order, wall absent
    assert [r.kind for r in (dog, sky, grass)] == ["tag", "stuff", "stuff"]
    assert [r.area for r in (dog, sky, grass)] == [4, 12, 8]
    assert dog.bbox == (0.0, 2.0, 2.0, 4.0) and sky.bbox == (0.0, 0.0, 6.0, 2.0) and grass.bbox == (2.0, 2.0, 6.0, 4.0)
    assert dog.score == pytest.approx(0.5) and grass.score == pytest.approx(0.9)
    assert sky.score == pytest.approx((11 * 0.8 + 0.4) / 12, abs=1e-6)
    for region, index in ((dog, 0), (sky, 1), (grass, 2)):
        assert region.segmentation["size"] == [H, W]
        np.testing.assert_array_equal(rle.decode(region.segmentation), labels == index)


def test_regions_min_area_fraction_and_bad_maps() -> None:
    # 5 / 24 of the image: the 4-pixel dog is dropped, sky (12) and grass (8) stay
    kept = regions_from_segmentation(*label_map(), VOCAB, STUFF, min_area_fraction=5 / 24)
    assert [r.label for r in kept] == ["sky", "grass"]
    labels, scores = label_map()
    with pytest.raises(ValueError, match="index"):
        regions_from_segmentation(labels, scores, VOCAB[:2], STUFF)
    with pytest.raises(ValueError, match="one size"):
        regions_from_segmentation(labels, scores[:2], VOCAB, STUFF)


def test_ovss_row_round_trip() -> None:
    row = ovss_row(regions())
    assert row["labels"] == ["dog", "sky", "grass"] and row["kinds"] == ["tag", "stuff", "stuff"]
    assert row["areas"] == [4, 12, 8] and row["boxes"][2] == [2.0, 2.0, 6.0, 4.0]
    assert regions_from_row(row, H, W) == regions()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"labels": ["dog", "sky"]}, "differ in length"),
        ({"kinds": ["tag", "thing", "stuff"]}, "kind 'thing'"),
        ({"labels": ["dog", " ", "grass"]}, "no label"),
        ({"scores": [0.5, float("nan"), 0.9]}, "score nan"),
    ],
)
def test_regions_from_row_rejects_malformed_rows(change: dict, message: str) -> None:
    row = {**ovss_row(regions()), **change}
    with pytest.raises(ValueError, match=message):
        regions_from_row(row, H, W, where="ovss row of 'img1'")


def test_regions_from_row_rejects_masks_of_another_size() -> None:
    with pytest.raises(ValueError, match="region 0 .*bad mask.*size"):
        regions_from_row(ovss_row(regions()), H + 1, W)


def obj(oid: int, label: str, box: list[float], **extra) -> dict:
    out = dict.fromkeys(STUFF_OBJECT_FIELDS)
    out.update(id=oid, bbox=box, labels=[label], qualifiers=[""], score=0.9, sources=["detect_lvis"], attributes=[])
    out.update(extra)
    return out


def test_stuff_object_fields_follow_the_schema() -> None:
    assert STUFF_OBJECT_FIELDS == tuple(OBJECT.field(i).name for i in range(OBJECT.num_fields))


def test_merge_adds_non_duplicate_stuff_and_renumbers_ids() -> None:
    dog = obj(0, "dog", [0, 2, 2, 4])  # 4-pixel box, no mask
    cloud = obj(1, "cloud", [0, 0, 6, 1])  # row 0: 6 pixels inside the 12-pixel sky → IoU 6 / 12 = 0.5
    objects, floating = add_stuff_objects([dog], [cloud], regions(), W, H, duplicate_iou=0.5)
    # sky duplicates the cloud (IoU 0.5 >= 0.5); grass overlaps nothing; the dog region is a tag, not stuff
    assert [o["labels"] for o in objects] == [["dog"], ["grass"]]
    assert [o["id"] for o in objects] == [0, 1] and [o["id"] for o in floating] == [2]
    grass = objects[1]
    assert set(grass) == set(STUFF_OBJECT_FIELDS)
    assert grass["bbox"] == [2.0, 2.0, 6.0, 4.0] and grass["score"] == pytest.approx(0.9)
    assert grass["sources"] == [OVSS_SOURCE] and grass["segmentation_source"] == OVSS_SOURCE
    assert grass["qualifiers"] == [""] and grass["attributes"] == [] and grass["label"] is None
    np.testing.assert_array_equal(rle.decode(grass["segmentation"]), label_map()[0] == 2)
    # the inputs are untouched
    assert cloud["id"] == 1 and dog["id"] == 0


def test_merge_iou_threshold_is_the_rule() -> None:
    dog = obj(0, "dog", [0, 2, 2, 4])
    cloud = obj(1, "cloud", [0, 0, 6, 1])
    objects, floating = add_stuff_objects([dog], [cloud], regions(), W, H, duplicate_iou=0.6)
    assert [o["labels"][0] for o in objects] == ["dog", "sky", "grass"]
    assert [o["id"] for o in objects + floating] == [0, 1, 2, 3]


def test_merge_into_floating_objects_min_score_and_kinds() -> None:
    dog = obj(0, "dog", [0.4, 1.6, 2.4, 4])  # pixel centres inside: columns 0-1, rows 2-3 = the dog region
    objects, floating = add_stuff_objects([dog], [], regions(), W, H, into="floating_objects")
    assert [o["labels"][0] for o in objects] == ["dog"]
    assert [(o["labels"][0], o["id"]) for o in floating] == [("sky", 1), ("grass", 2)]
    objects, _ = add_stuff_objects([dog], [], regions(), W, H, min_score=0.85)
    assert [o["labels"][0] for o in objects] == ["dog", "grass"]  # sky's score 0.767 < 0.85
    # tag regions are merged only when asked for, under the same rule: the dog region is the dog box (IoU 1)
    objects, _ = add_stuff_objects([dog], [], regions(), W, H, kinds=("stuff", "tag"))
    assert [o["labels"][0] for o in objects] == ["dog", "sky", "grass"]
    objects, _ = add_stuff_objects([], [], regions(), W, H, kinds=("tag",))
    assert [o["labels"][0] for o in objects] == ["dog"]
    with pytest.raises(ValueError, match="into"):
        add_stuff_objects([], [], regions(), W, H, into="stuff")


def test_merge_uses_an_objects_mask_when_it_has_one() -> None:
    # an L-shaped mask: row 2 columns 2-5 and row 3 column 2 (5 pixels); its box is the grass box
    mask = np.zeros((H, W), dtype=bool)
    mask[2, 2:6] = True
    mask[3, 2] = True
    lawn = obj(0, "lawn", [2, 2, 6, 4], segmentation=rle.encode(mask), segmentation_source="sam")
    # mask IoU with grass 5 / 8 = 0.625 (the box IoU would be 1): below 0.7 grass is added, at 0.6 it is not
    objects, _ = add_stuff_objects([lawn], [], regions(), W, H, duplicate_iou=0.7)
    assert [o["labels"][0] for o in objects] == ["lawn", "sky", "grass"]
    objects, _ = add_stuff_objects([lawn], [], regions(), W, H, duplicate_iou=0.6)
    assert [o["labels"][0] for o in objects] == ["lawn", "sky"]


def test_merge_ignores_objects_without_a_usable_box() -> None:
    broken = obj(0, "thing", None)
    objects, _ = add_stuff_objects([broken], [], regions(), W, H)
    assert [o["labels"][0] for o in objects] == ["thing", "sky", "grass"]
