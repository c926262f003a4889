"""``ovss``: parameters, the stage on the tiny CLIP + DINO checkpoints, the packaged manifests' entries, and the
level-1 merge of its rows (what ``level1`` does with them) keeping every level-1 invariant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec, load_manifest
from grand_engine.io import rle
from grand_engine.ovss import CassConfig, CassSegmenter, add_stuff_objects, regions_from_row
from grand_engine.ovss.regions import STUFF_OBJECT_FIELDS
from grand_engine.runtime.stage import UnitInput
from grand_engine.stages.level1 import affordances_for
from grand_engine.stages.ovss import OVSS_SCHEMA, OvssStage
from grand_engine.testing import make_unit, run_stage
from grand_engine.validate import validate_annotation

STUFF = ["sky-other", "grass", "road"]


def make_ovss_unit(images: dict[str, np.ndarray | None], tags: dict[str, list[str] | None]) -> UnitInput:
    """A unit with the images (``None``: an image that fails to decode) and their ``tagging`` rows."""
    rows = [{"image_id": i, "tags": tags.get(i), "scores": [0.5] * len(tags.get(i) or [])} for i in images]
    return make_unit(images, inputs={"tagging": rows})


@pytest.fixture(scope="module")
def models(tiny_dir: Path) -> dict[str, ModelSpec]:
    return {
        "clip": ModelSpec(id=f"local-dir:{tiny_dir / 'clip-vit-b16'}", family="clip"),
        "vfm": ModelSpec(id=str(tiny_dir / "dino-vit"), family="dino"),
    }


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "a": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (60, 29, 3), dtype=np.uint8),
    }


def test_parameters() -> None:
    stage = OvssStage.configure({"stuff": STUFF, "use_tags": False})
    assert stage.stuff_names == ("sky", "grass", "road") and stage.inputs() == ("images",)
    assert OvssStage.configure({}).inputs() == ("images", "tagging")
    assert len(OvssStage.configure({}).stuff_names) == 91  # COCO-Stuff's stuff classes by default
    assert OvssStage.configure({"cass": {"energy": 0.5, "templates": ["a {}."]}}).config == CassConfig(
        energy=0.5, templates=("a {}.",)
    )
    with pytest.raises(ValueError, match="min_area_fraction"):
        OvssStage.configure({"min_area_fraction": 2.0})
    with pytest.raises(ValueError, match="stuff must be"):
        OvssStage.configure({"stuff": 5})
    with pytest.raises(ValueError, match="bad `cass` parameters"):
        OvssStage.configure({"cass": {"eigen": 1}})
    with pytest.raises(ValueError, match="energy"):
        OvssStage.configure({"cass": {"energy": 0.0}})
    with pytest.raises(ValueError, match="vocabulary would be empty"):
        OvssStage.configure({"stuff": [], "use_tags": False})
    with pytest.raises(FileNotFoundError, match="no_such_list.txt"):
        OvssStage.configure({"stuff": "no_such_list.txt"})


def test_stage_on_tiny_backbones(models, images) -> None:
    stage = OvssStage.configure(
        {"stuff": STUFF, "min_area_fraction": 0.0, "cass": {"short_side": 224}}, models=models, resources={"gpus": 0}
    )
    result = run_stage(stage, make_ovss_unit(images, {"a": ["dog", "sky"], "b": None}))
    assert isinstance(stage.segmenter, CassSegmenter)
    assert result.errors == []
    assert result.table.schema.equals(OVSS_SCHEMA, check_metadata=True)
    rows = {r["image_id"]: r for r in result.table.to_pylist()}
    vocab = {"a": ["dog", "sky", "grass", "road"], "b": ["sky", "grass", "road"]}
    for image_id, image in images.items():
        row = rows[image_id]
        height, width = image.shape[:2]
        # the label map is a partition: regions in vocabulary order, areas add up to the image
        assert row["labels"] == [c for c in vocab[image_id] if c in row["labels"]] and row["labels"]
        assert sum(row["areas"]) == height * width
        assert row["kinds"] == ["tag" if label == "dog" else "stuff" for label in row["labels"]]
        assert all(0.0 < s <= 1.0 for s in row["scores"])
        union = np.zeros((height, width), dtype=np.int64)
        for mask, box, area in zip(row["masks"], row["boxes"], row["areas"], strict=True):
            assert mask["size"] == [height, width] and int(rle.area(mask)[0]) == area
            np.testing.assert_allclose(box, rle.to_bbox_xyxy(mask)[0])
            union += rle.decode(mask)
        assert (union == 1).all()
        assert [r.label for r in regions_from_row(row, height, width)] == row["labels"]


def test_a_bad_image_is_an_error_row_and_the_rest_completes(models, images, tiny_dir: Path) -> None:
    from grand_engine.models.base import load_adapter

    segmenter = CassSegmenter(load_adapter(models["clip"]), load_adapter(models["vfm"]), CassConfig(short_side=224))
    stage = OvssStage.configure({"stuff": STUFF}, models=models, segmenter=segmenter)
    result = run_stage(stage, make_ovss_unit({"a": images["a"], "b": None}, {"a": ["dog"], "b": []}))
    assert stage.segmenter is segmenter
    assert [r["image_id"] for r in result.table.to_pylist()] == ["a"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("b", "OSError")]
    assert "cannot decode b.jpg" in result.errors[0].message and "vfm=" in result.errors[0].message


@pytest.mark.parametrize("name", ["grand", "tiny"])
def test_packaged_manifests_carry_a_disabled_ovss_entry_that_configures(name: str) -> None:
    spec = load_manifest(name, variables={"tiny_dir": "/tiny"}).stages["ovss"]
    assert spec.enabled is False
    stage = OvssStage.configure(dict(spec.params), dict(spec.models), spec.resources.overrides())
    assert set(stage.models) == {"clip", "vfm"}
    assert stage.models["vfm"].family == "dino"


def test_merged_level1_row_keeps_the_level1_invariants() -> None:
    """What ``level1`` does with an ``ovss`` row: stuff regions that duplicate no object become objects, ids are
    renumbered, affordances are computed after the merge, and the row is a valid level-1 annotation."""
    height, width = 4, 6
    labels = np.array([[1] * 6, [1] * 6, [0, 0, 2, 2, 2, 2], [0, 0, 2, 2, 2, 2]])
    masks = [rle.encode(labels == k) for k in range(3)]
    ovss = {
        "labels": ["dog", "sky", "grass"],
        "kinds": ["tag", "stuff", "stuff"],
        "scores": [0.5, 0.8, 0.9],
        "areas": [4, 12, 8],
        "boxes": [[0, 2, 2, 4], [0, 0, 6, 2], [2, 2, 6, 4]],
        "masks": masks,
    }

    def obj(oid: int, label: str, box: list[float]) -> dict:
        out = dict.fromkeys(STUFF_OBJECT_FIELDS)
        out.update(
            id=oid, bbox=box, labels=[label], qualifiers=[""], score=0.7, sources=["detect_lvis"], attributes=[]
        )
        return out

    dog, bench = obj(0, "dog", [0, 2, 2, 4]), obj(1, "bench", [0, 0, 6, 2])  # the bench box is the sky region
    objects, floating = add_stuff_objects(
        [dog], [bench], regions_from_row(ovss, height, width), width, height, duplicate_iou=0.5
    )
    row = {
        "image_id": "img",
        "width": width,
        "height": height,
        "objects": objects,
        "floating_objects": floating,
        "floating_attributes": [],
        "landmark": None,
        "affordances": affordances_for([*objects, *floating]),
    }
    assert [(o["id"], o["labels"][0]) for o in objects + floating] == [(0, "dog"), (1, "grass"), (2, "bench")]
    assert validate_annotation(row, 1) == []
    # the bench (now id 2) is still in its affordance category
    assert any(2 in a["object_ids"] and "bench" in a["labels"] for a in row["affordances"])
