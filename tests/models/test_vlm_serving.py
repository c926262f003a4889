"""Serving paths of the VLM adapter: Florence-2 encodes an image once for all its prompts with the same outputs as
encoding it for each, and the vLLM backend's use of vLLM's offline multimodal API (a recording stand-in: vLLM is
GPU-only and not installed here)."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.imaging import ImageCache
from grand_engine.models.llm import greedy_generation_config
from grand_engine.models.vlm import REGION_TO_DESCRIPTION, VLM, box_to_loc_tokens, clip_box

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def florence(tiny_dir: Path) -> VLM:
    adapter = load_adapter(ModelSpec(id=str(tiny_dir / "florence2"), family="vlm", options={"max_batch_size": 4}))
    assert isinstance(adapter, VLM)
    return adapter


def _read_only(seed: int, shape: tuple[int, int]) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)
    image.flags.writeable = False
    return image


def _count_vision(adapter: VLM, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the batch size of every vision-tower pass."""
    calls: list[int] = []
    original = adapter.model.get_image_features

    def counted(pixel_values, **kwargs):
        calls.append(int(pixel_values.shape[0]))
        return original(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(adapter.model, "get_image_features", counted)
    return calls


def _reference(adapter: VLM, images: list, prompts: list[str], new: int) -> tuple[list[str], object]:
    """What the model gives when every prompt gets its own copy of its image (pixel values into ``generate``)."""
    import torch

    inputs = adapter.processor(images=[Image.fromarray(np.asarray(i)) for i in images], text=prompts,
                               return_tensors="pt", padding=True)  # fmt: skip
    config = greedy_generation_config(new, adapter.eos_ids, adapter.tokenizer.pad_token_id)
    with torch.inference_mode():
        out = adapter.model.generate(**inputs, generation_config=config)
        encoder = adapter.model(**inputs).encoder_last_hidden_state
    texts = [adapter.tokenizer.decode(row[1:].tolist(), skip_special_tokens=False) for row in out]
    return [adapter._strip_specials(t) for t in texts], encoder


def test_region_descriptions_encode_each_image_once_and_match_per_prompt_encoding(florence, monkeypatch) -> None:
    import torch

    a, b = _read_only(0, (200, 150)), _read_only(1, (120, 160))
    boxes = [[(10, 20, 100, 150), (0, 0, 150, 200), (5, 5, 50, 60)], [(0, 0, 80, 60), (40, 30, 160, 120)]]
    calls = _count_vision(florence, monkeypatch)
    florence.features = ImageCache(0)  # nothing kept between calls: only the within-call reuse
    got = florence.region_descriptions([a, b], boxes, max_new_tokens=10)
    assert calls == [2]  # one pass for the two distinct images, not one per box
    prompts = [REGION_TO_DESCRIPTION + box_to_loc_tokens(clip_box(x, w, h), (w, h))
               for (w, h), bs in (((150, 200), boxes[0]), ((160, 120), boxes[1])) for x in bs]  # fmt: skip
    texts, encoder = _reference(florence, [a, a, a, b, b], prompts, 10)
    sizes = [(150, 200)] * 3 + [(160, 120)] * 2
    expected = [florence.parse_florence(t, REGION_TO_DESCRIPTION, s) for t, s in zip(texts, sizes, strict=True)]
    assert got[0] + got[1] == expected
    # the encoder sees the same inputs as the model's own forward
    sources = [a, a, a, b, b]
    features = florence._florence_features(sources, [Image.fromarray(np.asarray(x)) for x in sources])
    mine = florence._florence_inputs(features, prompts, sources)
    assert torch.allclose(mine["encoder_outputs"].last_hidden_state, encoder, atol=1e-5)


def test_features_are_kept_for_a_live_read_only_image_only(florence, monkeypatch) -> None:
    calls = _count_vision(florence, monkeypatch)
    florence.features = ImageCache(4)
    image = _read_only(2, (100, 100))
    spans = [(0, 5)]
    first = florence.ground_phrases_batch([(image, "a dog", spans), (image, "a cat on a mat", [(0, 5)])])
    again = florence.ground_phrases(image, "a dog", spans)
    assert calls == [1]  # the second caption and the second call reuse the first encoding
    assert again == first[0]
    writable = np.array(image)  # same pixels, but it could change: encoded every call
    florence.phrase_grounding(writable, "a dog", max_new_tokens=8)
    florence.phrase_grounding(writable, "a dog", max_new_tokens=8)
    assert calls == [1, 1, 1]
    assert len(florence.features) == 1


def test_image_cache_forgets_dead_and_old_images() -> None:
    cache = ImageCache(2)
    a, b, c = (_read_only(i, (4, 4)) for i in range(3))
    cache.put(a, "A")
    cache.put(b, "B")
    cache.put(c, "C")  # over the size: a goes
    assert (cache.get(a), cache.get(b), cache.get(c)) == (None, "B", "C")
    del b
    assert len(cache) == 2 and cache.get(_read_only(1, (4, 4))) is None  # equal pixels, another object


def test_vllm_backend_sends_multimodal_requests_with_prefix_caching(tiny_dir: Path, monkeypatch) -> None:
    """The engine arguments and requests against a recording stand-in for ``vllm``."""
    calls: dict = {}

    class Engine:
        def __init__(self, **kwargs):
            calls["engine"] = kwargs

        def generate(self, requests, sampling_params, use_tqdm):
            calls["requests"], calls["params"] = requests, sampling_params
            reasons = ["stop", "length"]
            return [
                types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f" Outdoor scene {i}", finish_reason=r)])
                for i, r in enumerate(reasons[: len(requests)])
            ]

    fake = types.ModuleType("vllm")
    fake.LLM = Engine
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    spec = ModelSpec(
        id=str(tiny_dir / "qwen3-vl"),
        family="vlm",
        backend="vllm",
        dtype="bfloat16",
        options={"max_pixels": 262144, "gpu_memory_utilization": 0.2, "max_model_len": 4096, "kv_cache_dtype": "fp8"},
    )
    adapter = load_adapter(spec)
    images = [_read_only(3, (60, 80)), _read_only(4, (50, 50))]
    out = adapter.generate(images, "Which scene is this?", max_new_tokens=7, do_sample=True, temperature=0.2,
                           top_p=0.9, seed=[11, 12])  # fmt: skip
    assert [(g.text, g.finish_reason) for g in out] == [("Outdoor scene 0", "stop"), ("Outdoor scene 1", "length")]
    engine = calls["engine"]
    assert engine["enable_prefix_caching"] is True
    assert engine["limit_mm_per_prompt"] == {"image": 1}
    assert engine["mm_processor_kwargs"] == {"max_pixels": 262144}
    assert (engine["gpu_memory_utilization"], engine["max_model_len"], engine["dtype"]) == (0.2, 4096, "bfloat16")
    assert engine["kv_cache_dtype"] == "fp8"
    first = calls["requests"][0]
    # the image comes first in the user turn, so a second question on it shares the cached prefix
    assert first["prompt"].count("<|image_pad|>") == 1
    assert first["prompt"].index("<|image_pad|>") < first["prompt"].index("Which scene is this?")
    assert np.array_equal(np.asarray(first["multi_modal_data"]["image"]), images[0])
    assert calls["params"][1] == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 7, "seed": 12}


def test_vllm_backend_refuses_an_encoder_decoder(tiny_dir: Path, monkeypatch) -> None:
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kw: pytest.fail("the engine must not be built")
    monkeypatch.setitem(sys.modules, "vllm", fake)
    with pytest.raises(ValueError, match="encoder-decoder: the vllm backend serves chat VLMs"):
        load_adapter(ModelSpec(id=str(tiny_dir / "florence2"), family="vlm", backend="vllm"))
    with pytest.raises(ValueError, match="unknown vlm backend 'sglang'"):
        load_adapter(ModelSpec(id=str(tiny_dir / "florence2"), family="vlm", backend="sglang"))
