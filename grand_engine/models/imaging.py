"""Helpers shared by the vision adapters: input checks, box conversions, typed detections, seeding.

Every vision adapter takes a list of ``H×W×3`` uint8 RGB numpy arrays (images of different sizes in
one batch) and returns results in original-image pixel coordinates; boxes are ``[x1, y1, x2, y2]``
float32 clipped to the image.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet normalisation (DINO, DPT-family depth, Grounding DINO, Florence-2, SAM)."""

CHANNELS_LAST = "channels_last"
"""Passed to transformers image processors with every array: they otherwise guess the channel axis, and read an image
exactly 1 or 3 pixels tall (a small crop) as channels-first."""

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP normalisation (CLIP, EVA-CLIP, OWL-ViT, OWLv2, LLaVA, BLIP-2, Kosmos-2)."""


EMBEDDING_CACHE_IMAGES = 4
"""Images whose SAM image embedding an adapter keeps for the next box-prompt call (``embedding_cache`` option)."""


class ImageCache:
    """What a model computed from an image (vision features, an image embedding), kept by the identity of the image
    object so that the next call on the same image skips the encoder.

    An entry is used only while the very same object is alive (a weak reference checks it) and was read-only when
    stored (a read-only numpy array, as the engine's decoded pixels are: the pixel cache hands every stage of a
    process the same read-only array), so its content cannot have changed; any other image is encoded again. The
    least recently used entries go first beyond ``size`` (0 keeps nothing)."""

    def __init__(self, size: int) -> None:
        self.size = max(0, int(size))
        self._entries: OrderedDict[int, tuple[Any, Any]] = OrderedDict()

    @staticmethod
    def cacheable(image: Any) -> bool:
        return isinstance(image, np.ndarray) and not image.flags.writeable

    def get(self, image: Any) -> Any:
        entry = self._entries.get(id(image))
        if entry is None or entry[0]() is not image:
            return None
        self._entries.move_to_end(id(image))
        return entry[1]

    def put(self, image: Any, value: Any) -> None:
        if not self.size or not self.cacheable(image):
            return
        self._entries[id(image)] = (weakref.ref(image), value)
        self._entries.move_to_end(id(image))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Detections:
    """Boxes found in one image: ``boxes`` ``(N, 4)`` float32 xyxy pixels, ``scores`` ``(N,)`` float32,
    ``labels`` the N label strings (query strings or the detector's class names), ``label_ids`` ``(N,)``
    int64 indices into the query list / class table."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: list[str] = field(default_factory=list)
    label_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def filter(self, keep: np.ndarray) -> Detections:
        """The detections where the boolean mask or index array ``keep`` selects."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        return Detections(self.boxes[idx], self.scores[idx], [self.labels[i] for i in idx], self.label_ids[idx])

    @staticmethod
    def concat(parts: Sequence[Detections]) -> Detections:
        if not parts:
            return Detections()
        return Detections(
            np.concatenate([p.boxes for p in parts]).astype(np.float32).reshape(-1, 4),
            np.concatenate([p.scores for p in parts]).astype(np.float32),
            [label for p in parts for label in p.labels],
            np.concatenate([p.label_ids for p in parts]).astype(np.int64),
        )


def check_image(image: Any, index: int = 0) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``H×W×3`` uint8 array, or raise ValueError naming the input."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index}: expected an H×W×3 uint8 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image {index}: expected an H×W×3 uint8 RGB array, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image {index}: empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def check_images(images: Sequence[Any]) -> list[np.ndarray]:
    """:func:`check_image` over a batch."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError("expected a list of images, got a single H×W×3 array (wrap it in a list)")
    return [check_image(im, i) for i, im in enumerate(images)]


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(N, 4)`` xyxy boxes clipped to ``[0, width] × [0, height]`` as float32."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out


def check_box_prompts(boxes_xyxy: Any, height: int, width: int, max_boxes_per_call: int = 1) -> np.ndarray:
    """Box prompts as ``(N, 4)`` float32 xyxy clipped to the image; ValueError for non-finite numbers, unordered
    corners or a batch limit below 1 (the rules every promptable segmenter shares)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("SAM box prompts must be finite numbers")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError("SAM box prompts must be xyxy with x2 >= x1 and y2 >= y1")
    if max_boxes_per_call < 1:
        raise ValueError(f"max_boxes_per_call must be at least 1, got {max_boxes_per_call}")
    return clip_boxes(boxes, height, width)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` center/size boxes to corner boxes (same units)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    half = b[:, 2:] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def chunks(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """``(start, items[start:start+size])`` over ``items``."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def place(model: Any, device: str, dtype: Any) -> Any:
    """Move a torch module to ``device`` (and ``dtype`` when given); return it in eval mode."""
    model = model.to(device) if dtype is None else model.to(device=device, dtype=dtype)
    return model.eval()


@contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Seed torch (and restore the previous CPU RNG state afterwards) so tiny builds are reproducible."""
    # torch is heavy: imported on first use
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
