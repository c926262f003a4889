"""Known-answer tests of the object presence prior and the text-embedding adjustment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grand_engine.ovss import context

S = 1 / math.sqrt(2)
E = math.e


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_presence_prior_is_a_softmax_over_cosines() -> None:
    # cosines 1 and 0 (inputs are normalised first); scale 1 → (e, 1) / (e + 1)
    prior = context.presence_prior(t([2, 0]), t([[1, 0], [0, 3]]), scale=1.0)
    torch.testing.assert_close(prior, t([E / (E + 1), 1 / (E + 1)]))
    # scale 2: (e², 1) / (e² + 1)
    prior = context.presence_prior(t([1, 0]), t([[1, 0], [0, 1]]), scale=2.0)
    torch.testing.assert_close(prior, t([E**2 / (E**2 + 1), 1 / (E**2 + 1)]))


def angle(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_class_groups_by_average_linkage_on_cosine_distance() -> None:
    # distances: d(0°, 10°) = 1 - cos 10° ≈ 0.015, d(0°, 90°) = 1, d(10°, 90°) = 1 - sin 10° ≈ 0.826;
    # average linkage joins {0°, 10°} with 90° at (1 + 0.826) / 2 ≈ 0.913
    emb = np.array([angle(0), angle(10), angle(90)])
    assert context.class_groups(emb, 0.1).tolist() == [0, 0, 1]
    assert context.class_groups(emb, 0.9).tolist() == [0, 0, 1]
    assert context.class_groups(emb, 0.95).tolist() == [0, 0, 0]
    assert context.class_groups(emb, 0.0).tolist() == [0, 1, 2]
    # ids are numbered in first-seen order
    assert context.class_groups(emb[[2, 0, 1]], 0.1).tolist() == [0, 1, 1]
    assert context.class_groups(np.array([[1.0, 0.0]]), 0.1).tolist() == [0]
    with pytest.raises(ValueError, match="non-empty"):
        context.class_groups(np.zeros((0, 2)), 0.1)


def test_object_features_are_probability_weighted_means() -> None:
    patches = t([[1, 0], [0, 1], [0, 1]])
    probs = t([[1, 0], [0.5, 0.5], [0, 1]])
    # class 0: (1, 0) + 0.5 (0, 1) = (1, 0.5) → (2, 1)/√5; class 1: 1.5 (0, 1) → (0, 1)
    out = context.object_features(patches, probs)
    torch.testing.assert_close(out, t([[2 / math.sqrt(5), 1 / math.sqrt(5)], [0, 1]]))


def test_adjust_moves_each_groups_most_present_class_towards_its_object() -> None:
    text = t([[1, 0], [0, 1], [1, 0]])
    objects = t([[0, 1], [1, 0], [0, 1]])
    presence = t([0.2, 0.5, 0.3])
    groups = np.array([0, 0, 1])
    out = context.adjust_text_embeddings(text, objects, presence, groups, weight=0.5)
    # group 0: class 1 (0.5 > 0.2) → normalize(½ (0, 1) + ½ (1, 0)); group 1: class 2 alone → the same;
    # class 0 is not its group's most present class and keeps its embedding
    torch.testing.assert_close(out, t([[1, 0], [S, S], [S, S]]))
    # weight 0.25: normalize(¾ (0, 1) + ¼ (1, 0)) = (1, 3) / √10
    out = context.adjust_text_embeddings(text, objects, presence, groups, weight=0.25)
    torch.testing.assert_close(out[1], t([1 / math.sqrt(10), 3 / math.sqrt(10)]))
    # the inputs are not modified
    torch.testing.assert_close(text, t([[1, 0], [0, 1], [1, 0]]))


def test_adjust_min_presence_ties_and_zero_weight() -> None:
    text = t([[1, 0], [0, 1], [1, 0]])
    objects = t([[0, 1], [1, 0], [0, 1]])
    groups = np.array([0, 0, 1])
    # min presence 0.4: class 2 (0.3) is left alone, class 1 (0.5) is moved
    out = context.adjust_text_embeddings(text, objects, t([0.2, 0.5, 0.3]), groups, 0.5, min_presence=0.4)
    torch.testing.assert_close(out, t([[1, 0], [S, S], [1, 0]]))
    # a tie inside a group goes to the first class
    out = context.adjust_text_embeddings(text, objects, t([0.4, 0.4, 0.2]), groups, 0.5, min_presence=0.3)
    torch.testing.assert_close(out, t([[S, S], [0, 1], [1, 0]]))
    torch.testing.assert_close(context.adjust_text_embeddings(text, objects, t([0.4, 0.4, 0.2]), groups, 0.0), text)
    with pytest.raises(ValueError, match="must agree"):
        context.adjust_text_embeddings(text, objects[:2], t([0.4, 0.4, 0.2]), groups, 0.5)
    with pytest.raises(ValueError, match="weight"):
        context.adjust_text_embeddings(text, objects, t([0.4, 0.4, 0.2]), groups, 1.5)


def test_class_probabilities_with_and_without_presence() -> None:
    patches = t([[1, 0]])
    text = t([[1, 0], [0, 1]])
    plain = context.class_probabilities(patches, text, scale=1.0)
    torch.testing.assert_close(plain, t([[E / (E + 1), 1 / (E + 1)]]))
    mixed = context.class_probabilities(patches, text, 1.0, presence=t([0, 1]), presence_weight=0.5)
    torch.testing.assert_close(mixed, t([[0.5 * E / (E + 1), 0.5 / (E + 1) + 0.5]]))
    torch.testing.assert_close(mixed.sum(-1), t([1.0]))
    with pytest.raises(ValueError, match="presence weight"):
        context.class_probabilities(patches, text, 1.0, presence=t([0, 1]), presence_weight=2.0)
