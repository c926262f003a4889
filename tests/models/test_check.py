"""`models check`: every slot of a manifest resolved without loading weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from grand_engine.config import ModelSpec, PipelineManifest, StageSpec, load_manifest
from grand_engine.models.check import check_manifest, format_checks, missing


@pytest.fixture()
def empty_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An offline, empty Hugging Face cache and an empty weights directory."""
    import huggingface_hub.utils._cache_manager as cache_manager

    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("GRAND_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path


def test_grand_manifest_reports_every_missing_checkpoint(empty_hub: Path) -> None:
    manifest = load_manifest("grand")
    checks = check_manifest(manifest)
    expected_slots = [(stage, slot) for stage, spec in manifest.stages.items() if spec.enabled for slot in spec.models]
    assert [(c.stage, c.slot) for c in checks] == expected_slots
    assert len(checks) >= 20
    for c in checks:
        if c.spec.family == "spacy":
            assert c.found  # the packaged English pipeline (installed under its fallback name)
            continue
        assert not c.found, (c.stage, c.slot)
        if c.spec.family == "sam":
            assert c.result.where == str(empty_hub / "weights" / "sam_vit_h_4b8939.pth")
            assert "does not exist" in c.result.message and "segment-anything" in c.result.message
        else:
            assert c.result.where in c.result.message
            assert "HF_HUB_OFFLINE" in c.result.message and "huggingface-cli download" in c.result.message
    text = format_checks(checks)
    lines = text.splitlines()
    assert len(lines) == len(checks) + 1
    assert lines[checks.index(next(c for c in checks if c.stage == "depth"))].startswith("depth.depth")
    assert "missing" in lines[0] and "Intel/dpt-beit-large-512" in text
    assert (
        lines[-1]
        == f"{len(checks) - len(missing(checks))} of {len(checks)} checkpoints found, {len(missing(checks))} missing"
    )


def test_local_checkpoints_and_disabled_stages(tmp_path: Path) -> None:
    present = tmp_path / "tiny" / "depth-dpt-beit"
    present.mkdir(parents=True)
    manifest = PipelineManifest(
        name="t",
        stages={
            "depth": StageSpec(models={"depth": ModelSpec(id=str(present), family="depth")}),
            "masks": StageSpec(models={"sam": ModelSpec(id=str(tmp_path / "tiny" / "sam-vit-tiny"), family="sam")}),
            "tagging": StageSpec(enabled=False, models={"clip": ModelSpec(id="hf-hub:x/y", family="clip")}),
        },
    )
    checks = check_manifest(manifest)
    assert [(c.stage, c.found) for c in checks] == [("depth", True), ("masks", False)]
    assert "grand-engine models tiny" in checks[1].result.message
    text = format_checks(checks)
    assert text.splitlines()[0].split()[:2] == ["depth.depth", "found"]
    assert text.splitlines()[-1] == "1 of 2 checkpoints found, 1 missing"
    assert format_checks([]) == "no model slots in the enabled stages"
