"""The video VLM adapter on the tiny Qwen2.5-VL checkpoint, loaded as a real one: pictures and clips, one answer
per input in order, seeded sampling independent of the batch, inputs checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from grand_engine.models.video_vlm import VideoVLM
from tests.models.video_checkpoints import video_tiny_dir  # noqa: F401


@pytest.fixture(scope="module")
def vlm(video_tiny_dir: Path) -> VideoVLM:  # noqa: F811
    spec = ModelSpec(id=str(video_tiny_dir / "qwen2.5-vl"), family="video_vlm", dtype="float32")
    return load_adapter(spec)


@pytest.fixture(scope="module")
def clips() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    return [[rng.integers(0, 256, size=(56, 84, 3), dtype=np.uint8) for _ in range(n)] for n in (4, 2, 6)]


def test_the_chat_template_puts_the_video_before_the_question(vlm: VideoVLM) -> None:
    text = vlm._prompt("What happens?", media="video")
    assert "<|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_one_answer_per_clip_and_per_picture(vlm: VideoVLM, clips: list) -> None:
    videos = vlm.generate_video(clips, "What happens?", fps=[6.0, 3.0, 6.0], max_new_tokens=5)
    assert len(videos) == 3 and all(g.finish_reason in ("stop", "length") for g in videos)
    pictures = vlm.generate([clips[0][0], clips[2][1]], ["Name it.", "Describe it."], max_new_tokens=5)
    assert len(pictures) == 2


def test_greedy_and_seeded_answers_do_not_depend_on_the_batch(vlm: VideoVLM, clips: list) -> None:
    alone = vlm.generate_video([clips[1]], "What happens?", max_new_tokens=6)
    together = vlm.generate_video(clips, "What happens?", max_new_tokens=6)
    assert together[1] == alone[0]
    sampled = {"do_sample": True, "temperature": 0.9, "top_p": 0.95, "max_new_tokens": 6}
    a = vlm.generate_video(clips, "What happens?", seed=[3, 4, 5], **sampled)
    b = vlm.generate_video([clips[2], clips[0]], "What happens?", seed=[5, 3], **sampled)
    assert (b[0], b[1]) == (a[2], a[0])


def test_inputs_are_checked(vlm: VideoVLM, clips: list) -> None:
    with pytest.raises(ValueError, match="2 prompts and 3 rates for 3 clips"):
        vlm.generate_video(clips, ["a", "b"])
    with pytest.raises(ValueError, match="at least one frame"):
        vlm.generate_video([[]], "a")
    with pytest.raises(ValueError, match="max_new_tokens"):
        vlm.generate_video(clips[:1], "a", max_new_tokens=0)
