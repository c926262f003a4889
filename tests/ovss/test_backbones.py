"""CLIP's side of CASS on the tiny checkpoint (window tokens against the model's own forward, the dense head by
hand) and the grid resampling by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.ovss.backbones import ClipDense, resample_grid


@pytest.fixture(scope="module")
def clip(cass_checkpoints: tuple[Path, Path]):
    return load_adapter(ModelSpec(id="local-dir:" + str(cass_checkpoints[0]), family="clip"))


def pixels(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, 3, 224, 224)).astype(np.float32))


def test_clip_window_tokens(clip) -> None:
    dense = ClipDense(clip)
    assert dense.image_size == (224, 224) and dense.grid == (14, 14) and dense.heads == 2
    x = pixels(0)
    with torch.inference_mode():
        tokens = dense.encode(x)
        expected = clip.model.encode_image(x, normalize=True)
    # the global embedding is exactly what CLIP's own encode_image gives for the window
    torch.testing.assert_close(tokens.global_embed, expected.float(), rtol=1e-4, atol=1e-5)
    assert tokens.keys.shape == (2, 2, 196, 32) and tokens.values.shape == (2, 2, 196, 32)
    with pytest.raises(ValueError, match="224"):
        dense.encode(torch.zeros(1, 3, 112, 112))


def test_clip_dense_with_cls_free_self_attention_matches_a_hand_computation(clip) -> None:
    dense = ClipDense(clip)
    x = pixels(1, batch=1)
    with torch.inference_mode():
        tokens = dense.encode(x)
        # identity attention: each patch keeps its own value → out_proj → ln_post → proj
        eye = torch.eye(196).expand(1, 2, 196, 196)
        out = dense.dense(tokens.values, eye)
        last = dense.last
        v = tokens.values.transpose(1, 2).reshape(1, 196, -1)
        by_hand = dense.visual.ln_post(
            torch.nn.functional.linear(v, last.attn.out_proj.weight, last.attn.out_proj.bias)
        )
        by_hand = torch.nn.functional.normalize(by_hand @ dense.visual.proj, dim=-1)
    assert out.shape == (1, 196, 32)
    torch.testing.assert_close(out, by_hand)


def test_resample_grid_by_hand() -> None:
    tokens = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 4, 1)  # a 2x2 grid
    assert resample_grid(tokens, (2, 2), (2, 2)) is tokens
    # halving with bilinear sampling reads the middle of the four cells: their mean
    torch.testing.assert_close(resample_grid(tokens, (2, 2), (1, 1)), torch.tensor([[[[1.5]]]]))
    one = torch.tensor([5.0]).reshape(1, 1, 1, 1)
    torch.testing.assert_close(resample_grid(one, (1, 1), (2, 3)), torch.full((1, 1, 6, 1), 5.0))
    with pytest.raises(ValueError, match="grid"):
        resample_grid(tokens, (3, 3), (1, 1))
