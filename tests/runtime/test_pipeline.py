"""Pipeline resolution: selection, ordering, fingerprints."""

from __future__ import annotations

import pytest

from grand_engine.config import ConfigError, load_manifest
from grand_engine.runtime.pipeline import build_pipeline, parse_levels
from grand_engine.runtime.stage import topological_order


def test_changing_a_parameter_changes_that_stage_and_descendants_only(test_manifest):
    path, _ = test_manifest()
    base = build_pipeline(load_manifest(path)).fingerprints
    changed = build_pipeline(load_manifest(path, overrides=["t_double.fail_unit=x"])).fingerprints
    assert base["images"] == changed["images"]
    assert base["t_area"] == changed["t_area"]
    assert base["t_double"] != changed["t_double"]
    assert base["t_pixels"] != changed["t_pixels"]


def test_fingerprints_are_deterministic(test_manifest):
    path, _ = test_manifest()
    assert build_pipeline(load_manifest(path)).fingerprints == build_pipeline(load_manifest(path)).fingerprints


def test_levels_select_stages_and_their_ancestors(test_manifest):
    path, _ = test_manifest()
    manifest = load_manifest(path)
    assert build_pipeline(manifest, levels=[2]).order == ["images", "t_area", "t_double"]
    assert build_pipeline(manifest, levels=[1]).order == ["images", "t_area"]
    assert build_pipeline(manifest, stages=["t_pixels"]).order == ["images", "t_area", "t_double", "t_pixels"]
    assert build_pipeline(manifest).descendants("t_area") == ["t_area", "t_double", "t_pixels"]


def test_parse_levels():
    assert parse_levels("1-4") == [1, 2, 3, 4]
    assert parse_levels("2") == [2]
    assert parse_levels("1,3") == [1, 3]
    for bad in ("0-2", "5", "x", "3-1"):
        with pytest.raises(ConfigError):
            parse_levels(bad)


def test_topological_order_rejects_cycles_and_unknown_names():
    assert topological_order({"a": [], "b": ["a"], "c": ["b", "a"]}) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="cycle: a -> b -> a|cycle: b -> a -> b"):
        topological_order({"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="'x', which is not in the pipeline"):
        topological_order({"a": ["x"]})


def test_manifest_missing_a_required_stage_is_rejected(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: broken\nstages:\n  images: {}\n  t_double: {}\n")
    with pytest.raises(ConfigError, match="'t_double' requires 't_area', which manifest 'broken' does not enable"):
        build_pipeline(load_manifest(path))


def test_unknown_stage_and_parameter_are_named(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nstages:\n  images: {}\n  nope: {}\n")
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        build_pipeline(load_manifest(path))
    path.write_text("name: m\nstages:\n  images: {}\n  t_area: {params: {bogus: 1}}\n")
    with pytest.raises(ConfigError, match="stage 't_area' has no parameter 'bogus'"):
        build_pipeline(load_manifest(path))


def test_editing_a_prompt_file_changes_the_fingerprint(tmp_path, monkeypatch):
    from dataclasses import dataclass

    import grand_engine.resources as resources
    import grand_engine.runtime.pipeline as pipeline_mod
    import grand_engine.runtime.stage as stage_mod
    from grand_engine.runtime.pipeline import compute_fingerprints
    from grand_engine.runtime.stage import Stage
    from grand_engine.schema import table_schema

    @dataclass
    class PromptedStage(Stage):
        schema = table_schema()
        prompt: str = "question.txt"
        other: str = "not-a-file.txt"

    monkeypatch.setattr(resources, "resource_dir", lambda kind: tmp_path)
    monkeypatch.setattr(pipeline_mod, "resource_dir", lambda kind: tmp_path)
    monkeypatch.setattr(stage_mod, "resource_dir", lambda kind: tmp_path)
    (tmp_path / "question.txt").write_text("What is in the image?")
    stage = PromptedStage.configure()
    assert stage.prompt_files() == ["question.txt"]
    before = compute_fingerprints({"q": stage})["q"]
    (tmp_path / "question.txt").write_text("Describe the image.")
    assert compute_fingerprints({"q": stage})["q"] != before


def test_the_prompts_every_stage_reads_are_part_of_its_fingerprint():
    from grand_engine.resources import resource_dir
    from grand_engine.runtime.stage import registered_stages

    folder = resource_dir("prompts")
    reading = {}
    for name, cls in registered_stages().items():
        if cls.__module__.startswith("tests."):
            continue
        files = cls.configure().prompt_files()
        assert all((folder / f).is_file() for f in files), (name, files)
        reading[name] = files
    # the LLM and VLM stages whose prompts are files
    for name in ("landmark", "caption_vlm", "dense_caption", "verify", "extra_context"):
        assert reading[name], name
    assert "verify_feedback.txt" in reading["verify"] and "level3_dense_caption.txt" in reading["verify"]
