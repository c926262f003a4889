"""The plugin API: the worked example of docs/plugins.md, installed as a package and run, and a broken plugin.

The plugin's code, entry points and manifest are read from the code blocks of docs/plugins.md, so the page cannot
drift from what works. The package is "installed" the way pip leaves it on disk: the module plus a ``.dist-info``
folder with ``METADATA`` and ``entry_points.txt``, on the ``PYTHONPATH`` of a fresh ``grand-engine`` process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tomllib
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "plugins.md"
COLORS = {"black": [0, 0, 0], "white": [255, 255, 255], "red": [200, 30, 30]}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def _install(site: Path, dist: str, module: str, source: str, entry_points: dict[str, dict[str, str]]) -> None:
    """Write ``module`` and a ``<dist>-0.1.0.dist-info`` folder declaring ``entry_points`` into ``site``."""
    package = site / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = []
    for group, items in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in items.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def _cli(cwd: Path, site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "grand_engine.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    project = tomllib.loads(next(b for b in _blocks("toml") if "[project]" in b))
    source = next(b for b in _blocks("python") if "class Brightness(Stage)" in b)
    site = tmp_path / "site"
    _install(site, project["project"]["name"], "grand_brightness", source, project["project"]["entry-points"])
    return site


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, rgb, size in (
        ("bright", (250, 250, 250), (40, 30)),
        ("night", (5, 5, 10), (31, 17)),
        ("red", (210, 25, 35), (20, 20)),
    ):
        Image.new("RGB", size, rgb).save(folder / f"{name}.png")
    return folder


def test_the_documented_plugin_runs_and_exports(tmp_path, plugin_site, photos):
    (tmp_path / "bright.yaml").write_text(next(b for b in _blocks("yaml") if "brightness:" in b))
    (tmp_path / "colors.json").write_text(json.dumps(COLORS))

    done = _cli(tmp_path, plugin_site, "run", "--shards", "photos", "--out", "out", "--manifest", "bright.yaml",
                "--backend", "inline", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "out" / "brightness" / "photos" / "00000.parquet").to_pylist()
    by_id = {r["image_id"]: r for r in table}
    assert sorted(by_id) == ["bright", "night", "red"]
    assert by_id["bright"]["luma"] == pytest.approx(250.0, abs=0.01) and by_id["bright"]["dark"] is False
    assert by_id["night"]["luma"] == pytest.approx(0.299 * 5 + 0.587 * 5 + 0.114 * 10, abs=0.01)
    assert by_id["night"]["dark"] is True
    assert [by_id[i]["color"] for i in ("bright", "night", "red")] == ["white", "black", "red"]

    exported = _cli(tmp_path, plugin_site, "export", "out", "b.jsonl", "--format", "brightness-jsonl", "--no-progress")
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert sorted((r["file_name"], r["dark"], r["color"]) for r in lines) == [
        ("bright.png", False, "white"),
        ("night.png", True, "black"),
        ("red.png", False, "red"),
    ]

    # The model file is part of the fingerprint: a changed colour table reruns the stage, nothing else.
    (tmp_path / "colors.json").write_text(json.dumps({**COLORS, "grey": [128, 128, 128]}))
    again = _cli(tmp_path, plugin_site, "run", "--shards", "photos", "--out", "out", "--manifest", "bright.yaml",
                 "--backend", "inline", "--no-progress")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "1 (stage, unit) tasks to run" in again.stdout


def test_a_missing_plugin_model_stops_the_run_before_any_work(tmp_path, plugin_site, photos):
    (tmp_path / "bright.yaml").write_text(next(b for b in _blocks("yaml") if "brightness:" in b))
    done = _cli(tmp_path, plugin_site, "run", "--shards", "photos", "--out", "out", "--manifest", "bright.yaml",
                "--backend", "inline", "--no-progress")  # fmt: skip
    assert done.returncode == 2
    assert "brightness.colors" in done.stderr and "colors.json" in done.stderr
    assert not (tmp_path / "out" / "_manifests").exists()


def test_a_plugin_that_fails_to_import_is_named(tmp_path, photos):
    site = tmp_path / "site"
    _install(site, "broken-plugin", "broken_plugin", "raise ImportError('needs libfoo')\n",
             {"grand_engine.stages": {"broken": "broken_plugin:Broken"}})  # fmt: skip
    (tmp_path / "m.yaml").write_text("name: m\nstages:\n  images: {}\n  broken: {}\n")
    done = _cli(tmp_path, site, "run", "--shards", "photos", "--out", "out", "--manifest", "m.yaml",
                "--backend", "inline", "--no-progress")  # fmt: skip
    assert done.returncode == 2
    assert "stage 'broken' is declared by the package 'broken-plugin'" in done.stderr
    assert "ImportError: needs libfoo" in done.stderr


def test_the_documented_unit_test_of_a_plugin_stage(plugin_site):
    """The "Testing a plugin" snippet, run in this process with the plugin's classes."""
    import importlib.util

    from grand_engine.models.base import MODEL_FAMILIES
    from grand_engine.runtime.stage import STAGES

    spec = importlib.util.spec_from_file_location(
        "grand_brightness_doc", plugin_site / "grand_brightness" / "__init__.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    try:
        spec.loader.exec_module(module)
        colors = module.ColorNames.__new__(module.ColorNames)
        colors.names, colors.centroids = list(COLORS), np.array(list(COLORS.values()), dtype=np.float32)
        snippet = next(b for b in _blocks("python") if "run_stage(" in b)
        namespace = {"np": np, "Brightness": module.Brightness, "my_loaded_colors": colors}
        exec(snippet, namespace)  # noqa: S102 - the documented snippet is the test
        assert namespace["result"].table.column("color").to_pylist() == ["white", "black"]
    finally:
        STAGES.forget("brightness")
        MODEL_FAMILIES.forget("color-names")
        sys.modules.pop(spec.name, None)
