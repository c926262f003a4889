"""Tiny checkpoint builds: idempotent, atomic, deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from grand_engine.models import base
from grand_engine.models.tiny import MARKER, build_all, build_one, default_tiny_dir, format_reports

VISION_CHECKPOINTS = {
    "depth-dpt-beit",
    "depth-anything-v2",
    "owlvit",
    "owlv2",
    "grounding-dino",
    "dfine",
    "rtdetr",
    "rtdetr-v2",
    "clip-vit",
    "clip-eva02",
    "sam-vit-tiny",
}


def _digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_every_builder_is_complete_and_second_build_builds_nothing(tiny_dir: Path) -> None:
    names = set(base.tiny_builders())
    assert VISION_CHECKPOINTS <= names
    for name in names:
        assert (tiny_dir / name / MARKER).is_file(), name
    reports = build_all(tiny_dir)
    assert {r.name for r in reports} == names
    assert all(not r.built for r in reports)
    assert all(r.seconds == 0.0 and r.bytes > 0 and r.path == tiny_dir / r.name for r in reports)
    # nothing but the checkpoints (no leftover temporary directories)
    assert {p.name for p in tiny_dir.iterdir()} == names
    text = format_reports(reports)
    assert text.count("\n") == len(reports) and "kept" in text


def test_builds_are_deterministic(tmp_path: Path) -> None:
    for name in ("sam-vit-tiny", "owlvit", "dfine"):
        first = build_one(name, tmp_path / "a")
        second = build_one(name, tmp_path / "b")
        assert first.built and second.built
        a, b = _digest(first.path), _digest(second.path)
        a.pop(MARKER)
        b.pop(MARKER)
        assert a == b, name


def test_force_rebuilds_and_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    report = build_one("sam-vit-tiny", tmp_path)
    assert build_one("sam-vit-tiny", tmp_path).built is False
    assert build_one("sam-vit-tiny", tmp_path, force=True).built is True
    assert (report.path / MARKER).is_file()

    @base.tiny_builder("test-broken")
    def broken(dest: Path) -> None:
        (dest / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")

    try:
        with pytest.raises(RuntimeError, match="boom"):
            build_one("test-broken", tmp_path)
    finally:
        base._TINY_BUILDERS.pop("test-broken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sam-vit-tiny"]


def test_unknown_name_and_default_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no tiny checkpoint named 'nope'.*sam-vit-tiny"):
        build_all(tmp_path, ["nope"])
    monkeypatch.setenv("GRAND_TINY_DIR", str(tmp_path / "x"))
    assert default_tiny_dir() == tmp_path / "x"
    monkeypatch.delenv("GRAND_TINY_DIR")
    assert default_tiny_dir() == Path.home() / ".cache" / "grand-engine" / "tiny"


def test_a_checkpoint_from_other_builder_code_is_rebuilt(tmp_path):
    import json

    first = build_one("llama", tmp_path)
    assert first.built
    assert not build_one("llama", tmp_path).built  # same code: kept
    marker = tmp_path / "llama" / MARKER
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "builder": "older-code"}))
    assert build_one("llama", tmp_path).built  # different code: rebuilt
