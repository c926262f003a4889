"""The cost model (grand_engine.cost): FLOPs against hand counts, closed forms and published figures; the workload,
the decode bound and the report; the command's bad input; the full-size measurement without weights and the
prepared GPU session, both run on CPU with tiny configurations."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from grand_engine.cost import GPUS, ModelCache, RoleCost, Workload, cost_role
from grand_engine.cost.archs import Generative, Runtime, arch_for, processed_size, smart_resize
from grand_engine.cost.configs import find_config, shipped_keys
from grand_engine.cost.counting import count_flops, count_params
from grand_engine.cost.estimate import CallCost, count_decoder
from grand_engine.cost.report import CostReport
from grand_engine.cost.workload import Call, Context, stage_calls

REPO = Path(__file__).resolve().parents[2]
SAM_H = "/weights/sam_vit_h_4b8939.pth"
EVA02 = "hf-hub:timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k"
SESSION_STAGES = (
    "depth,tagging,detect_closed,detect_lvis,detect_ov,detect_ov2,sam_classify,label_assign,masks,ground_phrases,"
    "caption_vlm"
)
SESSION_PLANS = {
    "grand_h100.json": SESSION_STAGES,
    "grand2026_h100.json": SESSION_STAGES + ",ovss,region_attributes",
}
"""The committed plans of benchmarks/plans and the stages gpu_session.sh measures from each (its PROFILE)."""


def spec(model_id: str, family: str = "vlm", backend: str | None = None, **options) -> NS:
    return NS(id=model_id, family=family, dtype="auto", backend=backend, options=options)


def meta_rt():
    import torch

    return Runtime("meta", torch.bfloat16)


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def write_llama(folder: Path, layers: int = 1, vocab: int = 100) -> Path:
    """A tiny Llama configuration (grouped-query attention: 4 heads, 2 key/value heads of 16)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# -- FLOPs against hand counts --------------------------------------------------------------------------------


def test_a_linear_layer_costs_two_flops_per_multiply_add():
    import torch

    layer = torch.nn.Linear(64, 32, device="meta")
    x = torch.empty(3, 5, 64, device="meta")
    assert count_flops(lambda: layer(x)) == 2 * 3 * 5 * 64 * 32


def test_an_attention_block_matches_the_hand_count(tmp_path, cache):
    """One Llama layer over T tokens: the q, k, v, o projections, QKᵀ and AV (the counter counts the whole T×T
    score matrix), and the gated MLP's three matrices; the embedding lookup and norms cost no FLOPs."""
    arch, model = cache.model(spec(str(write_llama(tmp_path / "llama"))), "bfloat16")
    t, d, heads, kv, e, inner = 10, 64, 4, 2, 16, 96
    flops = count_flops(lambda: model.model(inputs_embeds=meta_rt().floats(1, t, d)))
    projections = 2 * t * d * heads * e + 2 * (2 * t * d * kv * e) + 2 * t * heads * e * d
    attention = 2 * (2 * t * t * heads * e)
    mlp = 3 * (2 * t * d * inner)
    assert flops == projections + attention + mlp


def test_a_decoding_step_reads_its_cache_and_projects_one_token(tmp_path, cache):
    """One new token over a cache of c tokens: per layer the projections of one token, attention over c + 1 keys,
    the MLP; then the output projection to the vocabulary."""
    arch, model = cache.model(spec(str(write_llama(tmp_path / "llama2", layers=3, vocab=100))), "bfloat16")
    assert isinstance(arch, Generative)
    rt, c = meta_rt(), 37
    flops = count_flops(lambda: arch.extend(model, rt, 1, 1, arch.make_cache(model, rt, 1, c)))
    d, heads, kv, e, inner = 64, 4, 2, 16, 96
    per_layer = 2 * d * heads * e + 2 * (2 * d * kv * e) + 2 * heads * e * d + 2 * (2 * (c + 1) * heads * e)
    per_layer += 3 * 2 * d * inner
    assert flops == 3 * per_layer + 2 * d * 100
    assert arch.kv_bytes_per_token(2) == 2 * 3 * kv * e * 2


def test_a_decoder_counted_on_one_and_two_layers_equals_the_full_count(tmp_path, cache):
    arch, model = cache.model(spec(str(write_llama(tmp_path / "llama4", layers=4))), "bfloat16")
    rt = meta_rt()

    def run():
        return arch.extend(model, rt, 1, 5, arch.make_cache(model, rt, 1, 20))

    full = count_flops(run)
    assert count_decoder(arch, model, ModelCache(), ("t",), run) == full
    assert len(model.model.layers) == 4 and model.config.num_hidden_layers == 4  # restored after truncation


# -- published figures ----------------------------------------------------------------------------------------


def test_sam_vit_h_matches_the_sam_paper(cache):
    """SAM ViT-H: 641 M parameters; its 1024×1024 image-encoder pass ~2.98 T multiply-adds (5.96 TFLOPs)."""
    arch, model = cache.model(spec(SAM_H, "sam"), "bfloat16")
    assert count_params(model) == pytest.approx(641e6, rel=0.002)
    flops = count_flops(lambda: arch.image(model, meta_rt(), 1, (1024, 1024), None))
    assert flops == pytest.approx(5.96e12, rel=0.01)


def test_sam_vit_h_built_by_transformers_is_the_same_network(cache):
    """Where segment-anything is missing (a bare GPU machine), transformers' SamModel is built from the same
    hyper-parameters: same encoder FLOPs, same parameters up to a duplicated positional table."""
    import torch

    from grand_engine.cost.archs import HfSam

    sam, model = cache.model(spec(SAM_H, "sam"), "bfloat16")
    hf = HfSam(sam.mc, config=sam.hf_config())
    hf_model = hf.build("meta", torch.bfloat16).requires_grad_(False)
    rt = meta_rt()
    assert count_params(hf_model) == pytest.approx(count_params(model), abs=1000)
    assert count_flops(lambda: hf.image(hf_model, rt, 1, (1024, 1024), None)) == count_flops(
        lambda: sam.image(model, rt, 1, (1024, 1024), None)
    )


def test_eva02_image_tower_built_by_timm_equals_open_clips(cache):
    import torch

    from grand_engine.cost.archs import TimmTower

    arch, model = cache.model(spec(EVA02, "clip"), "bfloat16")
    tower = TimmTower.build(arch.config, "meta", torch.bfloat16)
    rt = meta_rt()
    assert count_params(tower) == count_params(model.visual)
    assert count_flops(lambda: tower.encode_image(rt.floats(1, 3, 336, 336))) == count_flops(
        lambda: arch.image(model, rt, 1, (336, 336), None)
    )


PUBLISHED_PARAMS = [
    # (checkpoint, published parameters, relative tolerance, source)
    ("lmsys/vicuna-13b-v1.5", 13_015_864_320, 1e-6, "Llama 2 13B, which Vicuna v1.5 fine-tunes"),
    ("llava-hf/llava-1.5-13b-hf", 13.35e9, 0.005, "model card: 13.4 B"),
    ("Qwen/Qwen3-8B", 8.2e9, 0.01, "model card: 8.2 B"),
    ("Qwen/Qwen3-14B", 14.8e9, 0.01, "model card: 14.8 B"),
    ("Qwen/Qwen2.5-VL-7B-Instruct", 8.29e9, 0.005, "model card: 8.29 B"),
    ("depth-anything/Depth-Anything-V2-Large-hf", 335.3e6, 0.002, "Depth Anything V2 paper: 335.3 M"),
    ("Intel/dpt-beit-large-512", 345e6, 0.01, "MiDaS v3.1 paper: BEiT-L 512, 345 M"),
    ("ustc-community/dfine-xlarge-obj2coco", 62e6, 0.02, "D-FINE paper: D-FINE-X 62 M"),
    ("ustc-community/dfine-large-obj2coco-e25", 31e6, 0.02, "D-FINE paper: D-FINE-L 31 M"),
    ("florence-community/Florence-2-large", 0.77e9, 0.01, "Florence-2 paper: 0.77 B"),
    ("florence-community/Florence-2-base", 0.23e9, 0.01, "Florence-2 paper: 0.23 B"),
    ("sentence-transformers/all-MiniLM-L6-v2", 22.7e6, 0.01, "model card: 22.7 M"),
    ("IDEA-Research/grounding-dino-tiny", 172e6, 0.01, "model card: 172 M"),
    (EVA02, 428e6, 0.005, "EVA-CLIP paper: EVA02-CLIP-L/14+ 428 M"),
    ("google/siglip2-so400m-patch14-384", 1.14e9, 0.01, "model card: 1.14 B"),
    ("facebook/sam3", 848e6, 0.015, "model card: 848 M with the video tracker, which the image model lacks"),
]


@pytest.mark.parametrize(
    ("model_id", "published", "rel", "source"), PUBLISHED_PARAMS, ids=[p[0] for p in PUBLISHED_PARAMS]
)
def test_parameters_match_the_published_sizes(model_id, published, rel, source, cache):
    _, model = cache.model(spec(model_id), "bfloat16")
    assert count_params(model) == pytest.approx(published, rel=rel), source


def test_sam2_image_model_is_the_released_hiera_large_without_its_video_memory(cache):
    """SAM 2.1 Hiera-L is released with 224.4 M parameters, memory attention and encoder for video included."""
    _, model = cache.model(spec("facebook/sam2.1-hiera-large"), "bfloat16")
    assert 0.95 < count_params(model) / 224.4e6 < 1.0


@pytest.mark.parametrize(
    ("model_id", "gflops"),
    [("ustc-community/dfine-xlarge-obj2coco", 202), ("ustc-community/dfine-large-obj2coco-e25", 91)],
)
def test_d_fine_flops_match_the_paper(model_id, gflops, cache):
    """D-FINE paper, Table 1: 202 / 91 GFLOPs at 640×640 (their counter leaves out a few small terms: within 7 %)."""
    arch, model = cache.model(spec(model_id), "bfloat16")
    flops = count_flops(lambda: arch.image(model, meta_rt(), 1, (640, 640), None))
    assert flops / 1e9 == pytest.approx(gflops, rel=0.07)


def test_a_vit_tower_matches_the_transformer_closed_form(cache):
    """SigLIP 2 so400m at 384 (729 tokens): 2·T·(weights of its linear layers) + 4·L·T²·d, plus the patch
    convolution; the one-query pooling head is within the 1 % left over."""
    import torch

    arch, model = cache.model(spec("google/siglip2-so400m-patch14-384"), "bfloat16")
    vision = model.vision_model
    tokens, width, layers = 729, 1152, 27
    linear = sum(m.weight.numel() for m in vision.encoder.modules() if isinstance(m, torch.nn.Linear))
    closed = 2 * tokens * linear + 4 * layers * tokens * tokens * width + 2 * tokens * 3 * 14 * 14 * width
    flops = count_flops(lambda: arch.image(model, meta_rt(), 1, (384, 384), None))
    assert flops == pytest.approx(closed, rel=0.01)


def test_every_shipped_configuration_builds(cache):
    for key in shipped_keys():
        mc = find_config(spec(key.replace("--", "/")))
        assert mc is not None, key
        arch_for(mc)  # the family is known


# -- input sizes and workload ---------------------------------------------------------------------------------


def test_input_sizes_follow_each_processor():
    assert processed_size(
        {"size": {"height": 518, "width": 518}, "keep_aspect_ratio": True, "ensure_multiple_of": 14}, 1500, 2250, 0
    ) == (518, 784)
    assert processed_size({"size": {"shortest_edge": 800, "longest_edge": 1333}}, 1500, 2250, 0) == (800, 1200)
    assert processed_size({"size": {"height": 512, "width": 512}}, 1500, 2250, 0) == (512, 512)
    assert processed_size(
        {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}, 1500, 2250, 0
    ) == (336, 336)
    # Qwen: sides multiples of 28, area brought under 1280·28·28
    assert smart_resize(1500, 2250, 28, 3136, 1280 * 28 * 28) == (812, 1204)


def test_workload_assumptions_are_named_and_checked():
    w = Workload({"regions_per_image": 50})
    assert w["regions_per_image"] == 50 and "regions_per_image" in w.overridden
    assert w.tokens("x" * 40) == 10
    with pytest.raises(ValueError, match="unknown workload assumption 'regions'.*regions_per_image"):
        Workload({"regions": 3})


def test_the_masks_program_embeds_once_and_decodes_the_boxes_sam_must_draw():
    stage = NS(name="masks")
    calls = stage_calls(Context(stage, "sam", spec(SAM_H, "sam"), {}, Workload(), frozenset({"image", "boxes"})))
    assert [(c.kind, c.per_image) for c in calls] == [("image", 1), ("boxes", 1)]
    assert calls[1].boxes == round(74 * 0.3)


def test_a_stage_without_a_program_gets_one_call_and_says_so():
    ctx = Context(NS(name="my_stage"), "vlm", spec("x/y"), {}, Workload(), frozenset({"image"}))
    assert [c.kind for c in stage_calls(ctx)] == ["image"]
    assert "no workload program for my_stage.vlm" in ctx.notes[0]


# -- decode bound, report -------------------------------------------------------------------------------------


def test_a_call_takes_its_compute_and_the_slower_of_compute_and_memory_per_decoded_token():
    gpu = GPUS["h100"]
    cost = CallCost(
        Call("generate", 1, "x", new_tokens=10),
        flops={"prefill": 1e12, "decode": 10 * 1e9},
        decode_tokens=10,
        decode_step_flops=1e9,
        decode_bytes_per_token=1e9,
    )
    expected = 1e12 / (989.4e12 * 0.5) + 10 * max(1e9 / (989.4e12 * 0.5), 1e9 / (3350e9 * 0.8))
    assert cost.seconds(gpu, 0.5, 0.8) == pytest.approx(expected)


def test_decode_bytes_amortise_the_weights_over_the_batch(tmp_path, cache):
    """Per token of one sequence: (weights + batch × its KV cache at the mean context) / batch."""
    folder = write_llama(tmp_path / "llama_batch", layers=2, vocab=100)
    stage = NS(name="dense_caption", resources=NS(gpus=1.0, batch_size=4))
    workload = Workload()
    role = cost_role(stage, "llm", spec(str(folder), "llm"), {}, workload, cache)
    call = role.calls[0]
    assert role.batch == 4 and call.batch == 4
    mid = call.call.prompt_tokens + call.call.new_tokens // 2
    kv = 2 * 2 * 2 * 16 * 2  # K and V, 2 layers, 2 heads of 16, bf16
    assert call.decode_bytes_per_token == pytest.approx((role.decode_params * 2 + 4 * kv * mid) / 4)


def test_the_card_limits_how_many_sequences_decode_together(tmp_path, cache):
    folder = write_llama(tmp_path / "llama_card", layers=2)
    stage = NS(name="dense_caption", resources=NS(gpus=1.0, batch_size=128))
    role = cost_role(stage, "llm", spec(str(folder), "llm", backend="vllm"), {}, Workload(), cache, card_gb=1e-4)
    (call,) = role.calls
    per_sequence = role.kv_bytes_per_token * (call.call.prompt_tokens - call.call.shared_tokens + call.call.new_tokens)
    budget = 1e-4 * 0.9 * 1e9 - role.weight_gb * 1e9 - role.kv_bytes_per_token * call.call.shared_tokens
    assert call.batch == max(1, min(128, int(budget // per_sequence))) < 128
    assert any("sequences share the card" in n for n in role.notes)


def _role(name: str, seconds: float, model: str, gb: float) -> RoleCost:
    gpu = GPUS["h100"]
    role = RoleCost(name, "m", model, params=int(gb * 1e9 / 2))
    role.calls = [CallCost(Call("image", 1, "x"), flops={"image": seconds * gpu.flops})]
    return role


def test_the_pipeline_floor_is_one_over_the_sum_of_role_times_and_the_plan_packs_cards():
    roles = [_role("a", 0.2, "m1", 60.0), _role("b", 0.3, "m2", 30.0), _role("c", 0.1, "m1", 60.0)]
    report = CostReport("t", GPUS["h100"], 1.0, 1.0, Workload(), roles)
    assert report.images_per_s() == pytest.approx(1 / 0.6)
    assert report.shared_gb() == pytest.approx(90.0)  # m1 once, m2 once
    assert report.per_stage_gb() == pytest.approx(150.0)
    plan = report.placement()
    assert len(plan.cards) == 2  # 60 + 30 GB exceed 72 GB usable on an 80 GB card
    assert plan.images_per_s_per_gpu() == pytest.approx(1 / 0.3 / 2)


# -- the command ----------------------------------------------------------------------------------------------


def test_a_role_whose_configuration_is_not_shipped_is_named_and_the_others_are_costed(tmp_path, capsys):
    from grand_engine.cli import main

    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "name: bad\nstages:\n  images: {}\n"
        "  depth:\n    models:\n      depth: {id: Intel/dpt-beit-large-512, family: depth}\n"
        "    resources: {gpus: 0.25, batch_size: 8}\n"
        "  detect_closed:\n    models:\n      detector: {id: acme/no-such-detector, family: detector}\n"
        "    resources: {gpus: 0.25, batch_size: 8}\n"
    )
    out = tmp_path / "cost.json"
    assert main(["models", "cost", "--manifest", str(manifest), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "detect_closed.detector (acme/no-such-detector): no configuration shipped for checkpoint" in text
    assert "acme--no-such-detector/config.json" in text
    roles = {r["stage"]: r for r in json.loads(out.read_text())["manifest"]["roles"]}
    assert roles["detect_closed"]["error"] and roles["detect_closed"]["gflops_per_image"] == 0
    # DPT-BEiT-L at 512×512: about 0.96 TFLOPs per image
    assert roles["depth"]["error"] is None and roles["depth"]["gflops_per_image"] == pytest.approx(962.7, rel=0.01)


# -- measurement without weights ------------------------------------------------------------------------------


def test_a_role_measured_with_random_weights_reports_throughput_only(tmp_path, cache):
    from grand_engine.cost.measure import LABEL, measure_role

    folder = write_llama(tmp_path / "llama_measure", layers=2)
    stage = NS(name="dense_caption", resources=NS(gpus=1.0, batch_size=2))
    plan_role = cost_role(stage, "llm", spec(str(folder), "llm"), {}, Workload(), cache).to_dict(
        GPUS["h100"], 0.4, 0.8
    )
    plan_role["calls"] = [{**c, "prompt_tokens": 12, "shared_tokens": 0, "new_tokens": 3} for c in plan_role["calls"]]
    m = measure_role(plan_role, images=2, device="cpu")
    assert m.error is None and m.images == 2 and m.seconds > 0
    assert [c["inputs"] for c in m.calls] == [2]
    assert m.to_dict()["label"] == LABEL == "dummy weights: throughput only"
    assert m.floor_ms is None  # no floor to compare with on a CPU


def _blocked_env(tmp_path: Path) -> dict[str, str]:
    """An environment where the packages a bare GPU machine lacks cannot be imported."""
    blocked = tmp_path / "blocked"
    blocked.mkdir(exist_ok=True)
    for name in ("pydantic", "open_clip", "segment_anything", "ray", "vllm", "spacy", "pycocotools"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is not on a bare GPU machine')\n")
    return {
        **os.environ,
        "PYTHONPATH": str(blocked),
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.mark.slow
def test_gpu_throughput_dummy_runs_the_tiny_configurations_on_cpu(tiny_dir, tmp_path):
    out = tmp_path / "dummy.json"
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--dummy", "--manifest", "tiny",
        "--tiny-dir", str(tiny_dir), "--stages", "depth,masks,caption_vlm", "--images", "1", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DUMMY WEIGHTS: THROUGHPUT ONLY" in proc.stdout and "CPU run" in proc.stdout
    data = json.loads(out.read_text())
    assert data["label"] == "dummy weights: throughput only" and data["cuda"] is False
    measured = {r["stage"]: r for r in data["roles"]}
    assert set(measured) == {"depth", "masks", "caption_vlm"}
    for role in measured.values():
        assert role["label"] == "dummy weights: throughput only"
        assert role["error"] is None and role["images_per_s"] > 0
    assert [c["kind"] for c in measured["masks"]["calls"]] == ["image", "boxes"]


@pytest.mark.slow
def test_the_gpu_session_runs_a_plan_with_only_torch_transformers_and_timm(tiny_dir, tmp_path):
    """The prepared session script on CPU, on a plan of tiny configurations, where pydantic, open_clip,
    segment-anything, Ray and vLLM cannot be imported (as on the lent GPU machine)."""
    from grand_engine.cost import cost_manifest

    plan = tmp_path / "plan.json"
    report = cost_manifest("tiny", variables={"tiny_dir": str(tiny_dir), "llm_dir": str(tiny_dir / "llama")})
    plan.write_text(json.dumps({"manifest": report.to_dict()}))
    out = tmp_path / "out"
    env = {**_blocked_env(tmp_path), "OUT": str(out), "PLAN": str(plan), "IMAGES": "1"}
    env["STAGES"] = "depth,tagging,detect_closed,detect_lvis,caption_vlm"
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_session.sh")], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pydantic not installed" in (out / "env.txt").read_text()
    data = json.loads((out / "gpu_dummy.json").read_text())
    assert {r["stage"] for r in data["roles"]} == {"depth", "tagging", "detect_closed", "detect_lvis", "caption_vlm"}
    assert all(r["error"] is None and r["images_per_s"] > 0 for r in data["roles"])


@pytest.mark.slow
@pytest.mark.parametrize("plan_file", sorted(SESSION_PLANS))
def test_the_committed_session_plan_runs_at_full_size_as_a_dry_run(tmp_path, plan_file):
    """Every role the GPU session measures, built at full size from a committed plan (grand.yaml, grand2026.yaml)
    and run through the measurement path on the meta device, with only the packages of the GPU machine importable."""
    code = f"""
import json
from grand_engine.cost.measure import measure_role, plan_roles
plan = json.load(open({str(REPO / "benchmarks" / "plans" / plan_file)!r}))
stages = {SESSION_PLANS[plan_file]!r}.split(",")
done = []
for role in plan_roles(plan):
    if role["stage"] not in stages or role.get("tensor_model") is False:
        continue
    calls = [{{**c, "per_image": min(1.0, c["per_image"]), "decode_batch": 1, "new_tokens": min(2, c["new_tokens"])}}
             for c in role["calls"]]
    m = measure_role({{**role, "calls": calls, "stage_batch": 1}}, 1, "meta", warmup=False)
    assert m.error is None, (m.name, m.error)
    done.append(role["stage"])
print(json.dumps(sorted(done)))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_blocked_env(tmp_path), cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(set(json.loads(proc.stdout.strip().splitlines()[-1]))) == sorted(SESSION_PLANS[plan_file].split(","))


@pytest.mark.parametrize("plan_file", sorted(SESSION_PLANS))
def test_the_committed_session_plan_names_shipped_configurations(plan_file):
    plan = json.loads((REPO / "benchmarks" / "plans" / plan_file).read_text())
    stages = SESSION_PLANS[plan_file].split(",")
    roles = [r for r in plan["manifest"]["roles"] if r["stage"] in stages and r["tensor_model"]]
    assert {r["stage"] for r in roles} == set(stages)
    for role in roles:
        assert find_config(NS(id=role["model"])) is not None, role["model"]
        assert role["calls"] and math.isfinite(role["floor_ms_per_image"]) and role["floor_ms_per_image"] > 0
