"""How to build each architecture from its configuration and run each kind of call on it.

One :class:`Arch` per family of architectures. It builds the model on any device (``meta`` to count, ``cuda`` or
``cpu`` to measure), computes the input size the family's image processor would produce, and runs one call of each
kind it supports on a batch of synthetic inputs:

* ``image`` — one pass over an image (depth, closed-set and open-vocabulary detectors with their text queries, the
  image tower of CLIP-like models, the image encoder of SAM-like models);
* ``boxes`` — SAM's prompt encoder and mask decoder for a number of box prompts, given the image embedding;
* ``text`` — a text encoder over a number of tokens;
* ``generate`` — a vision-language or language model: the vision tower, the prefill of the prompt, and the
  decoding steps. Generation is split into its parts: :meth:`Generative.vision` and :meth:`Generative.extend`
  (``new`` tokens appended to a key/value cache of ``context`` tokens), so the cost model counts a decoding
  step at the mean context length once instead of running every step, and the measurement runs the real loop.

The same code runs for counting and for measuring: :class:`Runtime` makes meta tensors (or small real CPU tensors
for integer inputs, see :mod:`.counting`) when counting, and random tensors on the device when measuring.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from grand_engine.cost.configs import ModelConfig
from grand_engine.models.pooling import attention_pool

Size = tuple[int, int]


class UnsupportedCall(ValueError):
    """The architecture cannot run this kind of call (e.g. a depth model asked to generate text)."""


@dataclass(frozen=True)
class Runtime:
    """Where synthetic inputs live: ``device="meta"`` when counting, a real device when measuring."""

    device: str
    dtype: Any

    @property
    def meta(self) -> bool:
        return self.device == "meta"

    def floats(self, *shape: int) -> Any:
        import torch

        if self.meta:
            return torch.empty(shape, device="meta", dtype=self.dtype)
        return torch.randn(shape, device=self.device, dtype=self.dtype)

    def ids(self, *shape: int, fill: int = 0) -> Any:
        """Token ids: a real CPU tensor when counting (index arithmetic runs for real), else on the device."""
        import torch

        t = torch.full(shape, fill, dtype=torch.long)
        return t if self.meta else t.to(self.device)

    def ones(self, *shape: int) -> Any:
        import torch

        t = torch.ones(shape, dtype=torch.long)
        return t if self.meta else t.to(self.device)

    def index(self, tensor: Any) -> Any:
        return tensor if self.meta else tensor.to(self.device)


def _round_multiple(x: float, m: int) -> int:
    return max(m, int(round(x / m)) * m)


def processed_size(pre: dict[str, Any], height: int, width: int, default: int) -> Size:
    """The ``(height, width)`` an image of ``height×width`` has after the family's resize (no padding counted)."""
    size = pre.get("size") or {}
    if "min_pixels" in pre or "max_pixels" in pre:
        factor = int(pre.get("patch_size", 14)) * int(pre.get("merge_size", 2))
        return smart_resize(height, width, factor, int(pre.get("min_pixels", 0)), int(pre.get("max_pixels", 1 << 40)))
    if "height" in size and "width" in size:
        th, tw = int(size["height"]), int(size["width"])
        if not pre.get("keep_aspect_ratio"):
            return th, tw
        # DPT-style: the scale closest to 1 wins for both sides, then each side is rounded to the multiple
        sh, sw = th / height, tw / width
        scale = sw if abs(1 - sw) < abs(1 - sh) else sh
        m = int(pre.get("ensure_multiple_of", 1))
        return _round_multiple(height * scale, m), _round_multiple(width * scale, m)
    if "shortest_edge" in size and "longest_edge" in size:  # DETR-style: short side, capped long side
        scale = size["shortest_edge"] / min(height, width)
        if max(height, width) * scale > size["longest_edge"]:
            scale = size["longest_edge"] / max(height, width)
        return round(height * scale), round(width * scale)
    crop = pre.get("crop_size") or {}
    if "height" in crop and "width" in crop and pre.get("do_center_crop", True):
        return int(crop["height"]), int(crop["width"])
    if "longest_edge" in size:  # SAM-style: long side resized, padded to a square
        pad = pre.get("pad_size") or {}
        return int(pad.get("height", size["longest_edge"])), int(pad.get("width", size["longest_edge"]))
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    return default, default


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> Size:
    """Qwen-VL's resize: each side a multiple of ``factor``, the area brought within ``[min_pixels, max_pixels]``."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _call_with_cache(module: Any, cache: Any, **kwargs: Any) -> Any:
    """Call a transformers module with a key/value cache under whichever keyword its version uses."""
    params = inspect.signature(module.forward).parameters
    key = "cache" if "cache" in params else "past_key_values"
    return module(**kwargs, **{key: cache}, use_cache=True)


def _cache_of(output: Any) -> Any:
    return _field(output, "cache", "past_key_values")


class Arch:
    """One family of architectures (subclasses set ``model_types`` and implement the calls they support)."""

    model_types: ClassVar[tuple[str, ...]] = ()
    kinds: ClassVar[frozenset[str]] = frozenset()
    default_input: ClassVar[int] = 224

    def __init__(self, mc: ModelConfig, config: Any = None) -> None:
        self.mc = mc
        self.pre = mc.preprocessor
        self.config = config if config is not None else self.load_config()

    # -- configuration and building ---------------------------------------------------------------------------

    def load_config(self) -> Any:
        from transformers import AutoConfig

        # transformers reads a folder's config.json; the shipped and the checkpoint folders both have one
        return AutoConfig.from_pretrained(str(self.mc.where))

    def architecture(self) -> str:
        names = getattr(self.config, "architectures", None) or []
        if not names:
            raise ValueError(f"configuration {self.mc.key!r} names no architecture (config.json 'architectures')")
        return names[0]

    def build(self, device: str, dtype: Any) -> Any:
        """The model with random (or, on meta, no) weights, in eval mode."""
        import torch
        import transformers

        cls = getattr(transformers, self.architecture())
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype if dtype.is_floating_point else previous)
        try:
            with torch.device(device):
                model = cls(self.config)
        finally:
            torch.set_default_dtype(previous)
        return model.to(dtype).eval()

    def native_size(self) -> int:
        vision = _field(self.config, "vision_config", default=self.config)
        size = _field(vision, "image_size", default=self.default_input)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        """The model's input size for an image (``crop``: a region crop, resized like a whole image)."""
        return processed_size(self.pre, height, width, self.native_size())

    # -- calls ------------------------------------------------------------------------------------------------

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        raise UnsupportedCall(f"{type(self).__name__} has no image pass")

    def text(self, model: Any, rt: Runtime, batch: int, tokens: int) -> Any:
        raise UnsupportedCall(f"{type(self).__name__} has no text encoder")

    def embed_image(self, model: Any, rt: Runtime, batch: int, size: Size) -> Any:
        raise UnsupportedCall(f"{type(self).__name__} takes no box prompts")

    def pooled(self, model: Any, rt: Runtime, batch: int, size: Size, regions: int) -> Any:
        raise UnsupportedCall(f"{type(self).__name__} has no pooling head to pool regions with")

    def boxes(self, model: Any, rt: Runtime, embedding: Any, boxes: int) -> Any:
        raise UnsupportedCall(f"{type(self).__name__} takes no box prompts")

    def query_tokens(self) -> int:
        """Tokens of one text query (open-vocabulary detectors)."""
        return 16

    def setup_text(self, model: Any, rt: Runtime, queries: int) -> Any:
        """Encode ``queries`` vocabulary entries once per worker (OWL, SAM 3); not per image."""
        return self.text(model, rt, queries, self.query_tokens())


class DenseVision(Arch):
    """Depth and closed-set detection models: one forward over the image."""

    model_types = (
        "dpt",
        "depth_anything",
        "depth_pro",
        "d_fine",
        "rt_detr",
        "rt_detr_v2",
        "zoedepth",
        "vit",
        "dinov2",
    )
    kinds = frozenset({"image"})

    def native_size(self) -> int:
        if self.config.model_type == "depth_pro":
            return 1536
        if self.config.model_type in ("d_fine", "rt_detr", "rt_detr_v2"):
            return 640
        backbone = _field(self.config, "backbone_config", default=self.config)
        return int(_field(backbone, "image_size", default=_field(self.config, "image_size", default=512)))

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        return model(pixel_values=rt.floats(batch, 3, *size))


class OpenClip(Arch):
    """open_clip models (EVA-02 CLIP and others), built by open_clip from its own model configuration."""

    model_types = ("open_clip",)
    kinds = frozenset({"image", "text"})

    def load_config(self) -> Any:
        if "model_cfg" in self.mc.config:
            return dict(self.mc.config["model_cfg"])
        # open_clip is heavy: imported when an open_clip model's configuration comes from its registry
        import open_clip

        name = self.mc.config.get("model_name")
        cfg = open_clip.get_model_config(name) if name else None
        if cfg is None:
            raise ValueError(f"open_clip has no model named {name!r} (configuration {self.mc.key!r})")
        return dict(cfg)

    def build(self, device: str, dtype: Any) -> Any:
        import torch

        try:
            from open_clip.model import CLIP, CustomTextCLIP
        except ImportError:  # a machine without open_clip: the image tower alone, from timm (see TimmTower)
            return TimmTower.build(self.config, device, dtype)
        cfg = dict(self.config)
        custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
        cfg["vision_cfg"] = {**cfg.get("vision_cfg", {}), "timm_model_pretrained": False}
        with torch.device(device):
            model = (CustomTextCLIP if custom else CLIP)(**cfg)
        return model.to(dtype).eval()

    def native_size(self) -> int:
        size = self.config.get("vision_cfg", {}).get("image_size", 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        s = self.native_size()  # open_clip resizes the short side and crops a square
        return s, s

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        return model.encode_image(rt.floats(batch, 3, *size))

    def text(self, model: Any, rt: Runtime, batch: int, tokens: int) -> Any:
        context = int(self.config.get("text_cfg", {}).get("context_length", 77))
        return model.encode_text(rt.ids(batch, context))

    def query_tokens(self) -> int:
        return int(self.config.get("text_cfg", {}).get("context_length", 77))


class TimmTower:
    """open_clip's image tower for a timm trunk (EVA-02 CLIP among others), built by timm alone.

    open_clip wraps the timm model ``vision_cfg.timm_model_name`` and, with no extra projection, uses the timm
    classifier head as the projection to ``embed_dim``; this builds the same network where open_clip is not
    installed (a bare GPU machine has timm). Only image calls are possible."""

    def __init__(self, trunk: Any) -> None:
        self.trunk = trunk

    @classmethod
    def build(cls, cfg: dict[str, Any], device: str, dtype: Any) -> Any:
        import timm
        import torch

        vision = cfg.get("vision_cfg", {})
        name = vision.get("timm_model_name")
        if not name:
            raise ImportError("open_clip is not installed and this CLIP has no timm image tower to build instead")
        extra_proj = vision.get("timm_proj") in ("linear", "mlp")
        size = vision.get("image_size", 224)
        with torch.device(device):
            trunk = timm.create_model(
                name,
                pretrained=False,
                num_classes=0 if extra_proj else int(cfg.get("embed_dim", 0)),
                global_pool=vision.get("timm_pool") or "token",
                img_size=size,
            )
            if extra_proj:
                trunk = torch.nn.Sequential(
                    trunk, torch.nn.Linear(trunk.num_features, int(cfg["embed_dim"]), bias=False)
                )
        return cls(trunk.to(dtype).eval())

    def encode_image(self, pixels: Any) -> Any:
        return self.trunk(pixels)

    def parameters(self) -> Any:
        return self.trunk.parameters()

    def requires_grad_(self, flag: bool) -> TimmTower:
        self.trunk.requires_grad_(flag)
        return self

    def encode_text(self, ids: Any) -> Any:
        raise UnsupportedCall("open_clip is not installed: only the image tower was built (timm)")


class Siglip(Arch):
    """SigLIP / SigLIP 2 (fixed resolution) and CLIP in transformers: image and text towers."""

    model_types = ("siglip", "clip")
    kinds = frozenset({"image", "text"})

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        s = self.native_size()
        return s, s

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        return model.get_image_features(pixel_values=rt.floats(batch, 3, *size))

    def text(self, model: Any, rt: Runtime, batch: int, tokens: int) -> Any:
        return model.get_text_features(input_ids=rt.ids(batch, self.query_tokens()))

    def pooled(self, model: Any, rt: Runtime, batch: int, size: Size, regions: int) -> Any:
        """One pass of the image tower, then the attention-pooling head once per region (``mode: pooled``)."""
        tower = model.vision_model
        if getattr(tower, "head", None) is None:
            raise UnsupportedCall(f"{self.mc.key} has no attention-pooling head (SigLIP's) to pool regions with")
        hidden = tower(pixel_values=rt.floats(batch, 3, *size)).last_hidden_state
        return [attention_pool(tower.head, hidden[b], rt.floats(regions, hidden.shape[1])) for b in range(batch)]

    def query_tokens(self) -> int:
        return int(self.config.text_config.max_position_embeddings)


class Owl(Arch):
    """OWL-ViT / OWLv2: image embedder, box head, and the class head against cached text-query embeddings."""

    model_types = ("owlv2", "owlvit")
    kinds = frozenset({"image", "text"})

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        s = self.native_size()  # the processor pads to a square, then resizes
        return s, s

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        feature_map = model.image_embedder(pixel_values=rt.floats(batch, 3, *size))[0]
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        boxes = model.box_predictor(feats, feature_map)
        queries = int(getattr(call, "queries", 0) or 0)
        if queries:
            dim = int(self.config.projection_dim)
            model.class_predictor(feats, rt.floats(batch, queries, dim), None)
        return boxes

    def text(self, model: Any, rt: Runtime, batch: int, tokens: int) -> Any:
        base = model.owlv2 if hasattr(model, "owlv2") else model.owlvit
        n = self.query_tokens()
        return base.get_text_features(input_ids=rt.ids(batch, n), attention_mask=rt.ones(batch, n))

    def query_tokens(self) -> int:
        return int(self.config.text_config.max_position_embeddings)


class GroundingDino(Arch):
    """Grounding DINO: image backbone, text encoder and cross-modal encoder/decoder in every forward."""

    model_types = ("grounding-dino", "mm-grounding-dino")
    kinds = frozenset({"image"})

    def native_size(self) -> int:
        return 800

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        tokens = max(3, int(getattr(call, "text_tokens", 0) or 0) + 2)  # [CLS] … [SEP]
        ids = rt.ids(batch, tokens, fill=1012)  # every token a "." separator: one phrase per token
        return model(
            pixel_values=rt.floats(batch, 3, *size),
            input_ids=ids,
            attention_mask=rt.ones(batch, tokens),
            token_type_ids=rt.ids(batch, tokens),
        )


class SegmentAnything(Arch):
    """SAM built by segment-anything (ViT-H and the other registry types; tiny CI variants via ``sam_config``)."""

    model_types = ("segment_anything",)
    kinds = frozenset({"image", "boxes"})
    default_input = 1024

    def load_config(self) -> Any:
        return dict(self.mc.config)

    def build(self, device: str, dtype: Any) -> Any:
        """segment-anything mixes dtypes inside its prompt encoder: the weights stay float32 and the calls run
        under autocast to ``dtype`` on a GPU (FLOPs do not depend on the dtype)."""
        import torch

        self.compute_dtype = dtype
        model_type = self.config.get("model_type", "vit_h")
        try:
            import segment_anything  # noqa: F401
        except ImportError:  # a machine without segment-anything: the same network in transformers
            self.hf = HfSam(self.mc, config=self.hf_config())
            return self.hf.build(device, dtype)
        with torch.device(device):
            if "build" in self.config or model_type not in ("vit_h", "vit_l", "vit_b"):
                # a checkpoint folder describing its own network (e.g. the tiny CI variant)
                from grand_engine.models.sam_arch import arch_from_config, build_sam

                model = build_sam(arch_from_config(self.config))
            else:
                from segment_anything import sam_model_registry

                model = sam_model_registry[model_type](checkpoint=None)
        return model.eval()

    def _autocast(self, rt: Runtime) -> Any:
        import contextlib

        import torch

        if rt.device.startswith("cuda") and self.compute_dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.compute_dtype)
        return contextlib.nullcontext()

    hf: Any = None

    def hf_config(self) -> Any:
        """transformers' ``SamConfig`` of the same network, from the explicit hyper-parameters of ``config.json``."""
        from transformers import SamConfig

        c = self.config
        if "encoder_embed_dim" not in c:
            raise ImportError(f"segment-anything is not installed and {self.mc.key!r} lists no hyper-parameters")
        width = int(c["encoder_embed_dim"])
        vision = {
            "hidden_size": width,
            "num_hidden_layers": int(c["encoder_depth"]),
            "num_attention_heads": int(c["encoder_num_heads"]),
            "global_attn_indexes": list(c["encoder_global_attn_indexes"]),
            "image_size": int(c.get("image_size", 1024)),
            "patch_size": int(c.get("patch_size", 16)),
            "window_size": int(c.get("window_size", 14)),
            "mlp_dim": int(width * float(c.get("mlp_ratio", 4.0))),
            "output_channels": int(c.get("prompt_embed_dim", 256)),
        }
        return SamConfig(vision_config=vision, architectures=["SamModel"])

    def native_size(self) -> int:
        return int(self.config.get("image_size", 1024))

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        return (self._img_size,) * 2 if hasattr(self, "_img_size") else (self.native_size(),) * 2

    def set_built(self, model: Any) -> None:
        encoder = getattr(model, "image_encoder", None)
        if encoder is not None:
            self._img_size = int(encoder.img_size)

    def embed_image(self, model: Any, rt: Runtime, batch: int, size: Size) -> Any:
        import torch

        if self.hf is not None:
            return self.hf.embed_image(model, rt, batch, size)
        with self._autocast(rt):
            return model.image_encoder(rt.floats(batch, 3, *size).to(torch.float32))

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        return self.embed_image(model, rt, batch, size)

    def boxes(self, model: Any, rt: Runtime, embedding: Any, boxes: int) -> Any:
        import torch

        if self.hf is not None:
            return self.hf.boxes(model, rt, embedding, boxes)
        with self._autocast(rt):
            sparse, dense = model.prompt_encoder(points=None, boxes=rt.floats(boxes, 4).to(torch.float32), masks=None)
            return model.mask_decoder(
                image_embeddings=embedding[:1],
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )


class HfSam(Arch):
    """SAM, SAM-HQ and SAM 2 in transformers: image encoder once, prompt decoder per set of boxes."""

    model_types = ("sam", "sam_hq", "sam2")
    kinds = frozenset({"image", "boxes"})
    default_input = 1024

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        s = self.native_size()
        return s, s

    def native_size(self) -> int:
        vision = self.config.vision_config
        backbone = _field(vision, "backbone_config", default=vision)
        size = _field(backbone, "image_size", default=1024)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def embed_image(self, model: Any, rt: Runtime, batch: int, size: Size) -> Any:
        out = model.get_image_embeddings(rt.floats(batch, 3, *size))
        if self.config.model_type == "sam_hq":
            return {"image_embeddings": out[0], "intermediate_embeddings": out[1]}
        return {"image_embeddings": out}

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        return self.embed_image(model, rt, batch, size)

    def boxes(self, model: Any, rt: Runtime, embedding: Any, boxes: int) -> Any:
        def first(x: Any) -> Any:
            return [first(t) for t in x] if isinstance(x, (list, tuple)) else x[:1]

        one = {k: first(v) for k, v in embedding.items()}
        return model(**one, input_boxes=rt.floats(1, boxes, 4), multimask_output=False)


class Sam3(Arch):
    """SAM 3: the image backbone once, then the detector (DETR encoder/decoder and mask head) once per prompt."""

    model_types = ("sam3",)
    kinds = frozenset({"image", "text"})
    default_input = 1008

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        s = self.native_size()
        return s, s

    def native_size(self) -> int:
        return int(self.config.vision_config.backbone_config.image_size)

    def query_tokens(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    def text(self, model: Any, rt: Runtime, batch: int, tokens: int) -> Any:
        n = self.query_tokens()
        return model.get_text_features(input_ids=rt.ids(batch, n), attention_mask=rt.ones(batch, n))

    def image(self, model: Any, rt: Runtime, batch: int, size: Size, call: Any) -> Any:
        vision = model.get_vision_features(pixel_values=rt.floats(batch, 3, *size))
        for _ in range(int(getattr(call, "queries", 0) or 0)):
            self.prompt(model, rt, vision)
        return vision

    def prompt(self, model: Any, rt: Runtime, vision: Any) -> Any:
        """The detector for one text prompt over a computed image embedding (the text embedding is cached)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        n = self.query_tokens()
        dim = int(self.config.detr_encoder_config.hidden_size)
        text = BaseModelOutputWithPooling(pooler_output=rt.floats(1, n, dim))
        return model(vision_embeds=vision, text_embeds=text, attention_mask=rt.ones(1, n))


class TextEncoder(Arch):
    """Sentence encoders (BERT-like): one pass over a text."""

    model_types = ("bert", "mpnet", "roberta", "xlm-roberta")
    kinds = frozenset({"text"})

    def text(self, model: Any, rt: Runtime, batch: int, tokens: int) -> Any:
        return model(input_ids=rt.ids(batch, tokens), attention_mask=rt.ones(batch, tokens))


class Generative(Arch):
    """A decoder-only language model, optionally behind a vision tower (see the module docstring)."""

    model_types = ("llama", "qwen2", "qwen3", "qwen3_moe", "mistral", "opt", "gemma", "gemma2", "gemma3_text", "phi3")
    kinds = frozenset({"generate"})

    @property
    def text_config(self) -> Any:
        return _field(self.config, "text_config", default=self.config)

    def has_vision(self) -> bool:
        return False

    def image_tokens(self, size: Size) -> int:
        return 0

    def vision(self, model: Any, rt: Runtime, batch: int, size: Size) -> Any:
        raise UnsupportedCall(f"{type(self).__name__} has no vision tower")

    def lm_parts(self, model: Any) -> tuple[Any, Any]:
        """``(body, head)``: the decoder stack (returns hidden states and the cache) and the output projection."""
        body = model.model
        if self.text_config.model_type == "opt" and hasattr(body, "decoder"):
            body = body.decoder
        return body, model.lm_head

    def hidden(self) -> int:
        tc = self.text_config
        return int(_field(tc, "word_embed_proj_dim", "hidden_size"))

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Key/value cache bytes per token of context (all layers)."""
        layers, kv_heads, head_dim = self.kv_shape()
        return 2 * layers * kv_heads * head_dim * dtype_bytes

    def decode_modules(self, model: Any) -> list[Any]:
        """The modules whose weights every decoding step reads."""
        return list(self.lm_parts(model))

    layers_attr: ClassVar[str] = "num_hidden_layers"

    def n_layers(self) -> int:
        return int(getattr(self.text_config, self.layers_attr))

    @contextlib.contextmanager
    def truncated(self, model: Any, layers: int) -> Iterator[None]:
        """The decoder with only its first ``layers`` layers (its configuration says so too) for the duration.

        A decoder's layers are identical, so its FLOPs are affine in their number: counting one- and two-layer
        copies gives the whole stack's exactly (``F(L) = F(1) + (L - 1) · (F(2) - F(1))``), 20-40 times faster
        than counting every layer on the meta device."""
        import torch

        body, _ = self.lm_parts(model)
        configs = {id(c): c for c in (body.config, self.text_config)}.values()
        full, total = body.layers, self.n_layers()
        body.layers = torch.nn.ModuleList(list(full)[:layers])
        for c in configs:
            setattr(c, self.layers_attr, layers)
        try:
            yield
        finally:
            body.layers = full
            for c in configs:
                setattr(c, self.layers_attr, total)

    def kv_shape(self) -> tuple[int, int, int]:
        """``(layers, key/value heads, head dim)`` of the decoder's self-attention."""
        tc = self.text_config
        heads = int(tc.num_attention_heads)
        kv_heads = int(_field(tc, "num_key_value_heads", default=heads))
        return int(tc.num_hidden_layers), kv_heads, int(_field(tc, "head_dim", default=int(tc.hidden_size) // heads))

    def make_cache(self, model: Any, rt: Runtime, batch: int, context: int, encoder_tokens: int = 0) -> Any:
        """A key/value cache already holding ``context`` tokens (filled with synthetic keys and values).

        ``encoder_tokens`` is the length of the encoder output an encoder-decoder attends to (ignored here)."""
        from transformers import DynamicCache

        if context <= 0:
            return None
        layers, kv_heads, head_dim = self.kv_shape()
        cache = DynamicCache(config=self.text_config)
        for layer in range(layers):
            cache.update(
                rt.floats(batch, kv_heads, context, head_dim), rt.floats(batch, kv_heads, context, head_dim), layer
            )
        return cache

    def extend(
        self, model: Any, rt: Runtime, batch: int, new: int, cache: Any, encoder_tokens: int = 0
    ) -> tuple[Any, Any]:
        """Append ``new`` tokens to ``cache``: the decoder over them, the output projection on the last one."""
        body, head = self.lm_parts(model)
        out = _call_with_cache(body, cache, inputs_embeds=rt.floats(batch, new, self.hidden()))
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return head(hidden[:, -1:]), _cache_of(out)

    def generate(
        self,
        model: Any,
        rt: Runtime,
        batch: int,
        size: Size | None,
        prompt: int,
        new: int,
        vision: bool = True,
        cached: int = 0,
    ) -> int:
        """The whole call for real (measurement): vision (unless its output is reused, ``vision=False``), the
        prefill of the prompt beyond ``cached`` tokens already in the cache, then ``new`` decoding steps; returns
        the tokens made."""
        if size is not None and self.has_vision() and vision:
            self.vision(model, rt, batch, size)
        total = prompt + (self.image_tokens(size) if size is not None and self.has_vision() else 0)
        held = min(max(0, cached), total - 1)
        cache = self.make_cache(model, rt, batch, held) if held else None
        _, cache = self.extend(model, rt, batch, max(1, total - held), cache)
        for _ in range(new):
            _, cache = self.extend(model, rt, batch, 1, cache)
        return new


class Llava(Generative):
    model_types = ("llava",)

    def has_vision(self) -> bool:
        return True

    def native_size(self) -> int:
        return int(self.config.vision_config.image_size)

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        s = self.native_size()
        return s, s

    def image_tokens(self, size: Size) -> int:
        vc = self.config.vision_config
        n = (int(vc.image_size) // int(vc.patch_size)) ** 2
        return n if self.config.vision_feature_select_strategy == "default" else n + 1

    def vision(self, model: Any, rt: Runtime, batch: int, size: Size) -> Any:
        return model.model.get_image_features(pixel_values=rt.floats(batch, 3, *size))

    def lm_parts(self, model: Any) -> tuple[Any, Any]:
        return model.model.language_model, model.lm_head


class QwenVL(Generative):
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL: native-resolution vision tower (patches merged 2×2 into one token)."""

    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

    def has_vision(self) -> bool:
        return True

    def _patch(self) -> tuple[int, int, int]:
        vc = self.config.vision_config
        return int(vc.patch_size), int(vc.spatial_merge_size), int(vc.temporal_patch_size)

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        patch, merge, _ = self._patch()
        pre = {"patch_size": patch, "merge_size": merge, **self.pre}
        pre.setdefault("max_pixels", 1 << 40)
        return processed_size(pre, height, width, 448)

    def image_tokens(self, size: Size) -> int:
        patch, merge, _ = self._patch()
        return (size[0] // patch) * (size[1] // patch) // (merge * merge)

    def vision(self, model: Any, rt: Runtime, batch: int, size: Size) -> Any:
        import torch

        patch, _, temporal = self._patch()
        gh, gw = size[0] // patch, size[1] // patch
        grid = rt.index(torch.tensor([[1, gh, gw]] * batch))
        pixels = rt.floats(batch * gh * gw, 3 * temporal * patch * patch)
        return model.model.get_image_features(pixel_values=pixels, image_grid_thw=grid)

    def lm_parts(self, model: Any) -> tuple[Any, Any]:
        return model.model.language_model, model.lm_head


class Blip2(Generative):
    """BLIP-2: ViT-g, the Q-Former's 32 query tokens, then OPT (or Flan-T5, not handled) over them."""

    model_types = ("blip-2",)

    def has_vision(self) -> bool:
        return True

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        s = int(self.config.vision_config.image_size)
        return s, s

    def image_tokens(self, size: Size) -> int:
        return int(self.config.num_query_tokens)

    def vision(self, model: Any, rt: Runtime, batch: int, size: Size) -> Any:
        # get_image_features' own all-ones mask would live on the meta device; pass a real one
        image = model.vision_model(pixel_values=rt.floats(batch, 3, *size)).last_hidden_state
        queries = model.qformer(
            query_embeds=model.query_tokens.expand(batch, -1, -1),
            encoder_hidden_states=image,
            encoder_attention_mask=rt.ones(batch, image.shape[1]),
        ).last_hidden_state
        return model.language_projection(queries)

    def lm_parts(self, model: Any) -> tuple[Any, Any]:
        lm = model.language_model
        if hasattr(lm, "lm_head"):
            body = lm.model.decoder if hasattr(lm.model, "decoder") else lm.model
            return body, lm.lm_head
        body = lm.decoder if hasattr(lm, "decoder") else lm
        return body, model.lm_head


class Florence2(Generative):
    """Florence-2: DaViT image tokens and the prompt through a BART encoder; the BART decoder generates."""

    model_types = ("florence2",)

    def has_vision(self) -> bool:
        return True

    def input_size(self, height: int, width: int, crop: bool = False) -> Size:
        return processed_size(self.pre, height, width, 768)

    def image_tokens(self, size: Size) -> int:
        # DaViT downsamples by 32; the projector adds one pooled token
        return (size[0] // 32) * (size[1] // 32) + 1

    def vision(self, model: Any, rt: Runtime, batch: int, size: Size) -> Any:
        return model.model.get_image_features(pixel_values=rt.floats(batch, 3, *size))

    def hidden(self) -> int:
        return int(self.text_config.d_model)

    def lm_parts(self, model: Any) -> tuple[Any, Any]:
        return model.model.language_model.decoder, model.lm_head

    def encode(self, model: Any, rt: Runtime, batch: int, tokens: int) -> Any:
        encoder = model.model.language_model.encoder
        return encoder(inputs_embeds=rt.floats(batch, tokens, self.hidden()))

    layers_attr = "decoder_layers"

    def kv_shape(self) -> tuple[int, int, int]:
        tc = self.text_config
        heads = int(tc.decoder_attention_heads)
        return int(tc.decoder_layers), heads, int(tc.d_model) // heads

    def make_cache(self, model: Any, rt: Runtime, batch: int, context: int, encoder_tokens: int = 1) -> Any:
        """Self-attention keys/values of ``context`` decoded tokens and cross-attention ones of the encoder output."""
        from transformers import DynamicCache, EncoderDecoderCache

        if context <= 0:
            return None
        layers, heads, head_dim = self.kv_shape()
        own, cross = DynamicCache(), DynamicCache()
        for layer in range(layers):
            own.update(rt.floats(batch, heads, context, head_dim), rt.floats(batch, heads, context, head_dim), layer)
            enc = max(1, encoder_tokens)
            cross.update(rt.floats(batch, heads, enc, head_dim), rt.floats(batch, heads, enc, head_dim), layer)
        cache = EncoderDecoderCache(own, cross)
        for layer in range(layers):
            cache.is_updated[layer] = True
        return cache

    def extend(
        self, model: Any, rt: Runtime, batch: int, new: int, cache: Any, encoder_tokens: int = 1
    ) -> tuple[Any, Any]:
        encoder_tokens = max(1, encoder_tokens)
        body, head = self.lm_parts(model)
        out = _call_with_cache(
            body,
            cache,
            inputs_embeds=rt.floats(batch, new, self.hidden()),
            encoder_hidden_states=rt.floats(batch, encoder_tokens, self.hidden()),
        )
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return head(hidden[:, -1:]), _cache_of(out)

    def generate(
        self,
        model: Any,
        rt: Runtime,
        batch: int,
        size: Size | None,
        prompt: int,
        new: int,
        vision: bool = True,
        cached: int = 0,
    ) -> int:
        if size is not None and vision:
            self.vision(model, rt, batch, size)
        enc = prompt + (self.image_tokens(size) if size is not None else 0)
        self.encode(model, rt, batch, enc)
        _, cache = self.extend(model, rt, batch, 1, None, encoder_tokens=enc)  # the decoder start token
        for _ in range(new):
            _, cache = self.extend(model, rt, batch, 1, cache, encoder_tokens=enc)
        return new


ARCHS: tuple[type[Arch], ...] = (
    DenseVision,
    OpenClip,
    Siglip,
    Owl,
    GroundingDino,
    SegmentAnything,
    HfSam,
    Sam3,
    TextEncoder,
    Llava,
    QwenVL,
    Blip2,
    Florence2,
    Generative,
)


def arch_for(mc: ModelConfig) -> Arch:
    """The :class:`Arch` that handles a configuration (by library, then by ``model_type``)."""
    model_type = mc.library if mc.library != "transformers" else str(mc.config.get("model_type", ""))
    for cls in ARCHS:
        if model_type in cls.model_types:
            return cls(mc)
    known = sorted(t for cls in ARCHS for t in cls.model_types)
    raise ValueError(
        f"configuration {mc.key!r} has model_type {model_type!r}, which the cost model cannot build; "
        f"known: {', '.join(known)}"
    )
