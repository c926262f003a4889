"""Tiny image-text checkpoints (family ``vlm``): BLIP-2, LLaVA-1.5, Florence-2 and Kosmos-2, each with an offline
tokenizer and the real checkpoint's image processor settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grand_engine.models.imaging import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, seeded
from grand_engine.models.tiny.tokenizers import corpus, train_bpe, train_chatml_bpe

FLORENCE_LOC_BINS = 1000
"""Florence-2's tokenizer holds ``<loc_0>`` … ``<loc_999>`` (the VLM adapter quantises boxes into as many bins)."""

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'][0]['text'] if message['content'] is not string "
    "else message['content'] }}{{ ' ' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endfor %}"
    "{% endif %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Every parse type Florence2Processor knows; post-processing refuses a type missing from this config.
FLORENCE_POST_PROCESSOR_CONFIG: dict[str, Any] = {
    "ocr": {
        "AREA_THRESHOLD": 0.0,
        "PATTERN": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
    },
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}
FLORENCE_EXTRA_TOKENS = [
    "<od>",
    "</od>",
    "<ocr>",
    "</ocr>",
    "<poly>",
    "</poly>",
    "<sep>",
    "<region_cap>",
    "</region_cap>",
]


def _tiny_vision(image_size: int, patch_size: int, layers: int = 1) -> dict[str, Any]:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def _unigram_tokenizer(words: int = 4000) -> Any:
    """An XLM-R style unigram tokenizer built directly from scored pieces (no training): the first
    ``words`` corpus words as whole-word pieces plus every character, alone and word-initial."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import XLMRobertaTokenizer

    seen: dict[str, None] = {}
    for line in corpus():
        for word in line.split():
            seen.setdefault(word, None)
            if len(seen) >= words:
                break
        if len(seen) >= words:
            break
    letters = "abcdefghijklmnopqrstuvwxyz"
    chars = sorted({c for w in seen for c in w} | set(letters + letters.upper() + "0123456789.,!?'\"-:;()"))
    pieces: list[tuple[str, float]] = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    pieces += [("\u2581" + w, -2.0 - i / len(seen)) for i, w in enumerate(seen) if len(w) > 1]
    pieces += [("\u2581" + c, -10.0) for c in chars] + [(c, -11.0) for c in chars]
    return XLMRobertaTokenizer(vocab=pieces)


def _save(dest: Path, model: Any, processor: Any) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


def build_blip2(dest: Path) -> None:
    """Tiny random BLIP-2 (ViT + Q-Former + OPT) with a trained GPT-2 BPE; 8 query tokens."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GPT2Tokenizer,
    )

    tokenizer = train_bpe(GPT2Tokenizer, vocab_size=1000, special_tokens={"pad_token": "<pad>"})
    # As Salesforce/blip2-opt-2.7b: stretched to 224x224, bicubic, OpenAI CLIP mean/std.
    image_processor = BlipImageProcessor(
        size={"height": 224, "width": 224},
        resample=3,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=8)
    tok = processor.tokenizer  # the processor added <image>; the vocabulary size is read after that
    config = Blip2Config(
        vision_config=_tiny_vision(224, 14),
        qformer_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "encoder_hidden_size": 32,
        },
        text_config={
            "model_type": "opt",
            "vocab_size": len(tok),
            "hidden_size": 32,
            "word_embed_proj_dim": 32,
            "ffn_dim": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 128,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "tie_word_embeddings": False,  # tied, a random decoder mostly repeats its input token
        },
        num_query_tokens=8,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    with seeded(0):
        model = Blip2ForConditionalGeneration(config).eval()
    _save(Path(dest), model, processor)


def build_llava(dest: Path) -> None:
    """Tiny random LLaVA-1.5 (CLIP ViT 336/14 + Llama) with the llava-hf style processor and chat template."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import (
        CLIPImageProcessor,
        LlamaTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = train_bpe(
        LlamaTokenizer,
        vocab_size=1000,
        special_tokens={
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "additional_special_tokens": ["<image>"],
        },
        add_bos=True,
    )
    # As llava-hf/llava-1.5-*-hf: shortest edge to 336, centre crop 336x336 (the model sees the central square of a
    # non-square image), bicubic, OpenAI CLIP mean/std.
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        do_center_crop=True,
        resample=3,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token; "default" drops it again, leaving 24*24 = 576 image tokens
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **_tiny_vision(336, 14, layers=2), "projection_dim": 32},
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    with seeded(0):
        model = LlavaForConditionalGeneration(config).eval()
    _save(Path(dest), model, processor)


def build_florence2(dest: Path) -> None:
    """Tiny random Florence-2 (DaViT + BART) at the real 768x768 input: trained BART BPE plus the 1000
    ``<loc_i>`` tokens, ``<image>`` declared through ``extra_special_tokens``."""
    # torch and transformers are heavy: imported only when a checkpoint is built
    import torch
    from transformers import (
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = train_bpe(BartTokenizer, vocab_size=1000)
    tokenizer.add_tokens(FLORENCE_EXTRA_TOKENS + [f"<loc_{i}>" for i in range(FLORENCE_LOC_BINS)])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    # The image token only survives a save/load round trip as an extra special token.
    tokenizer.save_pretrained(dest)
    tokenizer = BartTokenizer.from_pretrained(dest, extra_special_tokens={"image_token": "<image>"})
    # As florence-community/Florence-2-*: stretched to 768x768, no crop, bicubic, ImageNet mean/std.
    image_processor = CLIPImageProcessor(
        size={"height": 768, "width": 768},
        crop_size={"height": 768, "width": 768},
        do_center_crop=False,
        resample=3,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    image_processor.image_seq_length = 577
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=FLORENCE_POST_PROCESSOR_CONFIG
    )
    config = Florence2Config(
        vision_config={
            "depths": [1, 1, 1, 1],
            "patch_stride": [4, 2, 2, 2],
            "embed_dim": [16, 16, 32, 32],
            "num_heads": [1, 1, 2, 2],
            "num_groups": [1, 1, 2, 2],
            "window_size": 12,
            "projection_dim": 32,
            "drop_path_rate": 0.0,
        },
        text_config={
            "model_type": "bart",
            "vocab_size": len(tokenizer),
            "d_model": 32,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "max_position_embeddings": 1024,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "decoder_start_token_id": tokenizer.eos_token_id,
            "forced_eos_token_id": tokenizer.eos_token_id,
        },
        image_token_id=tokenizer.image_token_id,
        # Untied output embeddings: with tied ones a random decoder mostly predicts its own input token, and
        # since decoding starts from EOS the tiny model would stop at once.
        tie_word_embeddings=False,
    )
    with seeded(0):
        model = Florence2ForConditionalGeneration(config).eval()
    # Real Florence-2 output is mostly <loc_i> runs after short phrases. Scaling the <loc_i> rows of the random
    # output layer by 1.1 makes the tiny model's generations contain such runs too, so region parsing is
    # exercised end to end (without it greedy output rarely holds four coordinates in a row).
    first_loc = tokenizer.convert_tokens_to_ids("<loc_0>")
    with torch.no_grad():
        model.lm_head.weight[first_loc : first_loc + FLORENCE_LOC_BINS] *= 1.1
    _save(dest, model, processor)


def build_kosmos2(dest: Path) -> None:
    """Tiny random Kosmos-2 with a unigram XLM-R tokenizer; the processor adds the tag and 1024 patch-index
    tokens, so the text vocabulary is read from the processor's tokenizer."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import CLIPImageProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration, Kosmos2Processor

    # As microsoft/kosmos-2-patch14-224: stretched to 224x224 (so the centre crop keeps everything and the
    # normalised boxes cover the whole image), bicubic, OpenAI CLIP mean/std.
    image_processor = CLIPImageProcessor(
        size={"height": 224, "width": 224},
        crop_size={"height": 224, "width": 224},
        resample=3,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    processor = Kosmos2Processor(image_processor=image_processor, tokenizer=_unigram_tokenizer())
    tok = processor.tokenizer
    config = Kosmos2Config(
        text_config={
            "vocab_size": len(tok),
            "embed_dim": 32,
            "layers": 1,
            "ffn_dim": 64,
            "attention_heads": 2,
            "max_position_embeddings": 512,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "tie_word_embeddings": False,  # tied, a random decoder mostly repeats its input token
        },
        vision_config=_tiny_vision(224, 14),
        latent_query_num=64,  # = the processor's num_image_tokens
    )
    with seeded(0):
        model = Kosmos2ForConditionalGeneration(config).eval()
    _save(Path(dest), model, processor)


QWEN_VL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
"""The ChatML and vision tokens of the Qwen2.5-VL / Qwen3-VL tokenizers."""

QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen3-VL's ChatML layout (no default system turn), images as ``<|vision_start|><|image_pad|><|vision_end|>``."""


def build_qwen3_vl(dest: Path) -> None:
    """Tiny random Qwen3-VL (2-block vision tower with one DeepStack layer, 2-layer text model with interleaved
    M-RoPE) with a trained byte-level BPE, the ChatML and vision tokens and the real image processor settings of
    ``Qwen/Qwen3-VL-8B-Instruct``: 16 px patches merged 2x2, 2-frame temporal patches, mean/std 0.5, resized
    (aspect kept) to multiples of 32 within 65,536 to 16,777,216 pixels."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = train_chatml_bpe(1000, QWEN_VL_TOKENS)
    ids = tokenizer.convert_tokens_to_ids
    pixels = {"shortest_edge": 65536, "longest_edge": 16777216}
    image_processor = Qwen2VLImageProcessor(
        size=pixels,
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [8, 4, 4],
                "mrope_interleaved": True,
            },
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    with seeded(0):
        model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    _save(Path(dest), model, processor)
