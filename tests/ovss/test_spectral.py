"""Known-answer tests of CASS's graph steps on small hand-made matrices (answers worked out by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grand_engine.ovss import spectral

S = 1 / math.sqrt(2)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_affinity_graph_is_the_cosine_similarity_of_tokens() -> None:
    # rows normalise to (1, 0), (1/√2, 1/√2), (0, 1)
    graph = spectral.affinity_graph(t([[1, 0], [1, 1], [0, 2]]))
    torch.testing.assert_close(graph, t([[1, S, 0], [S, 1, S], [0, S, 1]]))


def test_eigendecompose_orders_eigenvalues_descending() -> None:
    # [[2, 1], [1, 2]] has eigenvalue 3 on (1, 1)/√2 and 1 on (1, -1)/√2
    values, vectors = spectral.eigendecompose(t([[2, 1], [1, 2]]))
    torch.testing.assert_close(values, t([3, 1]))
    torch.testing.assert_close(vectors[:, 0].abs(), t([S, S]))
    torch.testing.assert_close(vectors[:, 1] * torch.sign(vectors[0, 1]), t([S, -S]))
    torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, t([[2, 1], [1, 2]]))


def test_eigendecompose_batches_over_heads() -> None:
    graphs = torch.stack([torch.diag(t([1, 5, 3])), torch.diag(t([2, 2, 7]))])
    values, _ = spectral.eigendecompose(graphs)
    torch.testing.assert_close(values, t([[5, 3, 1], [7, 2, 2]]))


@pytest.mark.parametrize("energy,rank", [(0.5, 1), (0.8, 2), (0.81, 3), (1.0, 3)])
def test_energy_rank_keeps_the_fewest_eigenvalues_reaching_the_energy(energy: float, rank: int) -> None:
    # eigenvalues 5, 3, 2 (total 10): cumulative fractions 0.5, 0.8, 1.0
    assert spectral.energy_rank(t([5, 3, 2]), energy).item() == rank


def test_energy_rank_per_matrix_and_negative_eigenvalues() -> None:
    # second spectrum: negatives count as 0, so 4 alone holds all the energy
    ranks = spectral.energy_rank(t([[5, 3, 2], [4, 0, -1]]), 0.9)
    assert ranks.tolist() == [3, 1]
    assert spectral.energy_rank(t([0, 0]), 0.9).item() == 1  # a zero graph keeps one (zero) eigenpair
    with pytest.raises(ValueError, match="energy"):
        spectral.energy_rank(t([1, 0]), 0.0)


def test_eigenscale_amplifies_large_and_suppresses_small_keeping_the_total() -> None:
    # p = 1: squares 9 and 1 share the kept total 4 → 3.6 and 0.4
    torch.testing.assert_close(spectral.eigenscale(t([3, 1]), torch.tensor(2), 1.0), t([3.6, 0.4]))
    # 2, 1, 1: squares 4, 1, 1 share 4 → 8/3, 2/3, 2/3
    torch.testing.assert_close(spectral.eigenscale(t([2, 1, 1]), torch.tensor(3), 1.0), t([8 / 3, 2 / 3, 2 / 3]))
    # p = 0 keeps the eigenvalues; rank 1 drops the second
    torch.testing.assert_close(spectral.eigenscale(t([3, 1]), torch.tensor(2), 0.0), t([3, 1]))
    torch.testing.assert_close(spectral.eigenscale(t([3, 1]), torch.tensor(1), 1.0), t([3, 0]))
    with pytest.raises(ValueError, match="power"):
        spectral.eigenscale(t([3, 1]), torch.tensor(2), -1.0)


def test_eigenscale_with_a_rank_per_matrix() -> None:
    out = spectral.eigenscale(t([[3, 1], [3, 1]]), torch.tensor([2, 1]), 1.0)
    torch.testing.assert_close(out, t([[3.6, 0.4], [3, 0]]))


def test_low_rank_graph_reconstructs_from_the_kept_scaled_eigenpairs() -> None:
    graph = t([[2, 1], [1, 2]])
    # energy 0.75: 3 of 4 is reached by the first eigenpair → 3 · (1,1)(1,1)ᵀ / 2
    torch.testing.assert_close(spectral.low_rank_graph(graph, 0.75, 1.0), t([[1.5, 1.5], [1.5, 1.5]]))
    # all eigenpairs, p = 1: 3.6 · [[½, ½], [½, ½]] + 0.4 · [[½, -½], [-½, ½]]
    torch.testing.assert_close(spectral.low_rank_graph(graph, 1.0, 1.0), t([[2.0, 1.6], [1.6, 2.0]]))
    # all eigenpairs, no rescaling: the graph itself
    torch.testing.assert_close(spectral.low_rank_graph(graph, 1.0, 0.0), graph)


def test_spectrum_is_the_normalised_top_k_eigenvalues() -> None:
    graph = torch.diag(t([3, 5, 2]))
    torch.testing.assert_close(spectral.spectrum(graph, 2), t([0.625, 0.375]))  # 5 and 3 of 8
    torch.testing.assert_close(spectral.spectrum(graph, 4), t([0.5, 0.3, 0.2, 0.0]))  # padded
    torch.testing.assert_close(spectral.spectrum(torch.zeros(2, 2), 2), t([0, 0]))


def test_wasserstein_1d_by_hand() -> None:
    # sorted (0.375, 0.625) vs (0.5, 0.5): mean(0.125, 0.125)
    assert spectral.wasserstein_1d(t([0.625, 0.375]), t([0.5, 0.5])).item() == pytest.approx(0.125)
    # (0, 0, 1) vs thirds: (1/3 + 1/3 + 2/3) / 3 = 4/9, in any order
    assert spectral.wasserstein_1d(t([0, 1, 0]), t([1, 1, 1]) / 3).item() == pytest.approx(4 / 9)
    assert spectral.wasserstein_1d(t([0.2, 0.8]), t([0.8, 0.2])).item() == 0.0
    with pytest.raises(ValueError, match="same number"):
        spectral.wasserstein_1d(t([1.0]), t([0.5, 0.5]))


def test_match_heads_complementary_and_similar() -> None:
    distances = np.array([[1.0, 5.0], [4.0, 1.0]])  # rows: VFM heads, columns: CLIP heads
    # maximum total distance: CLIP 0 ← VFM 1 (4) and CLIP 1 ← VFM 0 (5) = 9 > 2
    assert spectral.match_heads(distances).tolist() == [1, 0]
    assert spectral.match_heads(distances, complementary=False).tolist() == [0, 1]


def test_match_heads_with_unequal_head_counts() -> None:
    # 3 VFM heads, 2 CLIP heads: CLIP 0 ← VFM 1 (3) + CLIP 1 ← VFM 2 (2) = 5 beats every other pairing
    assert spectral.match_heads(np.array([[0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])).tolist() == [1, 2]
    # 1 VFM head, 2 CLIP heads: the head is given where the distance is larger, the other CLIP head gets none
    assert spectral.match_heads(np.array([[1.0, 3.0]])).tolist() == [-1, 0]
    with pytest.raises(ValueError, match="finite"):
        spectral.match_heads(np.array([[np.nan]]))


def test_spectra_drive_the_matching() -> None:
    # all-ones graph: spectrum (1, 0, 0, 0); identity: (¼, ¼, ¼, ¼); their distance (3·¼ + ¾) / 4 = 0.375
    ones, eye = torch.ones(4, 4), torch.eye(4)
    vfm = spectral.spectrum(torch.stack([ones, eye]), 4)
    clip = spectral.spectrum(torch.stack([ones, eye]), 4)
    distances = spectral.spectral_distances(vfm, clip)
    torch.testing.assert_close(distances, t([[0, 0.375], [0.375, 0]]))
    # complementary: the rank-1 CLIP head gets the flat-spectrum VFM head and the other way round
    assert spectral.match_heads(distances.numpy()).tolist() == [1, 0]


def test_distill_attention_adds_the_matched_graph_before_the_softmax() -> None:
    clip = torch.zeros(1, 2, 2, 2)
    vfm = torch.zeros(1, 1, 2, 2)
    vfm[0, 0, 0, 0] = math.log(3)
    attention = spectral.distill_attention(clip, vfm, torch.tensor([[0, -1]]), temperature=1.0)
    # head 0: row 0 softmax(ln 3, 0) = (¾, ¼), row 1 uniform; head 1 has no partner: uniform
    torch.testing.assert_close(attention[0, 0], t([[0.75, 0.25], [0.5, 0.5]]))
    torch.testing.assert_close(attention[0, 1], t([[0.5, 0.5], [0.5, 0.5]]))


def test_distill_attention_temperature_and_checks() -> None:
    clip = torch.zeros(1, 1, 1, 2)
    clip[0, 0, 0, 1] = math.log(2)
    vfm = torch.zeros(1, 1, 1, 2)
    # logits (0, ln 2) / 0.5 = (0, 2 ln 2) → (1/5, 4/5)
    attention = spectral.distill_attention(clip, vfm, torch.tensor([[0]]), temperature=0.5)
    torch.testing.assert_close(attention[0, 0, 0], t([0.2, 0.8]))
    with pytest.raises(ValueError, match="temperature"):
        spectral.distill_attention(clip, vfm, torch.tensor([[0]]), temperature=0.0)
    with pytest.raises(ValueError, match="same tokens"):
        spectral.distill_attention(torch.zeros(1, 1, 3, 3), vfm, torch.tensor([[0]]), temperature=1.0)


def test_token_level_eigendecomposition_equals_the_graph_level_one() -> None:
    # 10 tokens with 3-dimensional keys: the 10 x 10 graph has rank 3; the 3 x 3 Gram route must agree with it
    tokens = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 10, 3)).astype(np.float32))
    graph = spectral.affinity_graph(tokens)
    values, vectors = spectral.token_eigendecompose(tokens)
    assert values.shape == (2, 3) and vectors.shape == (2, 10, 3)
    torch.testing.assert_close(values, spectral.eigendecompose(graph)[0][:, :3], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        vectors @ torch.diag_embed(values) @ vectors.transpose(1, 2), graph, rtol=1e-4, atol=1e-4
    )
    for energy, power in ((0.6, 1.0), (0.95, 0.5), (1.0, 0.0)):
        torch.testing.assert_close(
            spectral.token_low_rank_graph(tokens, energy, power),
            spectral.low_rank_graph(graph, energy, power),
            rtol=1e-4,
            atol=1e-4,
        )
    torch.testing.assert_close(
        spectral.spectrum_from_eigenvalues(values, 5), spectral.spectrum(graph, 5), rtol=1e-4, atol=1e-5
    )


def test_token_level_eigendecomposition_with_as_many_dimensions_as_tokens() -> None:
    # d >= N: the graph route itself; two equal tokens give eigenvalues 2 and 0
    values, _ = spectral.token_eigendecompose(t([[1, 0, 0], [2, 0, 0]]))
    torch.testing.assert_close(values, t([2, 0, 0])[:2], atol=1e-6, rtol=0)
