"""COCO run-length encoded masks: the one place that talks to pycocotools.

Tables store masks as ``{"size": [H, W], "counts": str}`` (COCO *compressed* RLE, column-major,
counts as the LEB128-like ASCII string). pycocotools wants ``bytes`` counts; the conversion happens
here, at the boundary. Uncompressed RLE (``counts`` a list of run lengths, as some tools write) is
accepted everywhere and converted with ``frPyObjects``.

pycocotools' C decoder trusts its input: counts that add up to more than ``H*W`` pixels make it
write past the end of its output buffer. Every function here therefore checks the run lengths (a
vectorised parse of the counts string, see :func:`run_lengths`) before a mask reaches pycocotools,
and :func:`decode` expands the checked runs itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_api

__all__ = [
    "RLEError",
    "area",
    "decode",
    "encode",
    "from_polygons",
    "iou_matrix",
    "normalize",
    "run_lengths",
    "to_bbox_xyxy",
    "validate_many",
    "validate_rle",
    "xywh_to_xyxy",
]

_MAX_CHARS_PER_RUN = 12  # 12 * 5 = 60 bits: far beyond any real image, still inside int64
_FAST_CHUNK_CHARS = 1 << 18
"""Counts characters parsed per vectorised pass of :func:`validate_many`. The pass keeps about a dozen
int64 temporaries per character (~100 bytes), so chunking bounds its peak memory near 30 MB however
many masks an image has (5,000 SA-1B masks hold ~2 MB of counts: 240 MB in one pass)."""


class RLEError(ValueError):
    """A mask that is not a well-formed COCO RLE of the expected size."""


def _size_of(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, Mapping):
        raise RLEError(f"an RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    if "size" not in rle or "counts" not in rle:
        raise RLEError(f"an RLE needs both 'size' and 'counts'; keys present: {sorted(map(str, rle))}")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple, np.ndarray))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    ):
        raise RLEError(f"RLE 'size' must be [height, width] integers, got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise RLEError(f"RLE 'size' must be positive, got [{h}, {w}]")
    return h, w


def run_lengths(rle: Mapping[str, Any]) -> np.ndarray:
    """The run lengths of an RLE (zeros first, column-major) as int64, checked against its size.

    Raises :class:`RLEError` for counts with characters outside the COCO alphabet, a number cut off
    at the end of the string, negative runs, or runs that do not add up to ``H*W``.
    """
    h, w = _size_of(rle)
    counts = rle["counts"]
    if isinstance(counts, (list, tuple, np.ndarray)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in counts):
            raise RLEError("uncompressed RLE counts must be a list of integers")
        runs = np.asarray(counts, dtype=np.int64).reshape(-1)
    elif isinstance(counts, (str, bytes)):
        runs = _parse_counts(counts)
    else:
        raise RLEError(f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}")
    if runs.size and runs.min() < 0:
        raise RLEError("malformed RLE counts: a run length is negative")
    total = int(runs.sum())
    if total != h * w:
        raise RLEError(f"malformed RLE counts: runs cover {total} pixels but size [{h}, {w}] has {h * w}")
    return runs


def _parse_counts(counts: str | bytes) -> np.ndarray:
    """Decode the compressed counts string exactly as pycocotools' ``rleFrString`` does, vectorised."""
    if isinstance(counts, str):
        try:
            raw = counts.encode("ascii")
        except UnicodeEncodeError:
            raise RLEError("malformed RLE counts: non-ASCII characters") from None
    else:
        raw = counts
    if not raw:
        return np.zeros(0, dtype=np.int64)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.min() < 0 or c.max() > 63:
        bad = raw[int(np.flatnonzero((c < 0) | (c > 63))[0])]
        raise RLEError(f"malformed RLE counts: character {chr(bad)!r} is outside the COCO alphabet '0'..'o'")
    ends = (c & 0x20) == 0  # the last character of each number has the continuation bit clear
    if not ends[-1]:
        raise RLEError("malformed RLE counts: the string ends in the middle of a number")
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    number_of_char = np.cumsum(np.concatenate(([0], ends[:-1].astype(np.int64))))
    k = np.arange(c.size, dtype=np.int64) - starts[number_of_char]
    if int(k.max()) >= _MAX_CHARS_PER_RUN:
        raise RLEError("malformed RLE counts: a run length is encoded with too many characters")
    values = np.bitwise_or.reduceat((c & 0x1F) << (5 * k), starts)
    last = c[ends]
    negative = (last & 0x10) != 0
    values[negative] |= np.left_shift(np.int64(-1), 5 * (k[ends][negative] + 1))
    # Runs from index 3 on are stored as the difference to the run two places before.
    runs = values.copy()
    if runs.size > 3:
        runs[3::2] = np.cumsum(values[1::2])[1:]
    if runs.size > 4:
        runs[4::2] = np.cumsum(values[2::2])[1:]
    return runs


def _to_coco(rle: Mapping[str, Any]) -> dict[str, Any]:
    """Checked pycocotools form: ``{"size": [H, W], "counts": bytes}`` (compressed)."""
    h, w = _size_of(rle)
    run_lengths(rle)
    counts = rle["counts"]
    if isinstance(counts, (list, tuple, np.ndarray)):
        return mask_api.frPyObjects({"size": [h, w], "counts": [int(v) for v in counts]}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def _many(rles: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(rles, Mapping):
        rles = [rles]
    return [_to_coco(r) for r in rles]


def normalize(rle: Mapping[str, Any]) -> dict[str, Any]:
    """The table form of any accepted RLE: ``{"size": [H, W], "counts": str}`` (compressed, checked)."""
    coco = _to_coco(rle)
    return {"size": [int(coco["size"][0]), int(coco["size"][1])], "counts": coco["counts"].decode("ascii")}


def validate_rle(rle: Any, height: int, width: int) -> int:
    """Check that ``rle`` is a well-formed, non-empty mask of size ``height×width``; return its area.

    Raises :class:`RLEError` naming the problem: malformed structure or counts, a size that differs
    from the image's, or zero area.
    """
    h, w = _size_of(rle)
    if (h, w) != (int(height), int(width)):
        raise RLEError(f"RLE size [{h}, {w}] does not match the image size [{int(height)}, {int(width)}] (H, W)")
    runs = run_lengths(rle)
    mask_area = int(runs[1::2].sum())
    if mask_area == 0:
        raise RLEError("RLE mask has zero area")
    return mask_area


def validate_many(rles: Sequence[Any], height: int, width: int) -> np.ndarray:
    """:func:`validate_rle` for all masks of one image at once; returns their areas, ``(N,)`` int64.

    Compressed counts are parsed in one vectorised pass over all masks. If anything is wrong, the
    masks are checked one by one so the :class:`RLEError` raised is the first bad mask's, with its
    position in ``rles`` in the exception's ``index`` attribute.
    """
    rles = list(rles)
    if not rles:
        return np.zeros(0, dtype=np.int64)
    areas = _fast_areas_chunked(rles, int(height), int(width))
    if areas is not None and bool((areas > 0).all()):
        return areas
    out = np.zeros(len(rles), dtype=np.int64)
    for i, r in enumerate(rles):
        try:
            out[i] = validate_rle(r, height, width)
        except RLEError as exc:
            exc.index = i
            raise
    return out


def _fast_areas_chunked(rles: list[Any], h: int, w: int) -> np.ndarray | None:
    """:func:`_fast_areas` over consecutive groups of at most ``_FAST_CHUNK_CHARS`` counts characters."""
    parts: list[np.ndarray] = []
    start = chars = 0
    for i, r in enumerate(rles):
        counts = r.get("counts") if isinstance(r, Mapping) else None
        chars += len(counts) if isinstance(counts, (str, bytes)) else 0
        if chars >= _FAST_CHUNK_CHARS or i == len(rles) - 1:
            part = _fast_areas(rles[start : i + 1], h, w)
            if part is None:
                return None
            parts.append(part)
            start, chars = i + 1, 0
    return np.concatenate(parts)


def _fast_areas(rles: list[Any], h: int, w: int) -> np.ndarray | None:
    """Areas of well-formed compressed RLEs of size ``h×w``, or ``None`` when any needs a closer look."""
    raws = _compressed_counts(rles, h, w)
    if raws is None:
        return None
    numbers = _parse_numbers(raws)
    if numbers is None:
        return None
    runs, first, odd = _undo_delta_coding(*numbers, len(raws))
    if runs.min() < 0:
        return None
    if not (np.add.reduceat(runs, first) == h * w).all():
        return None
    return np.add.reduceat(np.where(odd, runs, 0), first)


def _compressed_counts(rles: list[Any], h: int, w: int) -> list[bytes] | None:
    """Each RLE's non-empty ASCII counts string as bytes, or ``None`` when one is not a compressed RLE of size
    ``h×w``."""
    raws: list[bytes] = []
    for r in rles:
        if not isinstance(r, Mapping) or r.get("size") is None:
            return None
        size, counts = r["size"], r.get("counts")
        if not isinstance(size, (list, tuple)) or len(size) != 2 or size[0] != h or size[1] != w:
            return None
        if isinstance(counts, str):
            if not counts.isascii():
                return None
            counts = counts.encode("ascii")
        if not isinstance(counts, bytes) or not counts:
            return None
        raws.append(counts)
    return raws


def _parse_numbers(raws: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The numbers of all counts strings at once (still delta coded), where each string starts in the joined
    characters, and which characters end a number; ``None`` for a character outside the alphabet, a number that
    runs past the end of its string, or one longer than ``_MAX_CHARS_PER_RUN`` characters."""
    lengths = np.fromiter((len(b) for b in raws), dtype=np.int64, count=len(raws))
    c = np.frombuffer(b"".join(raws), dtype=np.uint8).astype(np.int64) - 48
    if c.min() < 0 or c.max() > 63:
        return None
    ends = (c & 0x20) == 0
    string_starts = np.cumsum(lengths) - lengths
    if not ends[string_starts + lengths - 1].all():
        return None  # a number would run into the next mask's string
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    number_of_char = np.cumsum(np.concatenate(([0], ends[:-1].astype(np.int64))))
    k = np.arange(c.size, dtype=np.int64) - starts[number_of_char]
    if int(k.max()) >= _MAX_CHARS_PER_RUN:
        return None
    values = np.bitwise_or.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    values[negative] |= np.left_shift(np.int64(-1), 5 * (k[ends][negative] + 1))
    return values, ends, string_starts


def _undo_delta_coding(
    values: np.ndarray, ends: np.ndarray, string_starts: np.ndarray, n_masks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run lengths of every mask, the index of each mask's first run, and which runs are odd (ones).

    Run i >= 3 is stored relative to run i - 2, so runs 1, 3, 5, ... and runs 2, 4, 6, ... of each mask are two
    running sums (run 0 stands alone).
    """
    per_mask = np.add.reduceat(ends.astype(np.int64), string_starts)
    first = np.cumsum(per_mask) - per_mask
    mask_of = np.repeat(np.arange(n_masks, dtype=np.int64), per_mask)
    i_in_mask = np.arange(values.size, dtype=np.int64) - first[mask_of]
    odd = i_in_mask % 2 == 1
    odd_sums = np.cumsum(np.where(odd, values, 0))
    even_sums = np.cumsum(np.where(~odd & (i_in_mask > 0), values, 0))
    base = first - 1  # running sums just before each mask's first run
    odd_base = np.where(base >= 0, odd_sums[np.maximum(base, 0)], 0)[mask_of]
    even_base = np.where(base >= 0, even_sums[np.maximum(base, 0)], 0)[mask_of]
    runs = np.where(i_in_mask == 0, values, np.where(odd, odd_sums - odd_base, even_sums - even_base))
    return runs, first, odd


def decode(rle: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Decode one RLE to an ``H×W`` bool array, or a list of same-size RLEs to ``N×H×W``.

    Decoding expands the checked run lengths with numpy, so a malformed mask raises :class:`RLEError`
    instead of reaching pycocotools' unchecked C decoder. All masks of a list are expanded by one
    ``numpy.repeat`` into one buffer, which is several times faster than pycocotools' ``decode``
    (``benchmarks/bench_read.py``).

    The result is a read-write **column-major view** (COCO RLE runs go down the columns): each mask is
    Fortran-ordered, ``strides == (1, H)`` (``(H*W, 1, H)`` for a stack). Values and shape are those of a
    C-ordered array; use ``numpy.ascontiguousarray`` where a C buffer is required.
    """
    if isinstance(rle, Mapping):
        return _expand([rle])[0]
    rles = list(rle)
    if not rles:
        raise RLEError("decode needs at least one RLE (an empty list has no size)")
    return _expand(rles)


def _expand(rles: list[Mapping[str, Any]]) -> np.ndarray:
    """``N×H×W`` bool masks (column-major per mask) of checked RLEs of one size."""
    runs = [run_lengths(r) for r in rles]  # checks each mask's structure and run lengths first
    sizes = sorted({_size_of(r) for r in rles})
    if len(sizes) != 1:
        raise RLEError(f"decode of several masks needs one common size, got {sizes}")
    h, w = sizes[0]
    # Runs alternate 0s and 1s, starting with 0s, in every mask; one repeat fills every mask at once.
    values = np.concatenate([np.arange(r.size) % 2 == 1 for r in runs])
    flat = np.repeat(values, np.concatenate(runs))
    return flat.reshape(len(rles), w, h).transpose(0, 2, 1)


def encode(mask: np.ndarray) -> dict[str, Any] | list[dict[str, Any]]:
    """Encode an ``H×W`` mask to a table RLE dict, or an ``N×H×W`` stack to a list of them."""
    arr = np.asarray(mask)
    if arr.ndim not in (2, 3):
        raise RLEError(f"encode wants an H×W or N×H×W mask, got shape {arr.shape}")
    single = arr.ndim == 2
    stack = arr[None] if single else arr
    fortran = np.asfortranarray(np.moveaxis(stack != 0, 0, -1).astype(np.uint8))
    out = [
        {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
        for r in mask_api.encode(fortran)
    ]
    return out[0] if single else out


def from_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict[str, Any]:
    """The union of COCO polygons (each ``[x1, y1, x2, y2, …]``, at least three points) as one table RLE of
    ``height×width``; a polygon with fewer than six or an odd number of coordinates raises :class:`RLEError`."""
    polys = [[float(v) for v in poly] for poly in polygons]
    if not polys:
        raise RLEError("from_polygons needs at least one polygon")
    for i, poly in enumerate(polys):
        if len(poly) < 6 or len(poly) % 2 or not np.isfinite(poly).all():
            raise RLEError(f"polygon {i} has {len(poly)} coordinates; it needs an even number, at least 6, finite")
    merged = mask_api.merge(mask_api.frPyObjects(polys, int(height), int(width)))
    return {"size": [int(height), int(width)], "counts": merged["counts"].decode("ascii")}


def area(rles: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Mask areas in pixels, shape ``(N,)`` int64 (a single RLE gives shape ``(1,)``)."""
    coco = _many(rles)
    if not coco:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(mask_api.area(coco), dtype=np.int64).reshape(-1)


def to_bbox_xyxy(rles: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Tight boxes of masks as ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` (x2 = last column + 1)."""
    coco = _many(rles)
    if not coco:
        return np.zeros((0, 4), dtype=np.float32)
    return xywh_to_xyxy(np.asarray(mask_api.toBbox(coco), dtype=np.float64).reshape(-1, 4))


def iou_matrix(
    rles_a: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    rles_b: Mapping[str, Any] | Iterable[Mapping[str, Any]],
) -> np.ndarray:
    """Mask IoU between every pair, ``(Na, Nb)`` float64 (pycocotools ``iou`` with no crowd masks)."""
    a, b = _many(rles_a), _many(rles_b)
    if not a or not b:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    sizes = {tuple(r["size"]) for r in a + b}
    if len(sizes) != 1:
        raise RLEError(f"iou needs masks of one size, got {sorted(sizes)}")
    out = mask_api.iou(a, b, [0] * len(b))
    return np.asarray(out, dtype=np.float64).reshape(len(a), len(b))


def xywh_to_xyxy(boxes: Any) -> np.ndarray:
    """``[x, y, w, h]`` boxes (one or ``(N, 4)``) to ``(N, 4)`` float32 ``[x1, y1, x2, y2]``."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    arr = arr.reshape(-1, 4)
    out = arr.copy()
    out[:, 2] = arr[:, 0] + arr[:, 2]
    out[:, 3] = arr[:, 1] + arr[:, 3]
    return out.astype(np.float32)
