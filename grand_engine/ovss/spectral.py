"""Spectral object-level context distillation: the graph steps of CASS (Kim et al., CVPR 2025, arXiv 2411.17150).

CASS treats each attention head of a vision foundation model (VFM, here DINO) and of CLIP's last layer as a graph
over the patch tokens, pairs VFM heads with CLIP heads by their spectra, and adds to each CLIP head a low-rank,
eigen-rescaled copy of its partner's graph, so that CLIP's attention groups the parts of one object the way the
VFM does. The paper describes the steps; the concrete formulas below are this module's reading of them:

* **graph** of a head (:func:`affinity_graph`) — the cosine similarity of its last-layer *keys*,
  ``G = K̂ K̂ᵀ`` (``K̂`` = L2-normalised rows). It is symmetric positive semi-definite, so its eigenvalues are
  real and non-negative, and its trace is the number of tokens;
* **eigendecomposition** (:func:`eigendecompose`) — eigenvalues in descending order with their eigenvectors;
* **energy-based low-rank approximation** (:func:`energy_rank`) — keep the fewest leading eigenpairs whose
  eigenvalues hold at least the fraction ``energy`` of the total;
* **dynamic eigenscaling** (:func:`eigenscale`) — rescale the kept eigenvalues by a power law that depends on the
  image's own spectrum: ``ψ(λᵢ) = S · λᵢ^(1+p) / Σⱼ λⱼ^(1+p)`` with ``S = Σⱼ λⱼ`` over the kept ones. The total
  is preserved; eigenvalues above the λ-weighted power mean grow, the others shrink, so the dominant (object-level)
  structure of the graph is emphasised and its weak, noisy directions fade. ``p = 0`` leaves them unchanged;
* **low-rank graph** (:func:`low_rank_graph`) — ``Ä = U_r diag(ψ) U_rᵀ``;
* **head matching** (:func:`spectrum`, :func:`wasserstein_1d`, :func:`match_heads`) — each head's spectrum is its
  top ``k`` eigenvalues normalised to sum 1; the cost between a VFM head and a CLIP head is the 1-D Wasserstein
  distance between the two spectra (as empirical distributions of ``k`` values); the Hungarian algorithm pairs
  the heads. CASS pairs heads to *complement* each other, so the assignment **maximises** the total distance by
  default (``complementary=False`` minimises it instead);
* **distilled attention** (:func:`distill_attention`) — CLIP head ``j`` attends with
  ``softmax((G_CLIP^j + Ä_VFM^{π(j)}) / τ)`` row by row; a CLIP head left without a partner (fewer VFM heads than
  CLIP heads) keeps ``softmax(G_CLIP^j / τ)``.

Every function works on the trailing matrix dimensions and broadcasts over leading batch/head dimensions, in
float32 (eigendecomposition in half precision is not supported by torch and would be unstable anyway).

A key graph ``K̂ K̂ᵀ`` of ``N`` tokens with ``d``-dimensional keys has rank at most ``d`` (64 for ViT-B heads,
196 tokens per 224² window). :func:`token_eigendecompose` therefore diagonalises the small ``d × d`` Gram matrix
``K̂ᵀ K̂`` instead (same non-zero eigenvalues; eigenvectors ``K̂ v / √λ``), and :func:`token_low_rank_graph` /
:func:`spectrum_from_eigenvalues` build on it: the results equal the graph-level functions' (tested), at a fraction
of the cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "affinity_graph",
    "distill_attention",
    "eigendecompose",
    "eigenscale",
    "energy_rank",
    "low_rank_graph",
    "match_heads",
    "reconstruct",
    "spectral_distances",
    "spectrum",
    "spectrum_from_eigenvalues",
    "token_eigendecompose",
    "token_low_rank_graph",
    "wasserstein_1d",
]

_ENERGY_SLACK = 1e-6
"""Relative slack when comparing cumulative energy with its target, so float rounding does not add a rank."""


def affinity_graph(tokens: torch.Tensor) -> torch.Tensor:
    """``(..., N, d)`` token features → ``(..., N, N)`` cosine-similarity graph (float32, symmetric PSD)."""
    import torch.nn.functional as F

    unit = F.normalize(tokens.float(), dim=-1)
    return unit @ unit.transpose(-1, -2)


def eigendecompose(graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues ``(..., N)`` in descending order and eigenvectors ``(..., N, N)`` (column ``i`` belongs to
    eigenvalue ``i``) of symmetric graphs. The input is symmetrised first, so rounding asymmetry is harmless."""
    import torch

    g = graph.float()
    values, vectors = torch.linalg.eigh((g + g.transpose(-1, -2)) / 2)  # ascending
    return values.flip(-1), vectors.flip(-1)


def energy_rank(eigenvalues: torch.Tensor, energy: float) -> torch.Tensor:
    """The smallest ``r`` (``(...,)`` int64, at least 1) such that the ``r`` leading eigenvalues hold at least the
    fraction ``energy`` of the total. ``eigenvalues`` are in descending order; negative ones count as 0."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    positive = eigenvalues.float().clamp(min=0)
    total = positive.sum(-1, keepdim=True)
    reached = positive.cumsum(-1) >= energy * total * (1 - _ENERGY_SLACK)
    # index of the first eigenvalue at which the target is reached, plus one; an all-zero spectrum gives 1
    rank = reached.float().argmax(-1) + 1
    return rank.clamp(min=1, max=eigenvalues.shape[-1])


def eigenscale(eigenvalues: torch.Tensor, rank: torch.Tensor, power: float) -> torch.Tensor:
    """Dynamic eigenscaling of the ``rank`` leading eigenvalues (``(...,)`` per matrix); the others become 0.

    ``ψ(λᵢ) = S · λᵢ^(1+power) / Σⱼ λⱼ^(1+power)`` over the kept eigenvalues (negative ones count as 0), with
    ``S`` their sum, so the kept energy is unchanged. ``power = 0`` returns the kept eigenvalues as they are.
    """
    import torch

    if power < 0:
        raise ValueError(f"power must be >= 0 (a negative power would flatten the spectrum), got {power!r}")
    values = eigenvalues.float().clamp(min=0)
    index = torch.arange(values.shape[-1], device=values.device)
    kept = torch.where(index < rank.unsqueeze(-1), values, torch.zeros_like(values))
    total = kept.sum(-1, keepdim=True)
    if power == 0:
        return kept
    # divide by the largest kept value first: the same ratios, no overflow of λ^(1+p)
    top = kept.amax(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    raised = (kept / top) ** (1 + power)
    norm = raised.sum(-1, keepdim=True)
    return torch.where(norm > 0, total * raised / norm.clamp(min=torch.finfo(torch.float32).tiny), kept)


def reconstruct(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, energy: float, power: float) -> torch.Tensor:
    """``U_r diag(ψ(λ)) U_rᵀ`` from eigenpairs in descending order (``(..., m)`` and ``(..., N, m)``)."""
    scaled = eigenscale(eigenvalues, energy_rank(eigenvalues, energy), power)
    return (eigenvectors * scaled.unsqueeze(-2)) @ eigenvectors.transpose(-1, -2)


def low_rank_graph(graph: torch.Tensor, energy: float, power: float) -> torch.Tensor:
    """``Ä = U_r diag(ψ(λ)) U_rᵀ``: the energy-based low-rank approximation of ``graph`` with dynamically scaled
    eigenvalues (see :func:`energy_rank` and :func:`eigenscale`)."""
    return reconstruct(*eigendecompose(graph), energy, power)


def token_eigendecompose(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of :func:`affinity_graph` ``(tokens)`` with non-zero eigenvalues possible, from the ``d × d``
    Gram matrix of the normalised tokens ``(..., N, d)``: eigenvalues ``(..., m)`` descending and eigenvectors
    ``(..., N, m)``, ``m = min(N, d)``. When ``d >= N`` this is :func:`eigendecompose` of the graph itself.
    Eigenvectors of (numerically) zero eigenvalues are returned as zero columns; they carry no energy."""
    import torch
    import torch.nn.functional as F

    unit = F.normalize(tokens.float(), dim=-1)
    n, d = unit.shape[-2:]
    if d >= n:
        return eigendecompose(unit @ unit.transpose(-1, -2))
    gram = unit.transpose(-1, -2) @ unit  # (..., d, d): same non-zero eigenvalues as the N x N graph
    values, small = eigendecompose(gram)
    values = values.clamp(min=0)
    floor = values[..., :1] * 1e-6
    usable = values > floor
    scale = torch.where(usable, values.clamp(min=torch.finfo(torch.float32).tiny).rsqrt(), torch.zeros_like(values))
    vectors = (unit @ small) * scale.unsqueeze(-2)  # U = K̂ V / √λ
    return torch.where(usable, values, torch.zeros_like(values)), vectors


def token_low_rank_graph(tokens: torch.Tensor, energy: float, power: float) -> torch.Tensor:
    """:func:`low_rank_graph` of :func:`affinity_graph` ``(tokens)``, computed through
    :func:`token_eigendecompose`."""
    return reconstruct(*token_eigendecompose(tokens), energy, power)


def spectrum(graph: torch.Tensor, k: int) -> torch.Tensor:
    """``(..., k)``: the ``k`` largest eigenvalues of each graph (negative ones as 0), normalised to sum 1 (all
    zeros for a zero graph); a graph with fewer than ``k`` nodes is padded with zeros."""
    import torch

    g = graph.float()
    return spectrum_from_eigenvalues(torch.linalg.eigvalsh((g + g.transpose(-1, -2)) / 2).flip(-1), k)


def spectrum_from_eigenvalues(eigenvalues: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`spectrum` from eigenvalues already in descending order ``(..., m)`` (``m < k`` pads with zeros)."""
    import torch

    if k < 1:
        raise ValueError(f"spectrum size must be at least 1, got {k!r}")
    values = eigenvalues.float().clamp(min=0)[..., :k]
    if values.shape[-1] < k:
        values = torch.nn.functional.pad(values, (0, k - values.shape[-1]))
    total = values.sum(-1, keepdim=True)
    return torch.where(total > 0, values / total.clamp(min=torch.finfo(torch.float32).tiny), values)


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1-D Wasserstein-1 distance between the empirical distributions of the values in ``a`` and ``b``
    (``(..., k)`` each, equal weights): the mean absolute difference of the sorted values."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"both spectra need the same number of values, got {a.shape[-1]} and {b.shape[-1]}")
    return (a.sort(-1).values - b.sort(-1).values).abs().mean(-1)


def spectral_distances(vfm_spectra: torch.Tensor, clip_spectra: torch.Tensor) -> torch.Tensor:
    """``(..., Hv, Hc)`` Wasserstein distances between every VFM head spectrum ``(..., Hv, k)`` and every CLIP
    head spectrum ``(..., Hc, k)``."""
    return wasserstein_1d(vfm_spectra.unsqueeze(-2), clip_spectra.unsqueeze(-3))


def match_heads(distances: np.ndarray, complementary: bool = True) -> np.ndarray:
    """For each CLIP head (column of the ``(Hv, Hc)`` distance matrix), the index of its VFM head (row), or -1
    when there are fewer VFM heads than CLIP heads and it is left out.

    The Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) finds the one-to-one pairing with the
    largest total distance (``complementary=True``, CASS's complementary matching) or the smallest one.
    """
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(distances, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"distances must be a (VFM heads, CLIP heads) matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("distances must be finite")
    rows, cols = linear_sum_assignment(cost, maximize=complementary)
    out = np.full(cost.shape[1], -1, dtype=np.int64)
    out[cols] = rows
    return out


def distill_attention(
    clip_graph: torch.Tensor, vfm_graph: torch.Tensor, assignment: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Row-stochastic attention ``(B, Hc, N, N)`` of every CLIP head with its matched VFM graph added.

    ``clip_graph`` is ``(B, Hc, N, N)``, ``vfm_graph`` ``(B, Hv, N, N)`` (already low-rank and rescaled),
    ``assignment`` ``(B, Hc)`` int64 from :func:`match_heads` (-1: no partner). Head ``j`` of window ``b`` gets
    ``softmax((clip_graph[b, j] + vfm_graph[b, assignment[b, j]]) / temperature)`` over the last dimension.
    """
    import torch

    if temperature <= 0:
        raise ValueError(f"attention temperature must be > 0, got {temperature!r}")
    if clip_graph.shape[-2:] != vfm_graph.shape[-2:]:
        raise ValueError(
            f"CLIP and VFM graphs must cover the same tokens, got {tuple(clip_graph.shape[-2:])} and "
            f"{tuple(vfm_graph.shape[-2:])}"
        )
    index = assignment.clamp(min=0).to(vfm_graph.device)
    gathered = torch.gather(
        vfm_graph.float(), 1, index[:, :, None, None].expand(-1, -1, *vfm_graph.shape[-2:])
    )  # (B, Hc, N, N)
    gathered = gathered * (assignment >= 0).to(gathered)[:, :, None, None]
    return torch.softmax((clip_graph.float() + gathered) / temperature, dim=-1)
