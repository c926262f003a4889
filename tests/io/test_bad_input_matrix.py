"""Bad input, end to end: every hostile or broken shard entry becomes one error row, the rest completes.

Each case writes its own small SA-1B tar (two good ``sa_1``/``sa_2`` pairs before the bad entry, one
good ``sa_4`` pair after it unless the shard is cut there) and runs ``images → sa1b → t_area →
t_double → t_pixels`` on the inline backend. The checks: the error row names the image, the stage that
refused it and the error type, its message gives the reason; every good image of the same shard is in
every table exactly once; a refused image is absent from the refusing stage and everything downstream.
Inputs that are valid but unusual (alpha, CMYK, greyscale, EXIF rotation, 1×1 once ``min_side`` allows it) are
converted, not failed, and their pixels are checked by hand; by default an image under 8 pixels a side is refused
when read (``ImageTooSmall``).

The "corrupt JPEG" breaks a header table, which libjpeg cannot decode. Damage *inside* the
entropy-coded data of a JPEG that still ends with its end-of-image marker is not detected: libjpeg
only warns and fills the damaged blocks, and Pillow does not surface its warnings.
"""

from __future__ import annotations

import io
import json
import resource
import struct
import tarfile
import textwrap
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from grand_engine.config import load_manifest
from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.runtime.executor import load_pixels
from grand_engine.runtime.records import RecordBook
from grand_engine.runtime.run import run
from tests.io.shards import box_mask, member_offsets, sa1b_json, truncate, write_tar

W, H = 16, 12  # stored size of the good images
STAGES = ("images", "sa1b", "t_area", "t_double", "t_pixels")
PIPELINE = textwrap.dedent(
    """
    name: bad-inputs
    unit_size: 64
    stages:
      images: {}
      sa1b: {}
      t_area: {}
      t_double: {}
      t_pixels: {}
    """
)


# -- building blocks -------------------------------------------------------------------------------
def jpeg(width: int = W, height: int = H, color=(200, 30, 60), mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format="JPEG", quality=95, **save)
    return buf.getvalue()


def ann(num: int, width: int = W, height: int = H, masks=None) -> bytes:
    """An SA-1B JSON with one box mask (rows 1–4, columns 2–8) unless ``masks`` is given."""
    masks = [box_mask(height, width, 1, 5, 2, 9)] if masks is None else masks
    return json.dumps(sa1b_json(num, width, height, masks)).encode()


def pair(num: int, image: bytes | None = None, doc: bytes | None = None, ext: str = "jpg"):
    return [(f"sa_{num}.{ext}", image if image is not None else jpeg()), (f"sa_{num}.json", doc or ann(num))]


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A 100-byte PNG whose header claims ``width×height`` RGB pixels (2.7 GB decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def bomb_jpeg() -> bytes:
    """A small valid JPEG whose frame header is rewritten to claim 30000×30000."""
    data = bytearray(jpeg(8, 8))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 30_000, 30_000)  # height, width
    return bytes(data)


def corrupt_jpeg() -> bytes:
    """A JPEG whose quantisation table segment is turned into a comment: libjpeg cannot decode it."""
    data = jpeg(color=(1, 2, 3))
    assert data.count(b"\xff\xdb") >= 1
    return data.replace(b"\xff\xdb", b"\xff\xfe")


def empty_mask_rle(width: int = W, height: int = H) -> dict:
    return rle.encode(np.zeros((height, width), dtype=bool))


# -- the cases -------------------------------------------------------------------------------------
@dataclass
class Case:
    members: list
    errors: set[tuple[str, str, str]]  # (image_id, stage, error_type)
    reasons: dict[str, str]  # image_id -> words its error message contains
    good: tuple[str, ...] = ("sa_1", "sa_2", "sa_4")
    cut_inside: str | None = None  # truncate the tar in the middle of this member's data
    cut_at: str | None = None  # truncate the tar right before this member's header (a cut at a member boundary)
    error_rows: int | None = None  # when several members share one image id (default: one row per id)
    tar_format: int = tarfile.GNU_FORMAT
    params: dict = field(default_factory=dict)  # stage -> parameter overrides for this case
    extra: dict = field(default_factory=dict)


def _truncated_tar() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, jpeg(color=(0, 0, 250)))],
        {("sa_3", "images", "TruncatedShard")},
        {"sa_3": "cut off"},
        good=("sa_1", "sa_2"),
        cut_inside="sa_3.jpg",
    )


def _cut_at_a_pair_boundary() -> Case:
    # The file ends after sa_2's annotation: no end-of-archive marker, so sa_3 and sa_4 are lost, and said so.
    return Case(
        [*pair(1), *pair(2), *pair(3), *pair(4)],
        {("@cut", "images", "TruncatedShard")},
        {"@cut": "after 4 members, without the tar end-of-archive marker"},
        good=("sa_1", "sa_2"),
        cut_at="sa_3.jpg",
    )


def _cut_between_image_and_annotation() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3), *pair(4)],
        {("sa_3", "images", "MissingAnnotation"), ("@cut", "images", "TruncatedShard")},
        {"sa_3": "has no sa_3.json annotation member", "@cut": "after 5 members, without the tar end-of-archive"},
        good=("sa_1", "sa_2"),
        cut_at="sa_3.json",
    )


def _not_a_jpeg() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, b"<html><body>this is not a JPEG</body></html>"), *pair(4)],
        {("sa_3", "images", "ImageError")},
        {"sa_3": "not an image"},
    )


def _json_named_jpeg() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, ann(3)), *pair(4)],
        {("sa_3", "images", "ImageError")},
        {"sa_3": "not an image"},
    )


def _corrupt_jpeg() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, corrupt_jpeg()), *pair(4)],
        {("sa_3", "images", "ImageError")},
        {"sa_3": "corrupt JPEG data"},
    )


def _jpeg_cut_in_half() -> Case:
    # Big enough that half of the file ends inside the scan data, after every header segment.
    noisy = Image.fromarray(np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    return Case(
        [*pair(1), *pair(2), *pair(3, data[: len(data) // 2], ann(3, 64, 48)), *pair(4)],
        {("sa_3", "images", "ImageError")},
        {"sa_3": "truncated JPEG: no end-of-image marker after the scan data"},
    )


def _bomb_png() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, bomb_png(), ann(3, 30_000, 30_000, masks=[]), ext="png"), *pair(4)],
        {("sa_3", "images", "ImageError")},
        {"sa_3": "30000×30000 = 900000000 pixels, more than max_pixels"},
    )


def _bomb_jpeg() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, bomb_jpeg(), ann(3, 30_000, 30_000, masks=[])), *pair(4)],
        {("sa_3", "images", "ImageError")},
        {"sa_3": "decompression-bomb guard"},
    )


def _one_pixel_image() -> Case:
    # Valid, but models misread or crash on it: refused when read, not deep inside depth or a detector.
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1), (9, 99, 199)).save(tiny, format="PNG")
    return Case(
        [
            *pair(1),
            *pair(2),
            *pair(3, tiny.getvalue(), ann(3, 1, 1, masks=[np.ones((1, 1), bool)]), ext="png"),
            *pair(4),
        ],
        {("sa_3", "images", "ImageTooSmall")},
        {"sa_3": "PNG image is 1×1 pixels, below the minimum side of min_side = 8"},
    )


def _image_below_a_raised_minimum_side() -> Case:
    small = jpeg(12, 9)  # accepted by default, refused once the limit is raised to 10
    return Case(
        [*pair(1), *pair(2), *pair(3, small, ann(3, 12, 9, masks=[])), *pair(4)],
        {("sa_3", "images", "ImageTooSmall")},
        {"sa_3": "JPEG image is 12×9 pixels, below the minimum side of min_side = 10"},
        params={"images": {"min_side": 10}},
    )


def _malformed_json() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, doc=b'{"image": {"width": 16, "height": 12}, "annotations": [{'), *pair(4)],
        {("sa_3", "sa1b", "MalformedAnnotationJSON")},
        {"sa_3": "not valid JSON"},
    )


def _json_without_image_block() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, doc=b'{"annotations": []}'), *pair(4)],
        {("sa_3", "sa1b", "MalformedAnnotationJSON")},
        {"sa_3": "missing the 'image' block"},
    )


def _rle_size_mismatch() -> Case:
    doc = sa1b_json(3, W, H, [box_mask(H, W, 1, 5, 2, 9)])
    doc["annotations"][0]["segmentation"] = rle.encode(box_mask(H, W - 1, 1, 5, 2, 9))  # 12×15, image 12×16
    return Case(
        [*pair(1), *pair(2), *pair(3, doc=json.dumps(doc).encode()), *pair(4)],
        {("sa_3", "sa1b", "AnnotationSizeMismatch")},
        {"sa_3": "RLE size [12, 15] does not match the image size [12, 16]"},
    )


def _zero_area_annotation() -> Case:
    doc = sa1b_json(3, W, H, [box_mask(H, W, 1, 5, 2, 9)])
    doc["annotations"].append(
        {"id": 3999, "segmentation": empty_mask_rle(), "bbox": [3, 3, 0, 0], "area": 0, "point_coords": [[3, 3]]}
    )
    return Case(
        [*pair(1), *pair(2), *pair(3, doc=json.dumps(doc).encode()), *pair(4)],
        {("sa_3", "sa1b", "InvalidAnnotation")},
        {"sa_3": "annotation id=3999 (index 1): segmentation: RLE mask has zero area"},
    )


def _duplicate_member_names() -> Case:
    # Same image id twice with different pixels: the first (red) is used, the second is an error row.
    red, blue = jpeg(color=(250, 0, 0)), jpeg(color=(0, 0, 250))
    return Case(
        [*pair(1), *pair(2), *pair(3, red), ("sa_3.jpg", blue), *pair(4)],
        {("sa_3", "images", "DuplicateMember")},
        {"sa_3": "repeats the id 'sa_3' of 'sa_3.jpg'; the first one is used"},
        good=("sa_1", "sa_2", "sa_3", "sa_4"),
    )


def _unsafe_member_names(tmp_path: Path) -> Case:
    target = tmp_path / "abs_target"  # an absolute member name points here; it must never be created
    abs_name = f"{target}/sa_8"
    members = [
        *pair(1),
        *pair(2),
        ("../sa_5.jpg", jpeg()),
        ("../sa_5.json", ann(5)),
        ("imgs/../../sa_6.jpg", jpeg()),
        (f"{abs_name}.jpg", jpeg()),
        (f"{abs_name}.json", ann(8)),
        *pair(4),
    ]
    return Case(
        members,
        {
            ("../sa_5", "images", "UnsafeMemberName"),
            ("imgs/../../sa_6", "images", "UnsafeMemberName"),
            (abs_name, "images", "UnsafeMemberName"),
        },
        {"../sa_5": "unsafe name", "imgs/../../sa_6": "unsafe name", abs_name: "unsafe name"},
        error_rows=5,  # one per member: the image and the JSON of ../sa_5 and of the absolute name, sa_6's image
        extra={"never_created": [target, tmp_path / "sa_5.jpg", tmp_path / "sa_6.jpg"]},
    )


def _hostile_long_name(tar_format: int, first: bool = False) -> Case:
    # A 2 MiB member name: tarfile would read the whole name block into memory; the index skips it unread.
    hostile = ("n" * (2 << 20) + ".jpg", jpeg())
    members = [hostile, *pair(1), *pair(2), *pair(4)] if first else [*pair(1), *pair(2), hostile, *pair(4)]
    return Case(
        members,
        {("@hostile", "images", "UnsafeMemberName")},
        {"@hostile": "long-name or pax header block (more than 1048576 bytes); it is skipped unread"},
        tar_format=tar_format,
    )


def _deeply_nested_json() -> Case:
    return Case(
        [*pair(1), *pair(2), *pair(3, doc=b"[" * 200_000), *pair(4)],
        {("sa_3", "sa1b", "MalformedAnnotationJSON")},
        {"sa_3": "JSON nested too deeply to parse"},
    )


def _image_over_size_limit() -> Case:
    noisy = Image.fromarray(np.random.default_rng(5).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    assert len(buf.getvalue()) > 4000 > len(jpeg())
    return Case(
        [*pair(1), *pair(2), *pair(3, buf.getvalue(), ext="png"), *pair(4)],
        {("sa_3", "images", "ImageError")},
        {"sa_3": f"sa_3.png: {len(buf.getvalue())} bytes, more than max_image_bytes = 4000 (refused unread"},
        params={"images": {"max_image_bytes": 4000}},
    )


def _annotation_over_size_limit() -> Case:
    padded = ann(3) + b" " * 5000  # still valid JSON
    assert len(ann(1)) < 1000
    return Case(
        [*pair(1), *pair(2), *pair(3, doc=padded), *pair(4)],
        {("sa_3", "sa1b", "AnnotationTooLarge")},
        {"sa_3": f"sa_3.json: {len(padded)} bytes, more than max_annotation_bytes = 1000"},
        params={"sa1b": {"max_annotation_bytes": 1000}},
    )


def _overlong_member_name() -> Case:
    return Case(
        [*pair(1), *pair(2), ("x" * 5000 + ".jpg", jpeg()), *pair(4)],
        {("@hostile", "images", "UnsafeMemberName")},
        {"@hostile": "has a name of 5004 characters (more than 4096)"},
    )


CASES = {
    "hostile_gnu_long_name": lambda: _hostile_long_name(tarfile.GNU_FORMAT),
    "hostile_pax_long_name": lambda: _hostile_long_name(tarfile.PAX_FORMAT),
    "hostile_long_name_first_member": lambda: _hostile_long_name(tarfile.GNU_FORMAT, first=True),
    "overlong_member_name": _overlong_member_name,
    "deeply_nested_json": _deeply_nested_json,
    "image_over_size_limit": _image_over_size_limit,
    "annotation_over_size_limit": _annotation_over_size_limit,
    "truncated_tar": _truncated_tar,
    "cut_at_a_pair_boundary": _cut_at_a_pair_boundary,
    "cut_between_image_and_annotation": _cut_between_image_and_annotation,
    "not_a_jpeg": _not_a_jpeg,
    "json_named_jpeg": _json_named_jpeg,
    "corrupt_jpeg": _corrupt_jpeg,
    "jpeg_cut_in_half": _jpeg_cut_in_half,
    "bomb_png_30000x30000": _bomb_png,
    "one_pixel_image": _one_pixel_image,
    "image_below_a_raised_minimum_side": _image_below_a_raised_minimum_side,
    "bomb_jpeg_30000x30000": _bomb_jpeg,
    "malformed_json": _malformed_json,
    "json_without_image_block": _json_without_image_block,
    "rle_size_mismatch": _rle_size_mismatch,
    "zero_area_annotation": _zero_area_annotation,
    "duplicate_member_names": _duplicate_member_names,
    "unsafe_member_names": _unsafe_member_names,
}


def write_members(path: Path, members: list[tuple[str, bytes]], tar_format: int) -> Path:
    """A plain tar of ``(name, data)`` members in the given format; names are written verbatim."""
    with tarfile.open(path, "w", format=tar_format) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


# -- running ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    out: Path
    tables: dict[str, pa.Table]
    errors: list[dict]
    summary: object


def run_pipeline(tmp_path: Path, shards: list[Path], params: dict | None = None) -> Outcome:
    manifest = tmp_path / "bad_inputs.yaml"
    manifest.write_text(PIPELINE)
    out = tmp_path / "out"
    overrides = [f"{stage}.{k}={v}" for stage, kv in (params or {}).items() for k, v in kv.items()]
    config = load_manifest(manifest, overrides=overrides)
    _, summary = run(config, [str(s) for s in shards], str(out), backend="inline", progress=False)
    tables = {}
    for stage in STAGES:
        files = sorted((out / stage).rglob("*.parquet"))
        parts = [pq.read_table(f) for f in files]
        tables[stage] = pa.concat_tables(parts) if parts else None
    errors = [r for f in sorted((out / "_errors").rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return Outcome(out, tables, errors, summary)


def ids(table: pa.Table | None) -> list[str]:
    return [] if table is None else table.column("image_id").to_pylist()


def rows_by_id(table: pa.Table) -> dict[str, dict]:
    return {r["image_id"]: r for r in table.to_pylist()}


def assert_good_everywhere(outcome: Outcome, good: tuple[str, ...], sa1b_refused: tuple[str, ...] = ()) -> None:
    """Every good image is in every table exactly once, and nothing else is.

    An image the ``sa1b`` stage refused is still a readable image: it stays in ``images`` and in the
    ``t_*`` stages, which do not depend on ``sa1b``.
    """
    for stage in STAGES:
        expected = good if stage == "sa1b" else good + sa1b_refused
        got = ids(outcome.tables[stage])
        assert sorted(got) == sorted(expected), (stage, got)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_entry_becomes_one_error_row_and_the_shard_completes(name, tmp_path, monkeypatch):
    builder = CASES[name]
    case = builder(tmp_path) if builder.__code__.co_argcount else builder()
    work = tmp_path / "cwd"  # relative member names (../x) would resolve from here if anything used them
    work.mkdir()
    monkeypatch.chdir(work)
    shard = write_members(tmp_path / "sa_000001.tar", case.members, case.tar_format)
    if "@hostile" in case.reasons:  # the member has no usable name: its id is <shard>@<header offset>
        [offset] = [h for name, (h, _, _) in member_offsets(shard).items() if len(name) > 4096]
        hostile_id = f"sa_000001@{offset}"
        case.errors = {(hostile_id, s, t) for _, s, t in case.errors}
        case.reasons = {hostile_id: case.reasons["@hostile"]}
    if case.cut_inside:
        _, data_offset, size = member_offsets(shard)[case.cut_inside]
        truncate(shard, data_offset + size // 2)
    if case.cut_at:  # the shard-level row is named after the shard and the byte where the file ends
        header_offset, _, _ = member_offsets(shard)[case.cut_at]
        truncate(shard, header_offset)
        case.errors = {(f"sa_000001@{header_offset}" if i == "@cut" else i, s, t) for i, s, t in case.errors}
        case.reasons[f"sa_000001@{header_offset}"] = case.reasons.pop("@cut")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    outcome = run_pipeline(tmp_path, [shard], case.params)

    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 400  # a bomb decoded to pixels would cost 900 MB (L) to 2.7 GB (RGB)
    assert outcome.summary.ok and outcome.summary.units_failed == 0
    got = {(e["image_id"], e["stage"], e["error_type"]) for e in outcome.errors}
    assert got == case.errors
    assert len(outcome.errors) == (case.error_rows or len(case.errors))
    for e in outcome.errors:
        assert e["unit_id"] == "sa_000001/00000"
        assert case.reasons[e["image_id"]] in e["message"], e
    sa1b_refused = tuple(sorted(i for i, stage, _ in case.errors if stage == "sa1b"))
    assert_good_everywhere(outcome, case.good, sa1b_refused)
    for path in case.extra.get("never_created", []):
        assert not path.exists()
    assert list(work.iterdir()) == []
    # The good images' values are right (area of a 16×12 image, the one box mask of the fixture).
    area = rows_by_id(outcome.tables["t_area"])
    sa1b = rows_by_id(outcome.tables["sa1b"])
    for image_id in case.good:
        assert area[image_id]["area"] == W * H
        [mask] = sa1b[image_id]["annotations"]
        assert mask["bbox"] == [2.0, 1.0, 9.0, 5.0] and mask["area"] == 28.0


def test_duplicate_member_uses_the_first_copy(tmp_path):
    case = _duplicate_member_names()
    shard = write_tar(tmp_path / "sa_000001.tar", case.members)
    with tarfile.open(shard) as tf:
        first_offset = next(m.offset_data for m in tf.getmembers() if m.name == "sa_3.jpg")
    outcome = run_pipeline(tmp_path, [shard])
    row = rows_by_id(outcome.tables["images"])["sa_3"]
    assert row["offset"] == first_offset
    pixels = load_pixels(row)
    assert np.abs(pixels[6, 8].astype(int) - (250, 0, 0)).max() < 8  # the red first copy, not the blue one


# -- converted, not failed ---------------------------------------------------------------------------
def _rgba_png() -> bytes:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[:, W // 2 :, 3] = 255  # right half opaque, left half fully transparent
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _exif_rotated_jpeg() -> bytes:
    """Stored 16 wide × 12 tall, EXIF orientation 6, a red block in the stored top-left corner."""
    arr = np.full((H, W, 3), 255, np.uint8)
    arr[:4, :4] = (255, 0, 0)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_unusual_but_valid_images_are_converted_not_failed(tmp_path):
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1), (9, 99, 199)).save(tiny, format="PNG")  # accepted here with min_side = 1
    # EXIF-rotated: the SA-1B JSON describes the displayed image (12 wide × 16 tall), its mask rows
    # 10–13 and columns 1–6 of the displayed picture.
    displayed_mask = box_mask(W, H, 10, 14, 1, 7)
    members = [
        *pair(1),
        *pair(5, _rgba_png(), ext="png"),
        *pair(6, jpeg(mode="CMYK", color=(0, 255, 255, 0))),  # no cyan or black: red
        *pair(7, jpeg(mode="L", color=77)),
        *pair(8, _exif_rotated_jpeg(), ann(8, H, W, masks=[displayed_mask])),
        *pair(9, tiny.getvalue(), ann(9, 1, 1, masks=[np.ones((1, 1), bool)]), ext="png"),
    ]
    shard = write_tar(tmp_path / "sa_000002.tar", members)
    outcome = run_pipeline(tmp_path, [shard], {"images": {"min_side": 1}})

    assert outcome.errors == []
    assert_good_everywhere(outcome, ("sa_1", "sa_5", "sa_6", "sa_7", "sa_8", "sa_9"))
    images = rows_by_id(outcome.tables["images"])
    pixels_table = rows_by_id(outcome.tables["t_pixels"])
    sa1b = rows_by_id(outcome.tables["sa1b"])

    # PNG with alpha: transparency composited onto white; left half white, right half red.
    assert images["sa_5"]["format"] == "PNG"
    px = load_pixels(images["sa_5"])
    assert px[:, : W // 2].tolist() == [[[255, 255, 255]] * (W // 2)] * H
    assert px[:, W // 2 :].tolist() == [[[255, 0, 0]] * (W // 2)] * H
    assert pixels_table["sa_5"]["mean"] == pytest.approx((255 + 85) / 2)  # mean of 3×255 and (255, 0, 0)

    # CMYK JPEG: converted to RGB red; greyscale JPEG: replicated to three channels.
    assert np.abs(load_pixels(images["sa_6"]).astype(int) - (255, 0, 0)).max() < 10
    grey = load_pixels(images["sa_7"])
    assert grey.shape == (H, W, 3) and np.abs(grey.astype(int) - 77).max() <= 1
    assert pixels_table["sa_7"]["shape"] == [H, W, 3]

    # EXIF orientation 6: width/height, pixels and boxes are all in the displayed orientation.
    row = images["sa_8"]
    assert (row["width"], row["height"], row["orientation"]) == (H, W, 6)
    assert pixels_table["sa_8"]["shape"] == [W, H, 3]
    rotated = load_pixels(row)
    assert np.abs(rotated[1, H - 2].astype(int) - (255, 0, 0)).max() < 16  # stored top-left → displayed top-right
    assert np.abs(rotated[1, 1].astype(int) - 255).max() < 16
    [mask] = sa1b["sa_8"]["annotations"]
    assert (sa1b["sa_8"]["image_width"], sa1b["sa_8"]["image_height"]) == (H, W)
    assert mask["bbox"] == [1.0, 10.0, 7.0, 14.0] and mask["area"] == 24.0

    # 1×1 image (min_side lowered to 1): a valid image with a one-pixel mask.
    assert (images["sa_9"]["width"], images["sa_9"]["height"]) == (1, 1)
    assert pixels_table["sa_9"]["shape"] == [1, 1, 3]
    assert pixels_table["sa_9"]["mean"] == pytest.approx((9 + 99 + 199) / 3)
    [mask] = sa1b["sa_9"]["annotations"]
    assert mask["bbox"] == [0.0, 0.0, 1.0, 1.0] and mask["area"] == 1.0


def test_exif_rotated_image_with_annotation_in_stored_orientation_is_refused(tmp_path):
    # The JSON describes the stored 16×12 picture, not the displayed 12×16 one: sizes disagree.
    shard = write_tar(tmp_path / "sa_000003.tar", [*pair(1), *pair(8, _exif_rotated_jpeg(), ann(8))])
    outcome = run_pipeline(tmp_path, [shard])
    [error] = outcome.errors
    assert (error["image_id"], error["stage"], error["error_type"]) == ("sa_8", "sa1b", "AnnotationSizeMismatch")
    assert "16×12" in error["message"] and "12×16" in error["message"] and "EXIF orientation 6" in error["message"]
    assert ids(outcome.tables["sa1b"]) == ["sa_1"] and sorted(ids(outcome.tables["images"])) == ["sa_1", "sa_8"]


# -- empty shards --------------------------------------------------------------------------------------
def test_empty_tar_and_zero_byte_tar_next_to_a_good_shard(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_tar(folder / "sa_000010.tar", [])  # a valid tar with no members: one row says it is empty
    (folder / "sa_000011.tar").write_bytes(b"")  # 0 bytes: not a tar at all
    write_tar(folder / "sa_000012.tar", [*pair(1), *pair(2)])
    outcome = run_pipeline(tmp_path, [folder])

    assert outcome.summary.ok and outcome.summary.units_total == 3
    got = sorted((e["image_id"], e["stage"], e["error_type"]) for e in outcome.errors)
    assert got == [("sa_000010@0", "images", "EmptyShard"), ("sa_000011@0", "images", "UnreadableShard")]
    empty, zero = sorted(outcome.errors, key=lambda e: e["image_id"])
    assert "sa_000010.tar: a tar with no members at all" in empty["message"]
    assert "empty file (0 bytes)" in zero["message"] and "sa_000011.tar" in zero["message"]
    assert_good_everywhere(outcome, ("sa_1", "sa_2"))
    book = RecordBook.load(OutputStore(outcome.out))
    for shard in ("sa_000010", "sa_000011"):
        assert book.get("images", f"{shard}/00000").status == "done"  # recorded, so never re-read


# -- many masks on one image -----------------------------------------------------------------------------
def test_five_thousand_masks_on_one_image(tmp_path):
    """5,000 SA-1B masks on one 1500×2250 image: parsed, checked and stored with bounded memory."""
    from benchmarks.bench_many_masks import many_masks_shard

    shard, expected = many_masks_shard(tmp_path, n_masks=5000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = run_pipeline(tmp_path, [shard])
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert outcome.errors == []
    [row] = outcome.tables["sa1b"].to_pylist()
    assert row["num_annotations"] == 5000
    anns = row["annotations"]
    for k in (0, 1, 2499, 4999):
        assert anns[k]["id"] == expected[k]["id"]
        assert anns[k]["bbox"] == expected[k]["bbox_xyxy"]
        assert anns[k]["area"] == expected[k]["area"]
    # Decoding every mask at once would need 5000 × 1500 × 2250 bytes ≈ 16.9 GB.
    assert grown_mb < 1500


def test_chunked_mask_check_matches_one_pass_and_names_the_bad_mask(monkeypatch):
    """The many-mask check runs in bounded chunks; results and the bad mask's index do not depend on them."""
    from benchmarks.bench_many_masks import box_rle_counts

    height, width = 40, 30
    boxes = [(x, y, 1 + x % 7, 1 + y % 9) for x in range(0, 20, 3) for y in range(0, 30, 4)]
    segs = [rle.normalize({"size": [height, width], "counts": box_rle_counts(height, width, *b)}) for b in boxes]
    expected = [w * h for _, _, w, h in boxes]
    assert rle.validate_many(segs, height, width).tolist() == expected
    monkeypatch.setattr(rle, "_FAST_CHUNK_CHARS", 7)  # a few masks per pass
    monkeypatch.setattr(rle, "validate_rle", None)  # good masks never take the one-by-one path
    assert rle.validate_many(segs, height, width).tolist() == expected
    monkeypatch.undo()
    monkeypatch.setattr(rle, "_FAST_CHUNK_CHARS", 7)
    bad = [*segs[:-3], empty_mask_rle(width, height), *segs[-3:]]
    with pytest.raises(rle.RLEError, match="zero area") as info:
        rle.validate_many(bad, height, width)
    assert info.value.index == len(segs) - 3


# -- reporting -------------------------------------------------------------------------------------------
def test_status_and_errors_commands_report_bad_inputs_per_stage_and_reason(tmp_path, capsys):
    from grand_engine.cli import main

    members = [
        *pair(1),
        *pair(2, b"not a jpeg at all"),
        *pair(3, corrupt_jpeg()),
        *pair(4, doc=b"{"),
        ("../sa_5.jpg", jpeg()),
        *pair(6),
    ]
    shard = write_tar(tmp_path / "sa_000001.tar", members)
    outcome = run_pipeline(tmp_path, [shard])
    out = str(outcome.out)
    capsys.readouterr()

    assert main(["status", out]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert lines["images"].endswith("ImageError=2, UnsafeMemberName=1")
    assert lines["sa1b"].endswith("MalformedAnnotationJSON=1")
    assert lines["t_area"].split()[1:5] == ["1/1", "3", "3", "0"]  # done/total, images, rows, errors

    assert main(["errors", out]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == "4 error rows"
    rows = sorted((line.split()[0], line.split()[2], line.split()[3]) for line in listing[1:])
    assert rows == [
        ("images", "../sa_5", "UnsafeMemberName"),
        ("images", "sa_2", "ImageError"),
        ("images", "sa_3", "ImageError"),
        ("sa1b", "sa_4", "MalformedAnnotationJSON"),
    ]
    assert main(["errors", out, "--stage", "sa1b"]) == 0
    only = capsys.readouterr().out.splitlines()
    assert only[0] == "1 error rows" and "sa_4" in only[1] and "not valid JSON" in only[1]
    assert main(["errors", out, "--limit", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "… 3 more (use --limit)"
    assert main(["errors", out, "--stage", "t_pixels"]) == 0
    assert capsys.readouterr().out.strip() == "no error rows"


@pytest.mark.parametrize("first", [False, True])
def test_hostile_long_name_cut_off_by_the_end_of_the_file(tmp_path, first):
    """A long-name block running past the end of the file: skipped unread, and the shard reported cut."""
    from grand_engine.io.sa1b import index_shard

    hostile = ("n" * (2 << 20) + ".jpg", jpeg())
    shard = write_members(
        tmp_path / "sa_000005.tar", [hostile, *pair(1)] if first else [*pair(1), hostile], tarfile.GNU_FORMAT
    )
    [offset] = [h for name, (h, _, _) in member_offsets(shard).items() if len(name) > 4096]
    truncate(shard, offset + 512 + 100_000)  # inside the 2 MiB name block
    members = index_shard(shard).members
    kinds = [(m.image_id, m.error_type) for m in members]
    good = [] if first else [("sa_1", None)]
    assert kinds[: len(good)] == good
    assert kinds[len(good)] == (f"sa_000005@{offset}", "UnsafeMemberName")
    assert kinds[len(good) + 1][1] == "TruncatedShard" and len(kinds) == len(good) + 2
    assert "the file ends inside a skipped member" in members[-1].error


@pytest.mark.parametrize("first", [False, True])
def test_hostile_long_name_ending_exactly_at_the_end_of_the_file(tmp_path, first):
    """A skipped member that ends where the file does: no end-of-archive marker, so the shard is reported cut."""
    from grand_engine.io.sa1b import index_shard

    hostile = ("n" * (2 << 20) + ".jpg", jpeg())
    shard = write_members(
        tmp_path / "sa_000006.tar", [hostile, *pair(1)] if first else [*pair(1), hostile], tarfile.GNU_FORMAT
    )
    [(offset, data_offset, size)] = [v for name, v in member_offsets(shard).items() if len(name) > 4096]
    end = data_offset + -(-size // 512) * 512  # the hostile member's padded data ends here
    truncate(shard, end)
    members = index_shard(shard).members
    kinds = [(m.image_id, m.error_type) for m in members]
    good = [] if first else [("sa_1", None)]
    assert kinds == [*good, (f"sa_000006@{offset}", "UnsafeMemberName"), (f"sa_000006@{end}", "TruncatedShard")]
    read = 1 if first else 3  # the hostile member, after sa_1.jpg and sa_1.json when it is last
    assert f"after {read} members, without the tar end-of-archive marker" in members[-1].error
