"""Shard listing, tar/folder indexing and locator reads (grand_engine.io.sa1b)."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path

import pytest

from grand_engine.io.sa1b import (
    Locator,
    LocatorReader,
    ShardIndex,
    ShardReadError,
    index_shard,
    list_shards,
    read_locator,
)
from tests.io.shards import Link, image_bytes, listing, member_offsets, simple_shard, truncate, write_tar


def by_id(index: ShardIndex) -> dict[str, object]:
    return {m.image_id: m for m in index.members}


# -- pairing ---------------------------------------------------------------------------------------
def test_pairs_members_and_reads_exact_bytes(tmp_path: Path) -> None:
    path, payload = simple_shard(tmp_path / "sa_000123.tar", n=3)
    index = index_shard(path)
    assert (index.shard, index.kind, index.path) == ("sa_000123", "tar", str(path.resolve()))
    assert index.size == path.stat().st_size and index.mtime_ns == path.stat().st_mtime_ns
    assert [m.image_id for m in index.members] == ["sa_1", "sa_2", "sa_3"]
    for m in index.members:
        assert m.error_type is None and m.error is None
        assert m.file_name == f"{m.image_id}.jpg"
        assert read_locator(m.image) == payload[f"{m.image_id}.jpg"]
        assert read_locator(m.annotation) == payload[f"{m.image_id}.json"]
    with LocatorReader(max_open=1) as reader:
        assert [reader.read(m.image) for m in index.members] == [payload[f"sa_{i}.jpg"] for i in (1, 2, 3)]


def test_ignores_unrelated_members_and_normalises_dot_slash(tmp_path: Path) -> None:
    img, ann = image_bytes(), b'{"image": {}, "annotations": []}'
    path = write_tar(
        tmp_path / "s.tar",
        [
            ("README", b"hello"),
            ("notes.txt", b"x"),
            "./folder",
            ("./sa_5.JPG", img),
            ("./sa_5.json", ann),
            ("data.bin", b"\0" * 700),
            ("sub/dir/sa_6.png", img),
            ("other/sa_6.json", ann),
            (".hidden", b""),
            ("long" * 40 + "/sa_7.webp", img),  # a GNU long-name member
            ("long" * 40 + "/sa_7.json", ann),
        ],
    )
    index = index_shard(path)
    assert [(m.image_id, m.file_name, m.error_type) for m in index.members] == [
        ("sa_5", "sa_5.JPG", None),
        ("sa_6", "sa_6.png", None),
        ("sa_7", "sa_7.webp", None),
    ]
    assert read_locator(index.members[1].annotation) == ann
    assert read_locator(index.members[2].image) == img and read_locator(index.members[2].annotation) == ann


def test_image_without_json_and_json_without_image_are_errors(tmp_path: Path) -> None:
    img, ann = image_bytes(), b"{}"
    path = write_tar(
        tmp_path / "s.tar",
        [("sa_1.jpg", img), ("sa_1.json", ann), ("sa_2.jpg", img), ("sa_3.json", ann), ("sa_4.jpeg", img)],
    )
    index = index_shard(path)
    got = [(m.image_id, m.error_type, m.image is not None, m.annotation is not None) for m in index.members]
    assert got == [
        ("sa_1", None, True, True),
        ("sa_2", "MissingAnnotation", True, False),
        ("sa_3", "MissingImage", False, True),
        ("sa_4", "MissingAnnotation", True, False),
    ]
    assert "sa_2.jpg" in index.members[1].error and "sa_3.json" in index.members[2].error


def test_duplicate_ids_error_on_second_and_later(tmp_path: Path) -> None:
    a, b, c = image_bytes(color=(1, 2, 3)), image_bytes(color=(200, 2, 3)), image_bytes(fmt="PNG")
    path = write_tar(
        tmp_path / "s.tar",
        [("sa_1.jpg", a), ("sa_1.json", b"{}"), ("sa_1.jpg", b), ("x/sa_1.png", c), ("sa_1.json", b"[]")],
    )
    index = index_shard(path)
    assert [(m.image_id, m.file_name, m.error_type) for m in index.members] == [
        ("sa_1", "sa_1.jpg", None),
        ("sa_1", "sa_1.jpg", "DuplicateMember"),
        ("sa_1", "sa_1.png", "DuplicateMember"),
        ("sa_1", "sa_1.json", "DuplicateMember"),
    ]
    first = index.members[0]
    assert read_locator(first.image) == a and read_locator(first.annotation) == b"{}"


def test_links_are_errors_and_never_followed(tmp_path: Path) -> None:
    img = image_bytes()
    path = write_tar(
        tmp_path / "s.tar",
        [
            ("sa_1.jpg", img),
            ("sa_1.json", b"{}"),
            Link("sa_2.jpg", "/etc/passwd"),
            Link("sa_3.jpg", "sa_1.jpg", hard=True),
            Link("notes.txt", "/etc/hostname"),
        ],
    )
    index = index_shard(path)
    assert [(m.image_id, m.error_type, m.image) for m in index.members[1:]] == [
        ("sa_2", "NotARegularFile", None),
        ("sa_3", "NotARegularFile", None),
    ]
    assert "symlink" in index.members[1].error and "hard link" in index.members[2].error


def test_unsafe_names_are_errors_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    abs_name = f"/grand_engine_test_{uuid.uuid4().hex}.jpg"
    work = tmp_path / "work"
    work.mkdir()
    img = image_bytes()
    path = write_tar(
        tmp_path / "s.tar",
        [
            ("../evil.jpg", img),
            ("../evil.json", b"{}"),
            (abs_name, img),
            ("ok/../../../up.jpg", img),
            ("sa_1.jpg", img),
            ("sa_1.json", b"{}"),
        ],
    )
    monkeypatch.chdir(work)
    before, before_parent = listing(tmp_path), set(os.listdir(tmp_path.parent))
    index = index_shard(path)
    for m in index.members:
        for loc in (m.image, m.annotation):
            if loc is not None:
                read_locator(loc)
    assert listing(tmp_path) == before == {"s.tar", "work"}
    assert set(os.listdir(tmp_path.parent)) == before_parent
    assert not os.path.exists(abs_name)
    got = [(m.image_id, m.error_type, m.image) for m in index.members[:-1]]
    assert got == [
        ("../evil", "UnsafeMemberName", None),
        ("../evil", "UnsafeMemberName", None),
        (abs_name[:-4], "UnsafeMemberName", None),
        ("ok/../../../up", "UnsafeMemberName", None),
    ]
    last = index.members[-1]
    assert (last.image_id, last.error_type) == ("sa_1", None) and read_locator(last.image) == img


# -- truncated and corrupt shards --------------------------------------------------------------------
def test_cut_inside_member_data(tmp_path: Path) -> None:
    path, payload = simple_shard(tmp_path / "sa_000001.tar", n=3)
    _, data_off, size = member_offsets(path)["sa_2.jpg"]
    truncate(path, data_off + size // 2)
    index = index_shard(path)
    assert [(m.image_id, m.error_type) for m in index.members] == [("sa_1", None), ("sa_2", "TruncatedShard")]
    assert "sa_2.jpg" in index.members[1].error
    good = index.members[0]
    assert read_locator(good.image) == payload["sa_1.jpg"] and read_locator(good.annotation) == payload["sa_1.json"]
    with pytest.raises(ShardReadError, match=f"{path}.*offset {data_off}"):
        read_locator(index.members[1].image)


def test_cut_inside_a_header(tmp_path: Path) -> None:
    path, payload = simple_shard(tmp_path / "sa_000002.tar", n=3)
    header_off, _, _ = member_offsets(path)["sa_2.json"]
    truncate(path, header_off + 100)
    index = index_shard(path)
    got = [(m.image_id, m.error_type) for m in index.members]
    assert got == [("sa_1", None), ("sa_2", "MissingAnnotation"), (f"sa_000002@{header_off}", "TruncatedShard")]
    assert f"byte {header_off}" in index.members[-1].error
    assert "unreadable tail" in index.members[1].error
    assert read_locator(index.members[0].image) == payload["sa_1.jpg"]
    assert read_locator(index.members[1].image) == payload["sa_2.jpg"]


@pytest.mark.parametrize(
    ("cut", "expected", "members_read"),
    [
        # at a pair boundary: sa_3 would vanish without a word
        ("header:sa_3.jpg", [("sa_1", None), ("sa_2", None)], 4),
        # between an image and its annotation
        ("header:sa_3.json", [("sa_1", None), ("sa_2", None), ("sa_3", "MissingAnnotation")], 5),
        # right after the last member's data, before its padding: every member is whole, the end is not
        ("data_end:sa_3.json", [("sa_1", None), ("sa_2", None), ("sa_3", None)], 6),
        # after the last member's padding, where the end-of-archive marker should start
        ("padded_end:sa_3.json", [("sa_1", None), ("sa_2", None), ("sa_3", None)], 6),
    ],
)
def test_cut_at_a_member_boundary_without_end_marker(tmp_path: Path, cut: str, expected, members_read) -> None:
    path, payload = simple_shard(tmp_path / "sa_000004.tar", n=3)
    where, name = cut.split(":")
    header_off, data_off, size = member_offsets(path)[name]
    length = {"header": header_off, "data_end": data_off + size, "padded_end": data_off + 512 * -(-size // 512)}[where]
    truncate(path, length)
    index = index_shard(path)
    got = [(m.image_id, m.error_type) for m in index.members]
    assert got == [*expected, (f"sa_000004@{length}", "TruncatedShard")]
    tail = index.members[-1].error
    assert str(path) in tail and "'sa_000004'" in tail
    assert f"after {members_read} members, without the tar end-of-archive marker" in tail
    assert f"ends at byte {length}" in tail
    if expected[-1][1] == "MissingAnnotation":
        assert "end-of-archive marker" in index.members[-2].error
    for m in index.members[: len(expected)]:
        if m.error_type is None:
            assert read_locator(m.annotation) == payload[f"{m.image_id}.json"]


def test_end_marker_cut_in_half_loses_nothing(tmp_path: Path) -> None:
    # One of the two zero blocks is left: a zero block can never start a member, so the archive was complete.
    path, _ = simple_shard(tmp_path / "sa_000005.tar", n=2)
    _, data_off, size = member_offsets(path)["sa_2.json"]
    truncate(path, data_off + 512 * -(-size // 512) + 512)
    assert [(m.image_id, m.error_type) for m in index_shard(path).members] == [("sa_1", None), ("sa_2", None)]


def test_garbled_header_stops_scanning(tmp_path: Path) -> None:
    path, payload = simple_shard(tmp_path / "g.tar", n=3)
    header_off, _, _ = member_offsets(path)["sa_2.jpg"]
    with open(path, "r+b") as f:
        f.seek(header_off)
        f.write(b"\x07garbage!" * 56)
    index = index_shard(path)
    got = [(m.image_id, m.error_type) for m in index.members]
    assert got == [("sa_1", None), (f"g@{header_off}", "CorruptShard")]
    assert read_locator(index.members[0].annotation) == payload["sa_1.json"]


def test_concatenated_tars_are_read_to_the_first_end_marker(tmp_path: Path) -> None:
    first, payload = simple_shard(tmp_path / "a.tar", n=1)
    second, _ = simple_shard(tmp_path / "b.tar", n=2)
    joined = tmp_path / "joined.tar"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    index = index_shard(joined)
    assert [(m.image_id, m.error_type) for m in index.members] == [
        ("sa_1", None),
        (index.members[-1].image_id, "CorruptShard"),
    ]
    assert "concatenated" in index.members[-1].error
    assert read_locator(index.members[0].image) == payload["sa_1.jpg"]


def test_empty_tar_zero_byte_file_and_non_tar(tmp_path: Path) -> None:
    empty = write_tar(tmp_path / "empty.tar", [])
    [row] = index_shard(empty).members  # said once
    assert (row.image_id, row.error_type) == ("empty@0", "EmptyShard")
    assert str(empty) in row.error and "no members at all" in row.error
    only_readme = write_tar(tmp_path / "readme.tar", [("README.md", b"hello"), "docs/"])
    [row] = index_shard(only_readme).members
    assert (row.image_id, row.error_type) == ("readme@0", "EmptyShard")
    assert "2 members, none of them an image or an annotation" in row.error
    one_block = tmp_path / "one_block.tar"  # a single zero block: an end marker cut in half, still empty
    one_block.write_bytes(b"\0" * 512)
    assert [(m.image_id, m.error_type) for m in index_shard(one_block).members] == [("one_block@0", "EmptyShard")]
    zero = tmp_path / "zero.tar"
    zero.write_bytes(b"")
    [row] = index_shard(zero).members  # empty and without an end marker: said once, not twice
    assert (row.image_id, row.error_type) == ("zero@0", "UnreadableShard") and "empty file (0 bytes)" in row.error
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file at all" * 40)
    assert [m.error_type for m in index_shard(junk).members] == ["UnreadableShard"]
    gz = tmp_path / "gz.tar"
    gz.write_bytes(gzip.compress(empty.read_bytes()))
    [err] = index_shard(gz).members
    assert err.error_type == "UnreadableShard" and "gzip" in err.error


def test_read_locator_short_read_names_source_and_offset(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"0123456789")
    assert read_locator(Locator(str(f), 3, 4)) == b"3456"
    with pytest.raises(ShardReadError, match=r"x\.bin at offset 8"):
        read_locator(Locator(str(f), 8, 4))


def test_index_json_round_trip(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "s.tar", [("sa_1.jpg", image_bytes()), ("sa_1.json", b"{}"), ("sa_2.jpg", b"x")])
    index = index_shard(path)
    again = ShardIndex.from_json(json.loads(json.dumps(index.to_json())))
    assert again == index
    older = index.to_json()
    del older["format"]  # written before the end-of-archive rules: not trusted
    with pytest.raises(ValueError, match="index the shard again"):
        ShardIndex.from_json(older)
    assert [m.image_id for m in again.good] == ["sa_1"] and [m.image_id for m in again.errors] == ["sa_2"]


# -- folders -----------------------------------------------------------------------------------------
def test_folder_shard_with_and_without_json(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "b.png").write_bytes(image_bytes(fmt="PNG"))
    (folder / "a.jpg").write_bytes(image_bytes())
    (folder / "a.json").write_bytes(b'{"annotations": []}')
    (folder / "stray.json").write_bytes(b"{}")
    (folder / "notes.txt").write_bytes(b"x")
    (folder / "b.webp").write_bytes(image_bytes(fmt="WEBP"))
    (folder / "nested").mkdir()
    (folder / "nested" / "c.jpg").write_bytes(image_bytes())
    index = index_shard(folder)
    assert (index.shard, index.kind) == ("photos", "folder")
    got = [(m.image_id, m.file_name, m.error_type, m.annotation is not None) for m in index.members]
    assert got == [("a", "a.jpg", None, True), ("b", "b.png", None, False), ("b", "b.webp", "DuplicateMember", False)]
    a = index.members[0]
    assert a.image == Locator(str(folder / "a.jpg"), 0, (folder / "a.jpg").stat().st_size)
    assert read_locator(a.annotation) == b'{"annotations": []}'
    sizes = sum((folder / n).stat().st_size for n in ("a.jpg", "a.json", "b.png", "b.webp", "stray.json"))
    assert index.size == sizes


# -- listing -----------------------------------------------------------------------------------------
def test_list_shards_files_folders_globs(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    t2 = write_tar(shards / "sa_000002.tar", [])
    t1 = write_tar(shards / "sa_000001.tar", [])
    (shards / "README.md").write_text("x")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "x.jpg").write_bytes(image_bytes())
    other = write_tar(tmp_path / "extra.tar", [])

    assert list_shards([shards]) == [t1.resolve(), t2.resolve()]
    assert list_shards([str(t2)]) == [t2.resolve()]
    assert list_shards([imgs]) == [imgs.resolve()]
    assert list_shards([str(shards / "*.tar"), t1, str(shards / "sa_00000?.tar")]) == [t1.resolve(), t2.resolve()]
    assert list_shards([str(tmp_path / "*")]) == sorted(
        [imgs.resolve(), other.resolve(), t1.resolve(), t2.resolve()], key=str
    )


def test_list_shards_errors_name_the_spec(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.tar"):
        list_shards([tmp_path / "nope.tar"])
    with pytest.raises(FileNotFoundError, match=r"\*\.tar"):
        list_shards([str(tmp_path / "*.tar")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        list_shards([empty])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="a.txt"):
        list_shards([tmp_path / "a.txt"])
