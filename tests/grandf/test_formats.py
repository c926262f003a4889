"""The export-format registry: built-ins by name, a format from another package's entry point, the CLI choices.

A plugin here is a real distribution on ``sys.path`` (a ``*.dist-info`` folder with ``entry_points.txt`` and a
module next to it), found by :mod:`importlib.metadata` exactly as an installed package is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import pytest

from grand_engine.cli.export import add_parser as add_export_parser
from grand_engine.cli.export import run as cmd_export
from grand_engine.grandf import export_formats, get_export_format
from grand_engine.grandf.exports import export, resolve_dest
from grand_engine.grandf.formats import EXPORT_FORMATS, ExportFormat
from grand_engine.registry import PluginError
from tests.grandf.level4 import H, W, images_table, level4_row, level4_table, scene_row, write_output

BUILT_INS = [
    "caption-grounding",
    "coco",
    "flickr-gcg",
    "grand",
    "grandf",
    "grandf-short",
    "openpsg-gcg",
    "ref-sav",
    "ref-sav-verified",
    "refcocog-gcg",
    "refseg",
]

PLUGIN_SOURCE = '''
from grand_engine.grandf.formats import ExportFormat
from grand_engine.grandf.writers import JsonLinesWriter


class ObjectCounts(ExportFormat):
    """One line per image: its file name and how many objects it has."""

    name = "object-counts"
    file_name = "object_counts.jsonl"

    def open(self, dest):
        return JsonLinesWriter(dest)

    def records(self, row, file_name):
        yield {"file_name": file_name, "objects": len(row["objects"])}


NOT_A_FORMAT = 42
'''


@pytest.fixture
def out(tmp_path):
    rows = [scene_row("sa_1"), level4_row("sa_2", W, H)]
    images = images_table([{"image_id": r["image_id"], "width": W, "height": H} for r in rows])
    write_output(tmp_path / "out", {"sa_000000/00000": {"images": images, "level4": level4_table(rows)}})
    return tmp_path / "out"


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Install a distribution declaring ``entries`` in ``grand_engine.exports``; undo it afterwards."""
    module = "grand_plugin_example"

    def install(entries: dict[str, str]) -> str:
        root = tmp_path / "site"
        (root / module).mkdir(parents=True)
        (root / module / "__init__.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
        dist = root / "grand_plugin_example-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: grand-plugin-example\nVersion: 0.1\n")
        lines = "".join(f"{name} = {module}:{obj}\n" for name, obj in entries.items())
        (dist / "entry_points.txt").write_text(f"[grand_engine.exports]\n{lines}")
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.setattr(EXPORT_FORMATS, "_entry_points", None)  # read the entry points again
        return module

    yield install
    for name in ("object-counts", "counts"):
        EXPORT_FORMATS.forget(name)
    sys.modules.pop(module, None)


def test_built_in_formats_by_name():
    assert sorted(export_formats()) == BUILT_INS
    for name in BUILT_INS:
        cls = get_export_format(name)
        assert issubclass(cls, ExportFormat) and cls.name == name and cls.description
    with pytest.raises(KeyError, match="unknown export format 'nope'; known: caption-grounding, coco"):
        get_export_format("nope")


def test_default_destination_names(tmp_path):
    assert resolve_dest("grandf", tmp_path) == tmp_path / "GranDf_GCG.json"
    assert resolve_dest("grandf-short", tmp_path) == tmp_path / "GranDf_GCG_short.json"
    assert resolve_dest("coco", tmp_path, "files") == tmp_path / "grand_coco.json"  # not a per-image format
    assert resolve_dest("refseg", tmp_path) == tmp_path / "grand_refseg.jsonl"
    assert resolve_dest("caption-grounding", tmp_path) == tmp_path / "grand_caption_grounding.jsonl"
    assert resolve_dest("grand", tmp_path, "files") == tmp_path  # DEST is the folder of per-image files
    assert resolve_dest("grand", tmp_path / "g.jsonl") == tmp_path / "g.jsonl"  # not a folder: as given


def test_a_format_from_another_package(plugin, out, tmp_path):
    module = plugin({"object-counts": "ObjectCounts"})
    get_export_format("coco")
    assert module not in sys.modules  # a built-in name loads no entry point
    cls = get_export_format("object-counts")
    assert cls.__module__ == module and sorted(export_formats()) == sorted([*BUILT_INS, "object-counts"])

    report = export(out, "object-counts", tmp_path / "counts.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "counts.jsonl").read_text().splitlines()]
    assert lines == [{"file_name": "sa_1.jpg", "objects": 2}, {"file_name": "sa_2.jpg", "objects": 0}]
    assert report.records == 2 and report.invalid == 0

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    dest = tmp_path / "exports"
    dest.mkdir()
    args = parser.parse_args(["export", str(out), str(dest), "--format", "object-counts", "--no-progress"])
    assert cmd_export(args) == 0
    assert len((dest / "object_counts.jsonl").read_text().splitlines()) == 2


def test_an_entry_point_that_is_not_a_format(plugin):
    plugin({"counts": "NOT_A_FORMAT"})
    with pytest.raises(PluginError, match="grand_plugin_example:NOT_A_FORMAT.*not a valid export format"):
        get_export_format("counts")


def test_an_entry_point_whose_class_has_another_name(plugin):
    plugin({"counts": "ObjectCounts"})
    with pytest.raises(PluginError, match="named 'object-counts', not 'counts'"):
        get_export_format("counts")


def test_the_parser_imports_no_format():
    code = (
        "import sys; from grand_engine.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('numpy', 'grand_engine.grandf.formats', 'pyarrow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_export_help_lists_the_registered_formats(capsys):
    parser = argparse.ArgumentParser(prog="grand-engine")
    add_export_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even at a hyphen
    assert f"oneof{','.join(BUILT_INS)}(docs/exports.md" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "o", "d", "--format", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
