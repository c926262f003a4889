"""Tiny text LLM checkpoint (family ``llm``): a random Llama with a trained BPE tokenizer and its own chat
template."""

from __future__ import annotations

from pathlib import Path

from grand_engine.models.imaging import seeded
from grand_engine.models.tiny.tokenizers import CHAT_CORPUS, train_bpe, train_chatml_bpe

# The tiny checkpoint's own template (a small "<|role|>" format), so that tests cover both paths.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_llama(dest: Path) -> None:
    """A tiny random ``LlamaForCausalLM`` (head size 32, which vLLM's kernels also accept) with a trained BPE
    tokenizer, explicit BOS/EOS/UNK/PAD, role tokens and a chat template."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    dest = Path(dest)
    tokenizer = train_bpe(
        LlamaTokenizer,
        vocab_size=2000,
        extra_corpus=CHAT_CORPUS,
        special_tokens={
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>"],
        },
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with seeded(0):
        model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, the layout of the Qwen3 instruct models (``Qwen/Qwen3-*-Instruct-2507`` write no thinking block)."""


def build_qwen3(dest: Path) -> None:
    """A tiny random ``Qwen3ForCausalLM`` (QK-norm attention, head size 32, grouped KV heads) with a trained
    byte-level BPE, the ChatML tokens, ``<|im_end|>`` as end of turn and the ChatML template."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    dest = Path(dest)
    tokenizer = train_chatml_bpe(2000, ["<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with seeded(0):
        model = Qwen3ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
