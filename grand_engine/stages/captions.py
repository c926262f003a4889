"""``caption_blip2`` and ``caption_vlm``: one short caption per image (GranD steps 11 and 12).

* ``caption_blip2`` (BLIP-2 slot, step 11): the image's long side is first downscaled to ``long_side`` pixels
  with Lanczos filtering (the reference resized to 384 before the processor), then the VLM generates greedily
  from an empty prompt with at most ``max_new_tokens`` new tokens (the reference used the library's default
  length, 20 tokens).
* ``caption_vlm`` (LLaVA slot, step 12): a one-sentence caption instruction read from the prompt file
  ``prompts/<prompt>`` (``caption_vlm.txt``), sampled at ``temperature`` (0.2) with at most ``max_new_tokens``
  (1024) new tokens. Sampling is seeded per image (``seed`` and the image id), so a caption does not depend on
  which other images share its batch and reruns reproduce it.

Both write ``caption`` as produced (decoded continuation, surrounding whitespace stripped; case kept — the
reference lower-cased the LLaVA caption, which lost proper nouns and made spans of the stored text disagree
with what the model wrote), ``caption_normalised`` (lower-cased, runs of whitespace collapsed to one space: the
form to compare captions with) and ``finish_reason`` (``stop``, or ``length`` when the token limit cut the
caption, recorded rather than dropped).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.resources import prompt_file
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema

CAPTION_SCHEMA = table_schema(
    ("caption", pa.string()),
    ("caption_normalised", pa.string()),
    ("finish_reason", pa.string()),
)
"""The table of both caption stages."""


def normalise_caption(text: str | None) -> str | None:
    """Lower-case and collapse whitespace (``None`` stays ``None``)."""
    if text is None:
        return None
    return " ".join(text.lower().split())


def image_seed(seed: int, image_id: str) -> int:
    """A per-image sampling seed derived from the stage seed and the image id (stable across runs)."""
    digest = hashlib.sha256(f"{int(seed)}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def resize_long_side(pixels: np.ndarray, long_side: int | None) -> np.ndarray:
    """Downscale an ``H×W×3`` image so its long side is ``long_side`` (Lanczos); smaller images are kept.

    ``long_side`` of ``None`` or ``0`` disables the resize.
    """
    if not long_side:
        return pixels
    h, w = pixels.shape[:2]
    if max(h, w) <= long_side:
        return pixels
    from PIL import Image

    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


@dataclass
class _CaptionStage(Stage):
    """Shared logic: batch the unit's images through the ``vlm`` slot and write one caption per image."""

    requires: ClassVar[tuple[str, ...]] = ("images",)
    level: ClassVar[int | None] = 2
    schema: ClassVar[pa.Schema] = CAPTION_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("vlm",)

    vlm: Any = collaborator()  # the captioning VLM adapter; loaded from the `vlm` slot when None

    def setup(self) -> None:
        if self.vlm is None:
            self.vlm = self.load_model("vlm")
        self.prompt_text = self._prompt_text()

    def _prompt_text(self) -> str:
        return ""

    def _prepare(self, pixels: np.ndarray) -> np.ndarray:
        return pixels

    def _generation_kwargs(self, image_ids: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Caption rows for ``image_ids`` (one ``generate`` call for the batch)."""
        images = [self._prepare(unit.pixels(i)) for i in image_ids]
        generations = self.vlm.generate(images, self.prompt_text, **self._generation_kwargs(image_ids))
        rows = []
        for image_id, gen in zip(image_ids, generations, strict=True):
            text = gen.text.strip()
            rows.append(
                {
                    "image_id": image_id,
                    "caption": text,
                    "caption_normalised": normalise_caption(text),
                    "finish_reason": gen.finish_reason,
                }
            )
        return rows


@dataclass
class CaptionBlip2(_CaptionStage):
    """Short greedy caption from the BLIP-2 slot (spec step 11)."""

    name: ClassVar[str] = "caption_blip2"
    default_resources: ClassVar[Resources] = Resources(gpus=0.25, cpus=1.0, batch_size=16)

    long_side: int = 384  # spec step 11: long side pre-resized to 384 px (Lanczos) before the processor
    max_new_tokens: int = 20  # spec step 11: library-default generation length (20 tokens), greedy
    prompt: str = ""  # spec step 11: no text prompt (plain captioning)

    def _prompt_text(self) -> str:
        return self.prompt

    def _prepare(self, pixels: np.ndarray) -> np.ndarray:
        return resize_long_side(pixels, self.long_side)

    def _generation_kwargs(self, image_ids: list[str]) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "do_sample": False}


@dataclass
class CaptionVLM(_CaptionStage):
    """One-sentence caption from the chat-VLM slot (LLaVA in the reference, spec step 12)."""

    name: ClassVar[str] = "caption_vlm"
    default_resources: ClassVar[Resources] = Resources(gpus=0.5, cpus=1.0, batch_size=8)

    prompt: str = "caption_vlm.txt"  # spec step 12: one question asking for a one-sentence caption (prompt file)
    temperature: float = 0.2  # spec step 12: sampling temperature 0.2 (0 = greedy)
    top_p: float = 1.0  # spec step 12: no nucleus cut
    max_new_tokens: int = 1024  # spec step 12: max_new_tokens 1024
    seed: int = 0  # base of the per-image sampling seeds

    def _prompt_text(self) -> str:
        text = prompt_file(self.prompt).read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"stage {self.name!r}: prompt file {self.prompt!r} is empty")
        return text

    def _generation_kwargs(self, image_ids: list[str]) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.temperature > 0,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": [image_seed(self.seed, i) for i in image_ids],
        }
