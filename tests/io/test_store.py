"""The output store: atomic writes, listing, orphan removal, unwritable roots."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from grand_engine.io.store import TMP_MARKER, OutputStore, StoreError


def test_write_and_read_back(tmp_path):
    store = OutputStore(tmp_path / "out")
    store.write_text("a/b/c.json", '{"x": 1}')
    assert store.read_text("a/b/c.json") == '{"x": 1}'
    table = pa.table({"image_id": ["a", "b"], "v": [1, 2]})
    size = store.write_table("t/u.parquet", table)
    assert size == os.path.getsize(tmp_path / "out" / "t" / "u.parquet")
    assert store.read_table("t/u.parquet").equals(table)
    assert list(store.list_files("a", ".json")) == ["a/b/c.json"]
    assert store.delete("a/b/c.json") and not store.delete("a/b/c.json")


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    store = OutputStore(tmp_path)
    store.write_text("f.txt", "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match="cannot write .*f.txt: No space left on device"):
        store.write_text("f.txt", "new")
    monkeypatch.undo()
    assert store.read_text("f.txt") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_remove_orphans(tmp_path):
    store = OutputStore(tmp_path)
    store.write_text("x/keep.json", "{}")
    (tmp_path / "x" / f"keep.json{TMP_MARKER}123").write_text("partial")
    assert store.remove_orphans() == 1
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["keep.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_root_names_the_path(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(StoreError, match=str(ro)):
        OutputStore(ro / "out").check_writable()


def test_file_in_place_of_root_names_the_path(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="blocker"):
        OutputStore(blocker / "out").check_writable()
