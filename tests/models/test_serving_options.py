"""Adapter options for GPU serving, checked on CPU with tiny checkpoints: SAM image embeddings computed once per image
and shared by the stages of a process, autocast, ``torch.compile`` (off by default) and the attention kernels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import autocast_dtype, compile_module, load_adapter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BOXES = np.array([[30, 20, 150, 100], [0, 0, 60, 50]], dtype=np.float32)


def _image(seed: int, writeable: bool = False) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    image.flags.writeable = writeable
    return image


@pytest.mark.parametrize(("folder", "family"), [("sam-vit-tiny", "sam"), ("sam2", "sam2")])
def test_box_prompt_calls_on_one_image_share_its_embedding(tiny_dir: Path, folder: str, family: str) -> None:
    spec = ModelSpec(id=str(tiny_dir / folder), family=family, dtype="float32", options={"embedding_cache": 2})
    sam = load_adapter(spec)
    assert load_adapter(spec) is sam  # a second stage of the process gets the same adapter
    image = _image(0)
    before = sam.encoded
    first = sam.segment_boxes(image, BOXES)
    second = sam.segment_boxes(image, BOXES[::-1], max_boxes_per_call=1)  # another stage, other boxes
    assert sam.encoded == before + 1
    assert second == first[::-1]
    copy = np.array(image)  # writeable: may change between calls, so it is encoded every time
    assert sam.segment_boxes(copy, BOXES) == first
    sam.segment_boxes(copy, BOXES)
    assert sam.encoded == before + 3


def test_sam_autocast_runs_the_encoder_in_bfloat16(tiny_dir: Path) -> None:
    import torch

    spec = ModelSpec(id=str(tiny_dir / "sam-vit-tiny"), family="sam", options={"autocast": "bfloat16"})
    sam = load_adapter(spec)
    masks, ious = sam.segment_boxes_with_scores(_image(1), BOXES)
    assert len(masks) == 2 and all(m["size"] == [200, 300] for m in masks) and ious.dtype == np.float32
    image = _image(2, writeable=True)
    sam.set_image(image)
    low = sam.predictor.features.float()
    full = load_adapter(spec.model_copy(update={"options": {}}))
    full.set_image(image)
    high = full.predictor.features
    # the encoder's matrix products ran in bfloat16: close to float32's result, not equal to it
    assert not torch.equal(low, high)
    assert torch.allclose(low, high, atol=0.1 * float(high.abs().max()))
    with pytest.raises(ValueError, match="autocast must be 'bfloat16' or 'float16'"):
        autocast_dtype("float32")


def test_compile_is_off_unless_asked_and_keeps_the_outputs(tiny_dir: Path) -> None:
    import torch

    plain = ModelSpec(id=str(tiny_dir / "siglip2"), family="hf_clip", dtype="float32")
    compiled = plain.model_copy(update={"options": {"compile": {"backend": "eager", "dynamic": False}}})
    a, b = load_adapter(plain), load_adapter(compiled)
    assert not isinstance(a.model.vision_model, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(b.model.vision_model, torch._dynamo.eval_frame.OptimizedModule)
    images = [_image(3, writeable=True)[:64, :80]]
    assert np.allclose(a.encode_images(images), b.encode_images(images), atol=1e-6)
    module = torch.nn.Linear(2, 2)
    assert compile_module(module, plain) is module
    with pytest.raises(ValueError, match=r"unknown compile arguments \['options'\]"):
        compile_module(module, plain.model_copy(update={"options": {"compile": {"options": {}}}}))


def test_attention_implementation_is_an_option(tiny_dir: Path) -> None:
    spec = ModelSpec(id=str(tiny_dir / "siglip2"), family="hf_clip", dtype="float32")
    eager = load_adapter(spec.model_copy(update={"options": {"attn_implementation": "eager"}}))
    default = load_adapter(spec)
    assert eager.model.config._attn_implementation == "eager"
    assert default.model.config._attn_implementation == "sdpa"  # transformers' default where supported
    images = [_image(4, writeable=True)[:50, :50]]
    assert np.allclose(eager.encode_images(images), default.encode_images(images), atol=1e-5)
