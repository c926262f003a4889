"""Tiny image-text dual encoders: open_clip checkpoints (family ``clip``; a ViT and an EVA02-CLIP-style model with a
timm tower, in the Hub layout open_clip reads: ``open_clip_config.json`` + ``open_clip_model.safetensors``) and a
SigLIP 2 in the transformers layout (family ``hf_clip``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grand_engine.models.imaging import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, seeded
from grand_engine.models.tiny.tokenizers import train_bpe

_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


def _write_open_clip(dest: Path, model_cfg: dict[str, Any]) -> None:
    """Build an open_clip model from ``model_cfg`` (seeded) and save it in the hub layout open_clip reads."""
    # open_clip and torch are heavy: imported only when a checkpoint is built
    import open_clip
    from safetensors.torch import save_file

    cfg = dict(model_cfg)
    custom_text = cfg.pop("custom_text", False)
    with seeded(0):
        model = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg).eval()
    preprocess = {
        "mean": list(OPENAI_CLIP_MEAN),
        "std": list(OPENAI_CLIP_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (dest / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n"
    )
    # Stored in float16 (as many released open_clip weights are); load_state_dict casts to the model dtype.
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(dest / "open_clip_model.safetensors"))


def build_clip_vit(dest: Path) -> None:
    """A 2-layer open_clip ViT at EVA02-L-14-336's input (336², patch 14) with the real 49,408-token BPE text
    vocabulary."""
    _write_open_clip(
        dest,
        {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 336, "layers": 2, "width": 64, "head_width": 32, "patch_size": 14},
            "text_cfg": dict(_TEXT_CFG),
        },
    )


def build_clip_eva02(dest: Path) -> None:
    """An EVA02-CLIP-style model: timm ``eva02_tiny_patch14_224`` vision tower + open_clip text tower
    (the layout of ``EVA02-L-14-336``, with the smallest EVA02 timm tower). That tower is fixed at 224², so this
    checkpoint covers the timm code path; ``clip-vit`` covers the real 336² preprocessing."""
    _write_open_clip(
        dest,
        {
            "embed_dim": 32,
            "vision_cfg": {
                "image_size": 224,
                "timm_model_name": "eva02_tiny_patch14_224",
                "timm_model_pretrained": False,
                "timm_pool": "token",
                "timm_proj": "linear",
            },
            "text_cfg": dict(_TEXT_CFG),
            "custom_text": True,
        },
    )


def build_clip_vit_b16(dest: Path) -> None:
    """A 2-layer open_clip ViT at ViT-B-16's input (224², patch 16): the CLIP of CASS (the ``ovss`` stage), whose
    windows, patch grid and graphs follow the CLIP input size; with the real 49,408-token BPE text vocabulary."""
    _write_open_clip(
        dest,
        {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
            "text_cfg": dict(_TEXT_CFG),
        },
    )


def build_siglip2(dest: Path) -> None:
    """A 2-layer SigLIP 2 at the input of ``google/siglip2-so400m-patch14-384`` (a fixed-resolution SigLIP 2, which
    transformers loads as ``SiglipModel``): 384x384 stretched, bilinear, mean/std 0.5, patch 14; the text tower
    reads 64 tokens of a trained Gemma-style tokenizer."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import GemmaTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = train_bpe(
        GemmaTokenizer,
        vocab_size=1000,
        special_tokens={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
    )
    tokenizer.padding_side = "right"  # SigLIP pads texts at the end to 64 tokens and pools the last position
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "projection_size": 32,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 384,
        "patch_size": 14,
    }
    with seeded(0):
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    image_processor = SiglipImageProcessor(
        size={"height": 384, "width": 384}, resample=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    model.save_pretrained(dest)
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)
