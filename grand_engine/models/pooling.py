"""Region embeddings pooled from one dense pass over the whole image (``mode: pooled`` of the crop classifiers).

The reference classified every region by cropping it and encoding the crop with CLIP: one image-tower pass per
mask or object (about 50 + 37 per image). Here the image is encoded once and each region's embedding is read off the
patch tokens that the region covers, through the model's own pooling head:

* **Geometry** (:func:`grid_edges`, :func:`box_coverage`, :func:`mask_coverage`): a fixed-resolution processor
  stretches the image to ``resized × resized`` pixels and the patch embedding tiles it with ``patch``-pixel cells,
  ``resized // patch`` per side (the last ``resized mod patch`` pixels are not read by any cell; here they belong
  to the last cell, so every pixel of the image lies in exactly one cell). Each cell gets the **fraction of its
  area** (in original pixels) that the region covers: exact for boxes with fractional corners and for masks (the
  mask's integral image is bilinear within a pixel, so it is evaluated exactly at fractional cell edges).
* **Pooling** (:func:`attention_pool`): SigLIP's head pools the patch tokens by attention from one learned probe
  query (multi-head attention, then a residual MLP). For a region, the attention logit of every patch gets
  ``log(coverage)`` added: cells outside the region get no weight, cells it covers partly are down-weighted in
  proportion, and a region covering the whole image gives exactly the image embedding. The keys and values are
  computed once per image; each region costs one softmax over the patches and the head's MLP.

The pooled embedding is an approximation of the crop's (the patch tokens have seen the whole image, a crop sees only
itself), so ``mode: crops`` stays the reference's setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Region = Sequence[float] | np.ndarray
"""An xyxy pixel box (4 numbers) or an ``H×W`` boolean mask of the image."""


def grid_edges(length: int, resized: int, patch: int) -> np.ndarray:
    """Cell edges along one image axis of ``length`` pixels, in original pixels: ``resized // patch`` cells, cell
    ``k`` covering resized pixels ``[k·patch, (k+1)·patch)`` and the last one reaching the end of the axis."""
    cells = resized // patch
    if cells < 1:
        raise ValueError(f"a {resized}-pixel input has no {patch}-pixel patch")
    edges = np.arange(cells + 1, dtype=np.float64) * patch * length / resized
    edges[-1] = float(length)
    return edges


def _interval_overlap(lo: float, hi: float, edges: np.ndarray) -> np.ndarray:
    """Fraction of each cell ``[edges[k], edges[k+1])`` that lies inside ``[lo, hi]``."""
    left, right = edges[:-1], edges[1:]
    inside = np.clip(np.minimum(right, hi) - np.maximum(left, lo), 0.0, None)
    return inside / (right - left)


def box_coverage(box: Sequence[float], edges_y: np.ndarray, edges_x: np.ndarray) -> np.ndarray:
    """``(cells_y, cells_x)`` fraction of each cell's area inside the xyxy ``box`` (corners in any order)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    fy = _interval_overlap(min(y1, y2), max(y1, y2), edges_y)
    fx = _interval_overlap(min(x1, x2), max(x1, x2), edges_x)
    return np.outer(fy, fx)


def _integral_at(integral: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The integral image (``(h+1, w+1)``, ``integral[i, j]`` = pixels above row ``i`` and left of column ``j``)
    bilinearly interpolated at fractional coordinates ``ys × xs``: exact, as a pixel's value is constant."""

    def split(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        c = np.clip(coords, 0.0, float(size))
        base = np.minimum(np.floor(c).astype(np.int64), size - 1)
        return base, c - base

    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    iy, fy = split(ys, h)
    ix, fx = split(xs, w)
    a = integral[np.ix_(iy, ix)]
    b = integral[np.ix_(iy, ix + 1)]
    c = integral[np.ix_(iy + 1, ix)]
    d = integral[np.ix_(iy + 1, ix + 1)]
    fy, fx = fy[:, None], fx[None, :]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def mask_coverage(mask: np.ndarray, edges_y: np.ndarray, edges_x: np.ndarray) -> np.ndarray:
    """``(cells_y, cells_x)`` fraction of each cell's area covered by the boolean ``mask`` (exact at fractional
    cell edges). Only the mask's bounding rows and columns are integrated."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return np.zeros((len(edges_y) - 1, len(edges_x) - 1))
    top, left = int(rows[0]), int(cols[0])
    part = mask[top : int(rows[-1]) + 1, left : int(cols[-1]) + 1]
    integral = np.zeros((part.shape[0] + 1, part.shape[1] + 1), dtype=np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(part, axis=0, dtype=np.float64), axis=1)
    corners = _integral_at(integral, edges_y - top, edges_x - left)
    inside = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    areas = np.outer(np.diff(edges_y), np.diff(edges_x))
    return np.clip(inside / areas, 0.0, 1.0)


def region_weights(
    regions: Sequence[Region], height: int, width: int, resized: tuple[int, int], patch: int
) -> np.ndarray:
    """``(R, cells)`` coverage of each region over the patch grid of an image of ``height × width`` (row-major,
    the order of the patch tokens); a mask covering no pixel raises ``ValueError``."""
    edges_y = grid_edges(height, resized[0], patch)
    edges_x = grid_edges(width, resized[1], patch)
    out = []
    for i, region in enumerate(regions):
        array = np.asarray(region)
        if array.ndim == 2:
            if array.shape != (height, width):
                raise ValueError(f"region {i}: mask is {array.shape}, image is {(height, width)}")
            cover = mask_coverage(array, edges_y, edges_x)
        elif array.shape == (4,):
            cover = box_coverage(array.tolist(), edges_y, edges_x)
        else:
            raise ValueError(f"region {i}: expected an xyxy box or an H×W mask, got shape {array.shape}")
        if not cover.any():
            raise ValueError(f"region {i} covers no pixel of the {width}×{height} image")
        out.append(cover.reshape(-1))
    return np.stack(out) if out else np.zeros((0, (len(edges_y) - 1) * (len(edges_x) - 1)))


def attention_pool(head: Any, hidden: Any, weights: Any) -> Any:
    """Embeddings ``(R, D)`` of ``R`` regions from one image's patch tokens ``hidden`` ``(N, D)``: SigLIP's
    attention-pooling ``head`` (probe query, ``torch.nn.MultiheadAttention``, residual MLP) with ``log(weights)``
    ``(R, N)`` added to each head's attention logits (see the module docstring). All-ones weights give
    ``head(hidden[None])[0]``."""
    # torch is heavy: imported on first use
    import torch
    import torch.nn.functional as F

    attn = head.attention
    if getattr(attn, "bias_k", None) is not None or getattr(attn, "add_zero_attn", False):
        raise ValueError("attention_pool: the pooling head's attention has extra key/value biases, not supported")
    dim, heads = int(attn.embed_dim), int(attn.num_heads)
    head_dim = dim // heads
    if attn._qkv_same_embed_dim:
        wq, wk, wv = attn.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight
    bq, bk, bv = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
    q = F.linear(head.probe.reshape(1, dim), wq, bq).reshape(heads, head_dim)
    k = F.linear(hidden, wk, bk).reshape(-1, heads, head_dim)
    v = F.linear(hidden, wv, bv).reshape(-1, heads, head_dim)
    logits = torch.einsum("hd,nhd->hn", q, k) / math.sqrt(head_dim)
    bias = torch.log(weights.to(device=logits.device, dtype=torch.float32))
    probs = torch.softmax(logits.float()[None] + bias[:, None, :], dim=-1).to(v.dtype)
    pooled = torch.einsum("rhn,nhd->rhd", probs, v).reshape(-1, dim)
    pooled = attn.out_proj(pooled)
    return pooled + head.mlp(head.layernorm(pooled))
