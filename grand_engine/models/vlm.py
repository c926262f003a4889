"""Image-text generation (family ``vlm``): captioning, dense region captions, region descriptions and
phrase grounding through ``AutoModelForImageTextToText`` + ``AutoProcessor``.

One adapter serves BLIP-2, LLaVA-1.5 / LLaVA-NeXT (chat-templated prompts), Florence-2 (native
class; task prompts such as ``<DENSE_REGION_CAPTION>``, ``<REGION_TO_DESCRIPTION>``,
``<CAPTION_TO_PHRASE_GROUNDING>``) and Kosmos-2. Every box returned is ``(x1, y1, x2, y2)`` in
original-image pixels, clipped to the image.

Two backends (``spec.backend``): ``transformers`` (default; ``generate`` in batches of ``max_batch_size``) and
``vllm`` for chat VLMs (Qwen-VL, LLaVA): vLLM's offline multimodal engine with prefix caching on, so every question
asked about one image after the first finds the image's encoding and its prompt prefix in vLLM's encoder and
prefix caches (the image comes first in the user turn), and a whole unit's prompts go to the engine at once.
Florence-2 computes the vision features of an image once and reuses them for every prompt about that image (all the
regions of ``<REGION_TO_DESCRIPTION>``, several captions to ground), within a call and across calls while the
image array is alive and read-only (:class:`~grand_engine.models.imaging.ImageCache`): the outputs are those of encoding it each time.

Florence-2 quantises coordinates into 1000 bins per axis: a pixel coordinate ``x`` of an image ``W``
wide becomes ``<loc_q>`` with ``q = clamp(floor(x * 1000 / W), 0, 999)``, and ``<loc_q>`` decodes
to the bin centre ``(q + 0.5) * W / 1000``, truncated to an integer by the processor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from PIL import Image

from grand_engine.models.base import Adapter, hf_load_kwargs
from grand_engine.models.imaging import ImageCache
from grand_engine.models.llm import (
    eos_token_ids,
    greedy_generation_config,
    map_vllm_finish_reason,
    per_item_seeds,
    prepare_for_generation,
    seeded_sampler,
    split_completion,
)

Box = tuple[float, float, float, float]

LOC_BINS = 1000  # Florence-2 quantisation bins per axis
DENSE_REGION_CAPTION = "<DENSE_REGION_CAPTION>"
REGION_TO_DESCRIPTION = "<REGION_TO_DESCRIPTION>"
PHRASE_GROUNDING = "<CAPTION_TO_PHRASE_GROUNDING>"
KOSMOS_GROUNDING_PROMPT = "<grounding>An image of"
PADDING_SENSITIVE = frozenset({"kosmos-2"})  # model types that must not be batched with left padding


@dataclass(frozen=True)
class Generation:
    """One generated text and why generation ended (``"stop"`` or ``"length"``)."""

    text: str
    finish_reason: str


@dataclass(frozen=True)
class RegionText:
    """A box (xyxy, original-image pixels) with the text the model attached to it."""

    box: Box
    text: str


@dataclass(frozen=True)
class GroundedCaption:
    """A Kosmos-2 grounded caption: the clean caption and its phrases, each with a character span
    ``[start, end)`` into ``caption`` and its boxes in pixels."""

    caption: str
    phrases: list[tuple[str, tuple[int, int], list[Box]]]


def to_pil(image: Any) -> Any:
    """An RGB PIL image from a PIL image or an HxWx3 / HxW uint8 array; anything else raises ``TypeError``."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray) and image.ndim in (2, 3) and image.size > 0:
        array = image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    raise TypeError(f"expected a PIL image or an HxWx3 uint8 array, got {type(image).__name__}")


def image_size(image: Any) -> tuple[int, int]:
    """``(width, height)`` of a PIL image or an ``H×W[×C]`` array (what :func:`to_pil` would give)."""
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return int(image.shape[1]), int(image.shape[0])
    return to_pil(image).size


@cache
def _placeholder() -> Any:
    """A small grey image standing in for real ones where only the prompt's token ids are wanted."""
    return Image.new("RGB", (32, 32), (128, 128, 128))


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """Clip an xyxy box to ``[0, width] x [0, height]``, ordering the corners (``x1 <= x2``, ``y1 <= y2``)."""
    a, b, c, d = (float(v) for v in box)
    x1, x2 = min(a, c), max(a, c)
    y1, y2 = min(b, d), max(b, d)
    return (
        min(max(x1, 0.0), float(width)),
        min(max(y1, 0.0), float(height)),
        min(max(x2, 0.0), float(width)),
        min(max(y2, 0.0), float(height)),
    )


def box_to_loc_bins(box: Sequence[float], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Quantise an xyxy pixel box of an image of ``image_size = (width, height)`` into Florence-2 bins."""
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in box)

    def quantise(v: float, size: int) -> int:
        return min(max(math.floor(v * LOC_BINS / size), 0), LOC_BINS - 1)

    return quantise(x1, width), quantise(y1, height), quantise(x2, width), quantise(y2, height)


def box_to_loc_tokens(box: Sequence[float], image_size: tuple[int, int]) -> str:
    """The ``<loc_…>`` string of an xyxy pixel box (the input of ``<REGION_TO_DESCRIPTION>``)."""
    return "".join(f"<loc_{q}>" for q in box_to_loc_bins(box, image_size))


def loc_bins_to_box(bins: Sequence[int], image_size: tuple[int, int]) -> Box:
    """Bin centres of four Florence-2 bins as an xyxy pixel box (the inverse of :func:`box_to_loc_bins`)."""
    width, height = image_size
    x1, y1, x2, y2 = (int(b) for b in bins)
    return (
        (x1 + 0.5) * width / LOC_BINS,
        (y1 + 0.5) * height / LOC_BINS,
        (x2 + 0.5) * width / LOC_BINS,
        (y2 + 0.5) * height / LOC_BINS,
    )


FEATURE_CACHE_IMAGES = 16
"""Images whose Florence-2 vision features an adapter keeps between calls (``image_feature_cache`` option)."""


class VLM(Adapter):
    """A captioning / grounding VLM. ``spec.options``: ``chat`` (bool, force or disable the chat template;
    default: use it when the processor has one), ``max_batch_size`` (images per ``generate``, default 8),
    ``min_pixels`` / ``max_pixels`` (native-resolution processors such as Qwen-VL's: the pixel budget an image is
    resized into, which sets its number of visual tokens), ``image_feature_cache`` (Florence-2: images whose vision
    features are kept between calls, default 16; 0 keeps none). With ``backend: vllm`` also
    ``gpu_memory_utilization``, ``max_model_len``, ``max_num_seqs``, ``kv_cache_dtype``, ``engine_kwargs`` (see
    :class:`VllmVLM`)."""

    family = "vlm"

    def load(self) -> None:
        # transformers is heavy: imported on first use
        from transformers import AutoModelForImageTextToText, AutoProcessor

        backend = self.spec.backend or "transformers"
        if backend not in ("transformers", "vllm"):
            raise ValueError(f"model {self.spec.id!r}: unknown vlm backend {backend!r} (use 'transformers' or 'vllm')")
        kwargs = hf_load_kwargs(self.spec)
        self.processor = AutoProcessor.from_pretrained(self.model_path, **kwargs)
        self.tokenizer = self.processor.tokenizer
        has_template = getattr(self.processor, "chat_template", None) is not None
        self.chat = bool(self.spec.options.get("chat", has_template))
        self.max_batch_size = int(self.spec.options.get("max_batch_size", 8))
        self._set_pixel_budget()
        self.features = ImageCache(int(self.spec.options.get("image_feature_cache", FEATURE_CACHE_IMAGES)))
        if backend == "vllm":
            self.engine: VllmVLM | None = VllmVLM(self.spec, self.model_path, self.processor)
            self.model_type = self.engine.model_type
            self.encoder_decoder = False
            return
        self.engine = None
        model = AutoModelForImageTextToText.from_pretrained(self.model_path, dtype=self.dtype, **kwargs)
        self.model = model.to(self.device).eval()
        self.model_type = str(self.model.config.model_type)
        self.encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        if not self.encoder_decoder:
            self.tokenizer.padding_side = "left"  # batched decoder-only generation continues from the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        prepare_for_generation(self.model)

    def _set_pixel_budget(self) -> None:
        """Apply ``min_pixels`` / ``max_pixels`` to a processor that resizes into a pixel budget (its ``size`` holds
        ``shortest_edge`` / ``longest_edge`` as pixel counts); any other processor rejects them."""
        wanted = {k: int(self.spec.options[k]) for k in ("min_pixels", "max_pixels") if k in self.spec.options}
        if not wanted:
            return
        image_processor = self.processor.image_processor
        size = dict(getattr(image_processor, "size", None) or {})
        if "longest_edge" not in size or not hasattr(image_processor, "merge_size"):
            raise ValueError(f"model {self.spec.id!r}: min_pixels/max_pixels need a native-resolution processor")
        if "min_pixels" in wanted:
            size["shortest_edge"] = wanted["min_pixels"]
        if "max_pixels" in wanted:
            size["longest_edge"] = wanted["max_pixels"]
        image_processor.size = size

    # ------------------------------------------------------------------ generic generation

    def generate(
        self,
        images: Sequence[Any],
        prompts: str | Sequence[str],
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | Sequence[int] = 0,
    ) -> list[Generation]:
        """Generate one text per image. ``prompts`` is one prompt for every image or one per image.

        Chat models get each prompt as a user turn with the image (the processor's chat template);
        Florence-2 takes task prompts (``<CAPTION>``, ``<MORE_DETAILED_CAPTION>``, …); BLIP-2 and
        Kosmos-2 take plain text prefixes. The returned text is the decoded continuation only.
        """
        texts, reasons = self._run(images, prompts, max_new_tokens, do_sample, temperature, top_p, seed)
        return [Generation(text=self._clean(t), finish_reason=r) for t, r in zip(texts, reasons, strict=True)]

    def _clean(self, raw: str) -> str:
        if self.model_type == "kosmos-2":
            return self.processor.post_process_generation(raw, cleanup_and_extract=True)[0]
        return self._strip_specials(raw)

    def _strip_specials(self, raw: str) -> str:
        for token in self.tokenizer.all_special_tokens:
            raw = raw.replace(token, "")
        return raw.strip()

    def _prompt(self, prompt: str, media: str = "image") -> str:
        """``prompt`` in the chat template with one ``media`` item ("image" or "video") before it; unchanged for a
        model without a chat template or a prompt that already holds the processor's placeholder."""
        placeholder = getattr(self.processor, f"{media}_token", None)
        if not self.chat or (placeholder and placeholder in prompt):
            return prompt
        messages = [{"role": "user", "content": [{"type": media}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def _run(
        self,
        images: Sequence[Any],
        prompts: str | Sequence[str],
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | Sequence[int] = 0,
    ) -> tuple[list[str], list[str]]:
        """Raw decoded continuations (special tokens kept) and finish reasons, in input order. Entries of
        ``images`` that are the same object are one image (Florence-2 encodes it once)."""
        sources = list(images)
        converted: dict[int, Any] = {}
        for im in sources:
            if id(im) not in converted:
                converted[id(im)] = to_pil(im)
        pil = [converted[id(im)] for im in sources]
        texts = [prompts] * len(pil) if isinstance(prompts, str) else list(prompts)
        if len(texts) != len(pil):
            raise ValueError(f"got {len(texts)} prompts for {len(pil)} images")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        seeds = per_item_seeds(seed, len(pil))
        rendered = [self._prompt(p) for p in texts]
        if self.engine is not None:  # vLLM schedules the whole list itself
            return self.engine.generate(pil, rendered, max_new_tokens, temperature if do_sample else 0.0, top_p, seeds)
        features = self._florence_features(sources, pil) if self.model_type == "florence2" else None
        out_texts: list[str] = [""] * len(pil)
        reasons: list[str] = [""] * len(pil)
        for group in self._batches(rendered):
            t, r = self._generate_batch(
                [pil[i] for i in group],
                [rendered[i] for i in group],
                max_new_tokens,
                temperature if do_sample else 0.0,
                top_p,
                [seeds[i] for i in group],
                [sources[i] for i in group],
                features,
            )
            for i, text, reason in zip(group, t, r, strict=True):
                out_texts[i], reasons[i] = text, reason
        return out_texts, reasons

    def _batches(self, prompts: list[str]) -> list[list[int]]:
        """Index batches of at most ``max_batch_size``. Models whose decoding positions ignore left padding
        (Kosmos-2 counts cached positions, pads included) only batch identical prompts, which need no padding."""
        if self.model_type in PADDING_SENSITIVE:
            groups: dict[str, list[int]] = {}
            for i, p in enumerate(prompts):
                groups.setdefault(p, []).append(i)
            ordered = list(groups.values())
        else:
            ordered = [list(range(len(prompts)))]
        return [g[k : k + self.max_batch_size] for g in ordered for k in range(0, len(g), self.max_batch_size)]

    def _generate_batch(
        self,
        images: list[Any],
        prompts: list[str],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int],
        sources: list[Any] | None = None,
        features: dict[int, Any] | None = None,
    ) -> tuple[list[str], list[str]]:
        if self.model_type == "florence2":
            sources = sources or images
            if features is None:
                features = self._florence_features(sources, images)
            inputs = self._florence_inputs(features, prompts, sources)
        else:
            inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True)
            inputs = inputs.to(self.device)
            if "pixel_values" in inputs and self.dtype is not None:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return self._complete_inputs(inputs, max_new_tokens, temperature, top_p, seeds)

    def _complete_inputs(
        self, inputs: Any, max_new_tokens: int, temperature: float, top_p: float, seeds: list[int]
    ) -> tuple[list[str], list[str]]:
        """``generate`` on processed inputs (greedy, or seeded sampling per row); each row's continuation decoded,
        with the reason it stopped."""
        # torch is heavy: imported on first use
        import torch

        config = greedy_generation_config(max_new_tokens, self.eos_ids, self.tokenizer.pad_token_id)
        processors = [seeded_sampler(temperature, top_p, seeds)] if temperature > 0 else []
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=config, logits_processor=processors)
        if self.encoder_decoder:
            new = out[:, 1:]  # drop the decoder start token
        else:
            prompt_len = inputs["input_ids"].shape[1]
            same_prefix = out.shape[1] >= prompt_len and bool((out[:, :prompt_len] == inputs["input_ids"]).all())
            new = out[:, prompt_len:] if same_prefix else out
        texts, reasons = [], []
        for row in new.tolist():
            kept, reason = split_completion(row, self.eos_ids, max_new_tokens)
            kept = [t for t in kept if t != self.tokenizer.pad_token_id]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=False))
            reasons.append(reason)
        return texts, reasons

    def _florence_features(self, sources: list[Any], images: list[Any]) -> dict[int, Any]:
        """Florence-2 vision features of each distinct image (by object) of a call: from :attr:`features` when it
        holds them, else one vision-tower pass over all the others (in ``max_batch_size`` chunks)."""
        # torch is heavy: imported on first use
        import torch

        features: dict[int, Any] = {}
        todo: dict[int, tuple[Any, Any]] = {}
        for source, image in zip(sources, images, strict=True):
            if id(source) not in features and id(source) not in todo:
                cached = self.features.get(source)
                if cached is not None:
                    features[id(source)] = cached
                else:
                    todo[id(source)] = (source, image)
        pending = list(todo.items())
        with torch.inference_mode():
            for start in range(0, len(pending), self.max_batch_size):
                part = pending[start : start + self.max_batch_size]
                pixels = self.processor.image_processor(images=[im for _, (_, im) in part], return_tensors="pt")
                values = pixels["pixel_values"].to(self.device, dtype=self.dtype or torch.float32)
                encoded = self.model.get_image_features(pixel_values=values).pooler_output
                for row, (key, (source, _)) in enumerate(part):
                    features[key] = encoded[row : row + 1]
                    self.features.put(source, features[key])
        return features

    def _florence_inputs(self, features: dict[int, Any], prompts: list[str], sources: list[Any]) -> dict[str, Any]:
        """``generate`` inputs for Florence-2 with the encoder already run: each prompt's image features (``features``
        by image object) put in place of the image tokens as the model's own forward does, then the text encoder."""
        # torch is heavy: imported on first use
        import torch

        with torch.inference_mode():
            # the token ids depend on the prompts only: every image takes the same number of placeholder tokens
            text = self.processor(
                images=[_placeholder()] * len(prompts), text=prompts, return_tensors="pt", padding=True
            )
            ids = text["input_ids"].to(self.device)
            mask = text["attention_mask"].to(self.device)
            embeds = self.model.get_input_embeddings()(ids)
            image_features = torch.cat([features[id(s)] for s in sources]).to(embeds.dtype)
            slots = (ids == self.model.config.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(slots, image_features)
            encoder = self.model.model.language_model.encoder
            encoded_text = encoder(inputs_embeds=embeds, attention_mask=mask)
        return {"input_ids": ids, "attention_mask": mask, "encoder_outputs": encoded_text}

    # ------------------------------------------------------------------ Florence-2 tasks

    def _require_florence(self, what: str) -> None:
        if self.model_type != "florence2":
            raise NotImplementedError(f"{what} needs a Florence-2 checkpoint; {self.spec.id!r} is {self.model_type}")

    def parse_florence(self, text: str, task: str, image_size: tuple[int, int]) -> Any:
        """``processor.post_process_generation`` for ``task`` on an image of ``(width, height)``; boxes in pixels."""
        return self.processor.post_process_generation(text, task=task, image_size=image_size)[task]

    def florence_regions(self, text: str, task: str, image_size: tuple[int, int]) -> list[RegionText]:
        """Regions of a generated Florence-2 ``text`` for a box-producing ``task`` (dense captions, grounding,
        ``<OD>``): pixel boxes of an image of ``(width, height)``, corners ordered and clipped to the image."""
        parsed = self.parse_florence(text, task, image_size)
        width, height = image_size
        return [
            RegionText(box=clip_box(box, width, height), text=str(label).strip())
            for box, label in zip(parsed.get("bboxes", []), parsed.get("labels", []), strict=True)
        ]

    def dense_region_captions(self, images: Sequence[Any], *, max_new_tokens: int = 1024) -> list[list[RegionText]]:
        """Florence-2 ``<DENSE_REGION_CAPTION>``: per image, the captioned regions (GRiT-style)."""
        self._require_florence("dense_region_captions")
        pil = [to_pil(im) for im in images]
        texts, _ = self._run(pil, DENSE_REGION_CAPTION, max_new_tokens)
        return [self.florence_regions(t, DENSE_REGION_CAPTION, im.size) for t, im in zip(texts, pil, strict=True)]

    def region_description(
        self, image: Any, boxes: Sequence[Sequence[float]], *, max_new_tokens: int = 64
    ) -> list[str]:
        """Florence-2 ``<REGION_TO_DESCRIPTION>``: one description per xyxy pixel box of ``image`` (the image is
        encoded once for all boxes)."""
        return self.region_descriptions([image], [boxes], max_new_tokens=max_new_tokens)[0]

    def region_descriptions(
        self, images: Sequence[Any], boxes: Sequence[Sequence[Sequence[float]]], *, max_new_tokens: int = 64
    ) -> list[list[str]]:
        """:meth:`region_description` for several images at once: every box of every image in one batched
        generation (``max_batch_size`` prompts per ``generate``), each image encoded once."""
        self._require_florence("region_descriptions")
        if len(images) != len(boxes):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        sizes = [image_size(im) for im in images]
        owners, sources, prompts = [], [], []
        for k, (source, size, image_boxes) in enumerate(zip(images, sizes, boxes, strict=True)):
            for b in image_boxes:
                owners.append(k)
                sources.append(source)
                prompts.append(REGION_TO_DESCRIPTION + box_to_loc_tokens(clip_box(b, *size), size))
        out: list[list[str]] = [[] for _ in images]
        if not prompts:
            return out
        texts, _ = self._run(sources, prompts, max_new_tokens)
        for k, text in zip(owners, texts, strict=True):
            out[k].append(self.parse_florence(text, REGION_TO_DESCRIPTION, sizes[k]))
        return out

    def phrase_grounding(self, image: Any, caption: str, *, max_new_tokens: int = 256) -> list[RegionText]:
        """Florence-2 ``<CAPTION_TO_PHRASE_GROUNDING>``: the phrases of ``caption`` with their boxes, one entry
        per box."""
        self._require_florence("phrase_grounding")
        texts, _ = self._run([image], PHRASE_GROUNDING + caption, max_new_tokens)
        return self.florence_regions(texts[0], PHRASE_GROUNDING, image_size(image))

    def ground_phrases(
        self, image: Any, caption: str, spans: Sequence[tuple[int, int]], threshold: float = 0.0
    ) -> list[tuple[np.ndarray, float] | None]:
        """The grounder interface of the ``grounding_dino`` family on Florence-2: ``<CAPTION_TO_PHRASE_GROUNDING>``
        runs once on the whole caption, and each character span ``[start, end)`` takes the first box whose phrase
        matches it (:func:`same_phrase`). Florence-2 gives no score, so a grounded span scores 1.0; a span with no
        matching phrase (or an empty one) gets None. ``threshold`` is accepted for the interface (1.0 passes any)."""
        return self.ground_phrases_batch([(image, caption, spans)], threshold)[0]

    def ground_phrases_batch(
        self, requests: Sequence[tuple[Any, str, Sequence[tuple[int, int]]]], threshold: float = 0.0
    ) -> list[list[tuple[np.ndarray, float] | None]]:
        """:meth:`ground_phrases` for several ``(image, caption, spans)`` at once: every caption grounded in one
        batched generation (an image object repeated across requests is encoded once)."""
        for _, caption, spans in requests:
            for s, e in spans:
                if not 0 <= s <= e <= len(caption):
                    raise ValueError(f"span ({s}, {e}) is outside the caption of length {len(caption)}")
        todo = [k for k, (_, caption, spans) in enumerate(requests) if any(caption[s:e].strip() for s, e in spans)]
        regions: dict[int, list[RegionText]] = {}
        if todo:
            self._require_florence("ground_phrases_batch")
            images = [requests[k][0] for k in todo]
            texts, _ = self._run(images, [PHRASE_GROUNDING + requests[k][1] for k in todo], 256)
            for k, image, text in zip(todo, images, texts, strict=True):
                regions[k] = self.florence_regions(text, PHRASE_GROUNDING, image_size(image))
        out: list[list[tuple[np.ndarray, float] | None]] = []
        for k, (_, caption, spans) in enumerate(requests):
            found: list[tuple[np.ndarray, float] | None] = []
            for s, e in spans:
                phrase = caption[s:e]
                match = next((r for r in regions.get(k, []) if phrase.strip() and same_phrase(r.text, phrase)), None)
                found.append(None if match is None or threshold > 1.0 else (np.asarray(match.box, np.float32), 1.0))
            out.append(found)
        return out

    # ------------------------------------------------------------------ Kosmos-2

    def grounded_captions(
        self, images: Sequence[Any], *, prompt: str = KOSMOS_GROUNDING_PROMPT, max_new_tokens: int = 128
    ) -> list[GroundedCaption]:
        """Kosmos-2 grounded captions; phrase boxes converted from normalised to pixel coordinates."""
        if self.model_type != "kosmos-2":
            raise NotImplementedError(
                f"grounded_captions needs a Kosmos-2 checkpoint; {self.spec.id!r} is {self.model_type}"
            )
        pil = [to_pil(im) for im in images]
        texts, _ = self._run(pil, prompt, max_new_tokens)
        results = []
        for raw, im in zip(texts, pil, strict=True):
            caption, entities = self.processor.post_process_generation(prompt + raw, cleanup_and_extract=True)
            results.append(GroundedCaption(caption=caption, phrases=kosmos_entities_to_pixels(entities, im.size)))
        return results


class VllmVLM:
    """A chat VLM (Qwen-VL, LLaVA …) on vLLM's offline engine (GPU); vLLM is imported here only, so it stays an
    optional dependency.

    Each request is ``{"prompt": <chat-templated text with the model's image placeholder>, "multi_modal_data":
    {"image": <PIL image>}}``, vLLM's offline multimodal input; the whole list goes to ``LLM.generate`` in one call
    and vLLM batches it. The engine is built with ``enable_prefix_caching=True`` and ``limit_mm_per_prompt={"image":
    1}``; ``min_pixels`` / ``max_pixels`` become ``mm_processor_kwargs`` (Qwen-VL's visual-token budget), and
    ``gpu_memory_utilization``, ``max_model_len``, ``max_num_seqs``, ``kv_cache_dtype`` and ``engine_kwargs`` pass
    through. Sampling is seeded per request (``SamplingParams(seed=…)``)."""

    def __init__(self, spec: Any, path: str, processor: Any) -> None:
        try:
            # vllm is heavy and optional (GPU machines): imported on first use
            from vllm import LLM as VllmEngine
        except ImportError as exc:
            raise ImportError(
                f"model {spec.id!r}: backend 'vllm' needs the vllm package (pip install 'grand-engine[vllm]' on a GPU "
                f"machine), or set backend: transformers"
            ) from exc
        # transformers is heavy: imported on first use (the configuration only, to know the model type)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, **hf_load_kwargs(spec))
        self.model_type = str(config.model_type)
        if getattr(config, "is_encoder_decoder", False):
            raise ValueError(
                f"model {spec.id!r} ({self.model_type}) is an encoder-decoder: the vllm backend serves chat VLMs "
                f"(Qwen-VL, LLaVA); use backend: transformers"
            )
        opts = spec.options
        kwargs: dict[str, Any] = {
            "model": path,
            "trust_remote_code": spec.trust_remote_code,
            "gpu_memory_utilization": float(opts.get("gpu_memory_utilization", 0.9)),
            "seed": int(opts.get("seed", 0)),
            "enable_prefix_caching": True,
            "limit_mm_per_prompt": {"image": 1},
        }
        if spec.revision:
            kwargs["revision"] = spec.revision
        if spec.dtype != "auto":
            kwargs["dtype"] = spec.dtype
        for key in ("max_model_len", "max_num_seqs", "kv_cache_dtype"):
            if opts.get(key) is not None:
                kwargs[key] = opts[key]
        pixels = {k: int(opts[k]) for k in ("min_pixels", "max_pixels") if k in opts}
        if pixels:
            kwargs["mm_processor_kwargs"] = pixels
        kwargs.update(opts.get("engine_kwargs", {}))
        self.engine = VllmEngine(**kwargs)

    def generate(
        self,
        images: list[Any],
        prompts: list[str],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int],
    ) -> tuple[list[str], list[str]]:
        """Texts and finish reasons (``stop`` / ``length``) of one request per (image, rendered prompt)."""
        # vllm is heavy and optional (GPU machines): imported on first use
        from vllm import SamplingParams

        params = [
            SamplingParams(temperature=max(temperature, 0.0), top_p=top_p, max_tokens=max_new_tokens, seed=s)
            for s in seeds
        ]
        requests = [
            {"prompt": prompt, "multi_modal_data": {"image": image}}
            for prompt, image in zip(prompts, images, strict=True)
        ]
        outputs = self.engine.generate(requests, sampling_params=params, use_tqdm=False)
        texts = [o.outputs[0].text for o in outputs]
        return texts, [map_vllm_finish_reason(o.outputs[0].finish_reason) for o in outputs]


ARTICLES = ("a ", "an ", "the ")


def _phrase_key(text: str) -> str:
    words = " ".join("".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split())
    for article in ARTICLES:
        if words.startswith(article):
            return words[len(article) :]
    return words


def same_phrase(found: str, wanted: str) -> bool:
    """True when a grounded phrase names the wanted one: equal once lower-cased, stripped of punctuation and of a
    leading article (``A red car.`` matches ``the red car``)."""
    key = _phrase_key(wanted)
    return bool(key) and _phrase_key(found) == key


def kosmos_entities_to_pixels(
    entities: Sequence[tuple[str, tuple[int, int], Sequence[Sequence[float]]]], image_size: tuple[int, int]
) -> list[tuple[str, tuple[int, int], list[Box]]]:
    """Kosmos-2 entities ``(phrase, (start, end), [normalised xyxy, …])`` with boxes scaled to an image of
    ``(width, height)`` pixels and clipped to it."""
    width, height = image_size
    return [
        (
            name,
            (int(span[0]), int(span[1])),
            [clip_box((b[0] * width, b[1] * height, b[2] * width, b[3] * height), width, height) for b in boxes],
        )
        for name, span, boxes in entities
    ]
