"""``models smoke``: roles, known answers, random-weight reporting and the command."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec, PipelineManifest, StageSpec, load_manifest
from grand_engine.models import smoke
from grand_engine.models.tiny import MARKER


@pytest.fixture(scope="module")
def photos() -> list[smoke.Photo]:
    return smoke.bundled_photos()


def test_bundled_photos_and_their_answers(photos: list[smoke.Photo]) -> None:
    assert [p.name for p in photos] == ["astronaut", "cat", "coffee", "rocket", "motorcycle"]
    assert [p.label for p in photos] == ["person", "cat", "cup", "rocket", "motorcycle"]
    assert [p.coco for p in photos] == ["person", "cat", "cup", None, "motorcycle"]  # COCO-80 has no rocket
    assert [p.name for p in photos if p.ground_plane] == ["rocket", "motorcycle"]
    assert all(p.pixels.dtype == np.uint8 and p.pixels.ndim == 3 and p.pixels.shape[2] == 3 for p in photos)


def test_roles_load_each_distinct_model_once(tiny_dir: Path) -> None:
    manifest = load_manifest("tiny", variables={"tiny_dir": str(tiny_dir)})
    found = smoke.roles(manifest)
    specs = [(s, spec) for s, st in manifest.stages.items() if st.enabled for spec in st.models.values()]
    assert len(found) == len({smoke._spec_key(spec) for _, spec in specs}) < len(specs)
    florence = next(r for r in found if r.spec.id.endswith("florence2"))
    assert florence.slots == ["region_captions.vlm", "region_attributes.vlm"]
    assert florence.batch_size == 8
    only = smoke.roles(manifest, only=["depth", "ground_phrases.spacy"])
    assert [r.slots for r in only] == [["depth.depth"], ["ground_phrases.spacy"]]


def test_random_weights_are_never_passed_and_real_models_are_checked(tiny_dir: Path, photos) -> None:
    manifest = load_manifest("tiny", variables={"tiny_dir": str(tiny_dir)})
    results = smoke.run_smoke(
        manifest, only=["depth", "detect_closed", "ground_phrases.spacy", "caption_vlm"], photos=photos
    )
    by_role = {r.role: r for r in results}
    assert set(by_role) == {
        "depth.depth",
        "detect_closed.detector",
        "ground_phrases.spacy",
        "caption_vlm.vlm",
    }
    for role in ("depth.depth", "detect_closed.detector", "caption_vlm.vlm"):
        r = by_role[role]
        assert r.status == smoke.RANDOM, (role, r.reason)
        assert r.reason.startswith("ran; seen: ") and r.load_s > 0 and r.items_per_s > 0
        assert r.peak_gpu_bytes is None  # no GPU here
    assert by_role["ground_phrases.spacy"].status == smoke.PASS  # the real packaged English pipeline
    assert "['A man', 'a brown horse']" in by_role["ground_phrases.spacy"].reason
    text = smoke.format_smoke(results)
    lines = text.splitlines()
    assert sum(smoke.RANDOM in line for line in lines[:-1]) == 3 and sum(" pass " in line for line in lines) == 1
    assert lines[-1] == f"1 pass, 3 {smoke.RANDOM} (4 models)"
    assert not smoke.smoke_failed(results)


def test_a_checkpoint_without_the_marker_is_judged(tiny_dir: Path, tmp_path: Path, photos) -> None:
    """The same random weights without the tiny marker look like a real checkpoint: the answers are checked, and a
    random D-FINE finds none of the photos' COCO objects at score 0.3."""
    copy = tmp_path / "dfine-unmarked"
    shutil.copytree(tiny_dir / "dfine", copy, ignore=shutil.ignore_patterns(MARKER))
    manifest = PipelineManifest(
        name="t",
        stages={
            "detect_closed": StageSpec(models={"detector": ModelSpec(id=str(copy), family="detector")}),
            "depth": StageSpec(models={"depth": ModelSpec(id=str(tmp_path / "missing"), family="depth")}),
        },
    )
    detector, depth = smoke.run_smoke(manifest, photos=photos)
    assert detector.status == smoke.FAIL
    assert "person among" in detector.reason and "(wrong)" in detector.reason
    assert depth.status == smoke.ERROR and depth.reason.startswith("load failed: ModelNotFoundError")
    assert smoke.smoke_failed([detector, depth])


def test_disc_probe_is_a_known_answer() -> None:
    image, disc, box = smoke.disc_image(128)
    assert image.shape == (128, 128, 3) and disc.sum() > 0
    ys, xs = np.nonzero(disc)
    assert box[0] < xs.min() and box[2] > xs.max() and box[1] < ys.min() and box[3] > ys.max()


def test_smoke_command(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from grand_engine.cli import main

    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(tmp_path / "mine.png")
    (tmp_path / "notes.txt").write_text("not an image")
    code = main(
        [
            "models",
            "smoke",
            "--manifest",
            "tiny",
            "--var",
            f"tiny_dir={tiny_dir}",
            "--only",
            "depth",
            "--images",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("depth.depth") and smoke.RANDOM in out
    assert out.splitlines()[-1] == f"1 {smoke.RANDOM} (1 models)"
