"""Object presence-driven object-level context: CASS's adjustment of the text embeddings to the image.

CASS (Kim et al., CVPR 2025) estimates from CLIP's global image embedding how likely each queried class is to be
present (the *object presence prior*), and, within groups of related classes, moves the text embedding of the class
most likely present towards what that object looks like in this image. This module's concrete steps:

1. :func:`presence_prior` — ``P = softmax(scale · cos(global image embedding, text embedding_c))`` over the
   vocabulary (zero-shot classification of the whole image);
2. :func:`class_groups` — hierarchical (average-linkage) clustering of the text embeddings by cosine distance, cut
   at ``max_distance``: classes closer than that in text space form a group (``sky``/``clouds``, ``cat``/``dog``);
3. :func:`object_features` — for each class, the L2-normalised mean of the image's patch embeddings weighted by the
   patches' initial probability of that class (the object as it appears in this image);
4. :func:`adjust_text_embeddings` — in each group, the class with the highest presence prior (first on ties; only
   when its prior is at least ``min_presence``) gets ``t' = normalize((1 - w) · t + w · o)``; the other classes
   keep their embedding, so a class absent from the image is not pulled onto pixels of a present neighbour;
5. :func:`class_probabilities` — per patch ``(1 - β) · softmax(scale · cos(patch, t'_c)) + β · P_c``: the presence
   prior also reweights each pixel's class distribution towards the classes likely present.

All embeddings are L2-normalised rows; every function takes and returns torch tensors (float32) except
:func:`class_groups` (numpy, run once per vocabulary on the CPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "adjust_text_embeddings",
    "class_groups",
    "class_probabilities",
    "object_features",
    "presence_prior",
]


def presence_prior(global_embed: torch.Tensor, text_embeds: torch.Tensor, scale: float) -> torch.Tensor:
    """``(C,)`` probabilities that each class is in the image: ``softmax(scale · cos(global_embed, text_c))``."""
    import torch.nn.functional as F

    g = F.normalize(global_embed.float().reshape(-1), dim=-1)
    t = F.normalize(text_embeds.float(), dim=-1)
    return (scale * (t @ g)).softmax(-1)


def class_groups(text_embeds: np.ndarray, max_distance: float) -> np.ndarray:
    """``(C,)`` int64 group ids (numbered in first-seen order) from average-linkage clustering of the text
    embeddings by cosine distance ``1 - cos``, cut so that every group's clusters merged at distance
    ``<= max_distance``. ``max_distance = 0`` puts every class in its own group (unless embeddings coincide)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    emb = np.asarray(text_embeds, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"text embeddings must be a non-empty (C, E) matrix, got shape {emb.shape}")
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance!r}")
    if emb.shape[0] == 1:
        return np.zeros(1, dtype=np.int64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    # cosine distances can come out a hair below 0 for equal vectors; linkage wants them non-negative
    n = emb.shape[0]
    dist = np.clip(1.0 - emb @ emb.T, 0.0, 2.0)[np.triu_indices(n, 1)]
    labels = fcluster(linkage(dist, method="average"), t=max_distance, criterion="distance")
    _, first = np.unique(labels, return_index=True)
    renumber = {int(labels[i]): k for k, i in enumerate(sorted(first))}
    return np.array([renumber[int(v)] for v in labels], dtype=np.int64)


def object_features(patch_embeds: torch.Tensor, patch_probs: torch.Tensor) -> torch.Tensor:
    """``(C, E)``: per class, the L2-normalised mean of the patch embeddings ``(P, E)`` weighted by the patches'
    probabilities of that class ``(P, C)`` (a zero row for a class no patch gives any probability)."""
    import torch.nn.functional as F

    if patch_embeds.shape[0] != patch_probs.shape[0]:
        raise ValueError(f"{patch_embeds.shape[0]} patch embeddings but {patch_probs.shape[0]} probability rows")
    return F.normalize(patch_probs.float().transpose(0, 1) @ patch_embeds.float(), dim=-1)


def adjust_text_embeddings(
    text_embeds: torch.Tensor,
    objects: torch.Tensor,
    presence: torch.Tensor,
    groups: np.ndarray,
    weight: float,
    min_presence: float = 0.0,
) -> torch.Tensor:
    """Text embeddings ``(C, E)`` with, in each group, the class of highest ``presence`` moved towards its object
    feature: ``normalize((1 - weight) · t + weight · o)`` (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"text adjustment weight must be in [0, 1], got {weight!r}")
    groups = np.asarray(groups).reshape(-1)
    n = text_embeds.shape[0]
    if not (objects.shape[0] == presence.shape[0] == groups.shape[0] == n):
        raise ValueError(
            f"{n} text embeddings, {objects.shape[0]} object features, {presence.shape[0]} presence values and "
            f"{groups.shape[0]} group ids must agree"
        )
    text = F.normalize(text_embeds.float(), dim=-1)
    prior = presence.detach().float().cpu().numpy()
    chosen = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        best = int(members[np.argmax(prior[members])])  # argmax: first on ties
        if prior[best] >= min_presence:
            chosen.append(best)
    if not chosen or weight == 0.0:
        return text
    index = torch.as_tensor(chosen, device=text.device)
    out = text.clone()
    moved = (1 - weight) * text[index] + weight * objects[index].float().to(text.device)
    out[index] = F.normalize(moved, dim=-1)
    return out


def class_probabilities(
    patch_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    scale: float,
    presence: torch.Tensor | None = None,
    presence_weight: float = 0.0,
) -> torch.Tensor:
    """``(P, C)`` per-patch class probabilities: ``(1 - β) · softmax(scale · cos(patch, text)) + β · presence``
    (``β = presence_weight``; with no ``presence`` only the softmax)."""
    import torch.nn.functional as F

    if not 0.0 <= presence_weight <= 1.0:
        raise ValueError(f"presence weight must be in [0, 1], got {presence_weight!r}")
    probs = (scale * F.normalize(patch_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T).softmax(
        -1
    )
    if presence is None or presence_weight == 0.0:
        return probs
    return (1 - presence_weight) * probs + presence_weight * presence.float().to(probs.device).unsqueeze(0)
