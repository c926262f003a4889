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
    found = len(checks) - len(missing(checks))
    assert lines[-1].startswith(f"{found} of {len(checks)} checkpoints found (")
    assert lines[-1].endswith(f"), {len(missing(checks))} missing")


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
    assert text.splitlines()[-1] == "1 of 2 checkpoints found (0 B), 1 missing"
    assert format_checks([]) == "no model slots in the enabled stages"


def _card(license_lines: str) -> str:
    return f"---\n{license_lines}\ntags: [vision]\n---\n# A model\n\nlicense: not-this-one\n"


def test_found_checkpoints_report_size_and_card_license(tmp_path: Path, empty_hub: Path) -> None:
    local = tmp_path / "local-model"
    local.mkdir()
    (local / "model.safetensors").write_bytes(b"x" * 1500)
    (local / "README.md").write_text(_card("license: cc-by-nc-4.0"))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "weights.pth").write_bytes(b"y" * 10)
    # a Hugging Face cache entry: a snapshot whose files link to blobs
    repo = empty_hub / "hf" / "hub" / "models--org--cached"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name, data in {
        "config.json": b"{}" * 50,
        "README.md": _card("license: other\nlicense_name: sam-license").encode(),
    }.items():
        blob = repo / "blobs" / f"blob-{name}"
        blob.write_bytes(data)
        (snapshot / name).symlink_to(blob)
    manifest = PipelineManifest(
        name="t",
        stages={
            "a": StageSpec(models={"m": ModelSpec(id=str(local), family="depth")}),
            "b": StageSpec(models={"m": ModelSpec(id=str(bare / "weights.pth"), family="sam")}),
            "c": StageSpec(models={"m": ModelSpec(id="org/cached", family="vlm")}),
            "d": StageSpec(models={"m": ModelSpec(id="en_core_web_sm", family="spacy")}),
        },
    )
    checks = check_manifest(manifest)
    assert all(c.found for c in checks)
    a, b, c, d = (x.result for x in checks)
    card_bytes = len(_card("license: cc-by-nc-4.0").encode())
    assert (a.bytes, a.license) == (1500 + card_bytes, "cc-by-nc-4.0")  # the front matter, not the body
    assert (b.bytes, b.license) == (10, None)
    hub_card = _card("license: other\nlicense_name: sam-license").encode()
    assert (c.bytes, c.license) == (100 + len(hub_card), "other (sam-license)")
    assert d.bytes > 1_000_000 and d.license == "MIT"  # the installed spaCy package's metadata
    lines = format_checks(checks).splitlines()
    assert lines[0].split()[:5] == ["a.m", "found", "depth", f"{(1500 + card_bytes) / 1e3:.2f}", "kB"]
    assert "cc-by-nc-4.0" in lines[0]
    assert "no license stated" in lines[1] and "other (sam-license)" in lines[2]
