"""Video-capable VLMs (family ``video_vlm``): Qwen2.5-VL and Qwen3-VL through ``AutoModelForImageTextToText``.

The adapter is the image VLM of :mod:`grand_engine.models.vlm` (same loading, chat templating, batching, seeded
sampling and ``finish_reason``), plus :meth:`VideoVLM.generate_video`: each prompt comes with a clip — a list of
``H×W×3`` uint8 RGB frames already sampled by the caller — and the rate of those frames, which the Qwen
processors turn into temporal positions (``second_per_grid_ts``). The chat turn is ``[{"type": "video"},
{"type": "text", ...}]`` in the processor's own chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grand_engine.models.imaging import check_images
from grand_engine.models.llm import per_item_seeds
from grand_engine.models.vlm import VLM, Generation


class VideoVLM(VLM):
    """A VLM that also describes clips. ``spec.options`` as :class:`~grand_engine.models.vlm.VLM`."""

    family = "video_vlm"

    def generate_video(
        self,
        clips: Sequence[Sequence[np.ndarray]],
        prompts: str | Sequence[str],
        *,
        fps: float | Sequence[float] = 1.0,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | Sequence[int] = 0,
    ) -> list[Generation]:
        """One text per clip. ``prompts`` is one prompt for every clip or one per clip; ``fps`` the rate of the
        given frames (one for all clips or one per clip). The returned text is the continuation only."""
        if any(len(clip) == 0 for clip in clips):
            raise ValueError("every clip needs at least one frame")
        videos = [np.stack(check_images(clip)) for clip in clips]
        texts = [prompts] * len(videos) if isinstance(prompts, str) else list(prompts)
        rates = [float(fps)] * len(videos) if isinstance(fps, (int, float)) else [float(r) for r in fps]
        if len(texts) != len(videos) or len(rates) != len(videos):
            raise ValueError(f"got {len(texts)} prompts and {len(rates)} rates for {len(videos)} clips")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        seeds = per_item_seeds(seed, len(videos))
        rendered = [self._prompt(p, media="video") for p in texts]
        out: list[Generation | None] = [None] * len(videos)
        for group in self._batches(rendered):
            texts_out, reasons = self._generate_video_batch(
                [videos[i] for i in group],
                [rendered[i] for i in group],
                [rates[i] for i in group],
                max_new_tokens,
                temperature if do_sample else 0.0,
                top_p,
                [seeds[i] for i in group],
            )
            for i, text, reason in zip(group, texts_out, reasons, strict=True):
                out[i] = Generation(text=self._strip_specials(text), finish_reason=reason)
        return out  # type: ignore[return-value]

    def _generate_video_batch(
        self,
        videos: list[np.ndarray],
        prompts: list[str],
        rates: list[float],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: list[int],
    ) -> tuple[list[str], list[str]]:
        metadata = [{"total_num_frames": len(v), "fps": rate} for v, rate in zip(videos, rates, strict=True)]
        inputs: Any = self.processor(
            videos=videos, text=prompts, video_metadata=metadata, return_tensors="pt", padding=True
        )
        inputs = inputs.to(self.device)
        if "pixel_values_videos" in inputs and self.dtype is not None:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.dtype)
        return self._complete_inputs(inputs, max_new_tokens, temperature, top_p, seeds)
