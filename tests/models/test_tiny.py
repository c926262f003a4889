"""Tiny checkpoint builds: idempotent, atomic, deterministic."""

from __future__ import annotations

import hashlib
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grand_engine.models import base, tiny
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
    names = set(tiny.BUILDERS)
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


def _broken(dest: Path) -> None:
    (dest / "half.bin").write_bytes(b"x")
    raise RuntimeError("boom")


def test_force_rebuilds_and_a_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = build_one("sam-vit-tiny", tmp_path)
    assert build_one("sam-vit-tiny", tmp_path).built is False
    assert build_one("sam-vit-tiny", tmp_path, force=True).built is True
    assert (report.path / MARKER).is_file()

    monkeypatch.setitem(tiny.BUILDERS, "test-broken", _broken)
    with pytest.raises(RuntimeError, match="boom"):
        build_one("test-broken", tmp_path)
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


def test_the_tiny_package_imports_no_adapter_and_no_heavy_library() -> None:
    code = (
        "import sys, grand_engine.models.tiny; "
        "shared = {'grand_engine.models', 'grand_engine.models.base', 'grand_engine.models.imaging', "
        "'grand_engine.models.sam_arch'}; "
        "bad = [m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules]; "
        "bad += [m for m in sys.modules if m.startswith('grand_engine.models') and m not in shared "
        "and not m.startswith('grand_engine.models.tiny')]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_digest_follows_the_builder_module_and_the_project_modules_it_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the probe builder imports a real project module (imaging); its own file is the one edited
    builder_file = tmp_path / "probe_builder.py"
    builder_file.write_text("from grand_engine.models.imaging import seeded\n\ndef build(dest):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("probe_builder")
    monkeypatch.setitem(tiny.BUILDERS, "probe", module.build)
    first = tiny.builder_digest("probe")
    assert sorted(p.name for p in tiny._source_files(module)) == ["imaging.py", "probe_builder.py"]
    builder_file.write_text(builder_file.read_text() + "# a changed builder\n")
    assert tiny.builder_digest("probe") != first
    # the real builders hash the architecture / tokenizer code they share with other modules
    assert "sam_arch.py" in {p.name for p in tiny._source_files(sys.modules[tiny.BUILDERS["sam-vit-tiny"].__module__])}
    owl = sys.modules[tiny.BUILDERS["owlv2"].__module__]
    assert "tokenizers.py" in {p.name for p in tiny._source_files(owl)}


def test_random_weights_is_true_only_for_folders_built_here(tiny_dir: Path, tmp_path: Path) -> None:
    assert tiny.random_weights(tiny_dir / "dfine")
    assert tiny.random_weights(tiny_dir / "sam-vit-tiny" / "sam.pth")  # a file inside a tiny checkpoint
    copy = tmp_path / "real-looking"
    shutil.copytree(tiny_dir / "dfine", copy, ignore=shutil.ignore_patterns(MARKER))
    assert not tiny.random_weights(copy)
    assert not tiny.random_weights("PekingU/rtdetr_r50vd")  # a Hub id names no local folder
    assert not tiny.random_weights(tmp_path / "missing")


def test_every_declared_family_loads_its_adapter() -> None:
    """pyproject.toml declares each built-in family in the grand_engine.model_families entry-point group."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["entry-points"]["grand_engine.model_families"]
    assert {"clip", "depth", "detector", "llm", "owl", "sam", "spacy", "vlm"} <= set(declared)
    for family, target in declared.items():
        cls = base.adapter_class(family)
        assert cls.family == family and f"{cls.__module__}:{cls.__qualname__}" == target
    with pytest.raises(KeyError, match="unknown model family 'nope'.*depth"):
        base.adapter_class("nope")


def test_a_gpu_asked_for_without_cuda_is_a_warning_and_the_cpu(caplog, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("WARNING", logger="grand_engine.models.base"):
        assert base.select_device(0.5) == "cpu"
        assert base.select_device(0.0) == "cpu"
    assert [r.getMessage() for r in caplog.records] == [
        "a stage asked for 0.5 GPU but CUDA is not available here: its models run on the CPU"
    ]
