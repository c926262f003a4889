"""The cost model's serving paths: pooled crop classifiers against a closed form, a prompt prefix served from vLLM's
cache, a vision encoding reused for several prompts, a stage's own resize, an FP8 key/value cache, the decode batch
of each call, the scene-graph prompt by section and the ovss windows."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from grand_engine.cost import ModelCache, Workload, cost_role
from grand_engine.cost.archs import Runtime
from grand_engine.cost.counting import count_flops
from grand_engine.cost.workload import Context, scene_graph_parts, stage_calls


def spec(model_id: str, family: str, backend: str | None = None, **options) -> NS:
    return NS(id=model_id, family=family, dtype="auto", backend=backend, options=options)


def stage(name: str, batch: int = 8, **params) -> NS:
    return NS(name=name, resources=NS(gpus=1.0, batch_size=batch), **params)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def test_pooled_regions_cost_one_image_pass_and_a_head_per_region(tiny_dir: Path, cache) -> None:
    """Pooling R regions = the image pass (the tower with its own head, as the adapter runs it) + the pooling head
    once (probe query, keys and values of the N patches, attention, output projection, MLP: 4·D² + 4·N·D² + 4·N·D +
    4·D·I) + (R - 1) × (attention over the patches, the output projection and the MLP: 2·N·D + 2·D² + 4·D·I; the keys
    and values are projected once for all regions)."""
    clip = spec(str(tiny_dir / "siglip2"), "hf_clip")
    crops = cost_role(stage("sam_classify"), "clip", clip, {}, Workload(), cache)
    pooled = cost_role(stage("sam_classify", mode="pooled"), "clip", clip, {}, Workload(), cache)
    (crop_call,) = crops.calls
    (pool_call,) = pooled.calls
    regions = 50  # 100 SA-1B masks × half over 1 % of the image
    assert (crop_call.call.kind, crop_call.call.per_image) == ("image", regions)
    assert (pool_call.call.kind, pool_call.call.per_image, pool_call.call.boxes) == ("pooled", 1, regions)
    d, i, n = 32, 64, (384 // 14) ** 2  # the tiny SigLIP 2: width 32, MLP 64, 27 × 27 patches
    once = 4 * d * d + 4 * n * d * d + 4 * n * d + 4 * d * i
    per_region = 2 * n * d + 2 * d * d + 4 * d * i
    assert pool_call.flops["image"] - crop_call.flops["image"] == once + (regions - 1) * per_region
    assert pooled.flops_per_image < crops.flops_per_image / 40


def _qwen_vl(tiny_dir: Path, backend: str | None) -> NS:
    return spec(str(tiny_dir / "qwen3-vl"), "vlm", backend, max_pixels=256 * 32 * 32)


def test_the_second_question_on_an_image_prefills_only_its_text_under_vllm(tiny_dir: Path, cache) -> None:
    import torch

    served = cost_role(stage("landmark"), "vlm", _qwen_vl(tiny_dir, "vllm"), {}, Workload(), cache)
    coarse, fine = served.calls
    assert fine.call.image_prefix_cached and "vision" not in fine.flops and "vision" in coarse.flops
    image, text = fine.image_tokens, fine.call.prompt_tokens
    arch, model = cache.model(_qwen_vl(tiny_dir, "vllm"), "bfloat16")
    rt = Runtime("meta", torch.bfloat16)
    expected = count_flops(lambda: arch.extend(model, rt, 1, text, arch.make_cache(model, rt, 1, image)))
    assert fine.flops["prefill"] == pytest.approx(expected, rel=1e-9)
    # transformers' generate re-encodes the image and prefills it for each question
    (both,) = cost_role(stage("landmark"), "vlm", _qwen_vl(tiny_dir, None), {}, Workload(), cache).calls
    assert both.call.per_image == 2 and both.flops["vision"] == coarse.flops["vision"]
    assert both.flops["prefill"] == pytest.approx(coarse.flops["prefill"], rel=1e-9)


def test_florence_regions_encode_the_image_once(tiny_dir: Path, cache) -> None:
    florence = spec(str(tiny_dir / "florence2"), "vlm")
    workload = Workload({"large_objects_per_image": 5})
    first, rest = cost_role(stage("region_attributes"), "vlm", florence, {}, workload, cache).calls
    assert (first.call.per_image, rest.call.per_image) == (1, 4)
    assert "vision" in first.flops and "vision" not in rest.flops and rest.call.vision_reused
    assert rest.flops["encoder"] == first.flops["encoder"]  # each region's prompt still goes through the encoder


def test_caption_blip2_is_costed_at_its_own_resize(tiny_dir: Path, cache) -> None:
    role = cost_role(stage("caption_blip2", long_side=384), "vlm", _qwen_vl(tiny_dir, None), {}, Workload(), cache)
    arch, _ = cache.model(_qwen_vl(tiny_dir, None), "bfloat16")
    (call,) = role.calls
    assert call.call.long_side == 384
    # 2250 × 1500 → 384 × 256 before the processor, which rounds to its 32-pixel grid
    assert call.input_size == arch.input_size(256, 384) == (256, 384)


def _llama(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 100,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_fp8_cache_halves_the_key_value_bytes(tmp_path: Path, cache) -> None:
    folder = str(_llama(tmp_path / "llama"))
    bf16 = cost_role(stage("extra_context", 32), "llm", spec(folder, "llm", "vllm"), {}, Workload(), cache)
    fp8 = cost_role(
        stage("extra_context", 32), "llm", spec(folder, "llm", "vllm", kv_cache_dtype="fp8"), {}, Workload(), cache
    )
    assert bf16.kv_bytes_per_token == 2 * 2 * 2 * 16 * 2  # K and V, 2 layers, 2 heads of 16, 2 bytes
    assert fp8.kv_bytes_per_token == bf16.kv_bytes_per_token // 2
    (a,), (b,) = bf16.calls, fp8.calls
    weights = bf16.decode_params * 2 / a.batch
    assert b.decode_bytes_per_token - weights == pytest.approx((a.decode_bytes_per_token - weights) / 2)


def test_each_call_decodes_the_sequences_the_stage_sends_together(tmp_path: Path, cache) -> None:
    folder = str(_llama(tmp_path / "llama_batch"))
    role = cost_role(stage("verify", 128), "llm", spec(folder, "llm", "vllm"), {}, Workload(), cache)
    checklists, regenerations = role.calls
    assert (checklists.call.per_image, checklists.batch) == (1.5, 192)  # 128 images × 1.5 checklists
    assert (regenerations.call.per_image, regenerations.batch) == (0.5, 64)  # half of them regenerated
    capped = cost_role(stage("verify", 128), "llm", spec(folder, "llm", "vllm", max_num_seqs=100), {}, Workload(),
                       cache)  # fmt: skip
    assert [c.batch for c in capped.calls] == [100, 64]


def test_scene_graph_sections_are_counted_apart() -> None:
    text = "Foreground:\nGroup 0: dog/a dog\n\nShort Captions:\na dog\n\nRelationships:\na dog, Group Ids: (0)\n\n"
    text += "Landmarks:\nOutdoor scene, Natural landscape"
    parts = scene_graph_parts([text])
    assert parts["objects"] == len("Foreground:\nGroup 0: dog/a dog\n\n")
    assert parts["captions"] == len("Short Captions:\na dog\n\n")
    assert parts["relationships"] == len("Relationships:\na dog, Group Ids: (0)\n\n")
    assert parts["relationship_lines"] == 1
    assert parts["landmarks"] == len("Landmarks:\nOutdoor scene, Natural landscape\n")
    assert sum(parts[k] for k in ("objects", "captions", "relationships", "landmarks")) == len(text) + 1


def test_ovss_runs_every_window_of_the_resized_image() -> None:
    c = Context(stage("ovss", cass={"short_side": 448}), "clip", spec("x", "clip"), {}, Workload(), frozenset())
    (call,) = stage_calls(c)
    # 1500 × 2250 → 448 × 672; 224 px windows every 112 px: 3 rows × 5 columns
    assert (call.per_image, call.image) == (15, "crop")
