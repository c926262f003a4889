"""DINO ViT adapter (family ``dino``) on the tiny ``dino-vit`` checkpoint: the keys it returns are the last layer's
key projection of the layer's normalised input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.dino import DinoAdapter


@pytest.fixture(scope="module")
def dino(tiny_dir: Path) -> DinoAdapter:
    adapter = load_adapter(ModelSpec(id=str(tiny_dir / "dino-vit"), family="dino"))
    assert isinstance(adapter, DinoAdapter)
    return adapter


def test_loads_the_checkpoint_geometry_and_normalisation(dino: DinoAdapter) -> None:
    assert dino.image_size == (224, 224) and dino.patch_size == (16, 16) and dino.grid == (14, 14)
    assert dino.heads == 4
    assert dino.mean == pytest.approx((0.485, 0.456, 0.406)) and dino.std == pytest.approx((0.229, 0.224, 0.225))


def test_keys_are_the_last_layers_key_projection(dino: DinoAdapter) -> None:
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        keys = dino.last_layer_keys(x)
        hidden = dino.model(pixel_values=x, output_hidden_states=True).hidden_states[-2]  # input of the last layer
        layer = dino.last_layer
        expected = layer.attention.k_proj(layer.layernorm_before(hidden))[:, 1:]  # patch tokens, CLS dropped
    assert keys.shape == (2, 4, 196, 16)
    torch.testing.assert_close(keys, expected.reshape(2, 196, 4, 16).transpose(1, 2))
    with pytest.raises(ValueError, match="224"):
        dino.last_layer_keys(torch.zeros(1, 3, 112, 112))
