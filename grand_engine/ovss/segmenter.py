"""CASS open-vocabulary semantic segmentation of one image: a per-pixel label map over a vocabulary.

:class:`CassSegmenter` puts the steps together (Kim et al., "Distilling Spectral Graph for Object-Context Aware
Open-Vocabulary Semantic Segmentation", CVPR 2025; this is a reimplementation from the paper's description):

1. **Windows** — the image is resized so its short side is ``short_side`` and covered by square windows of the
   CLIP input size (:mod:`grand_engine.ovss.windows`); each window also goes, resized to DINO's input size,
   through the VFM.
2. **Spectral distillation** per window (:mod:`grand_engine.ovss.spectral`) — key graphs of CLIP's last layer and
   of DINO's last layer (DINO's keys resampled to CLIP's patch grid when they differ), head matching by spectral
   Wasserstein distance, low-rank + eigenscaled DINO graphs added to CLIP's, CLIP's last-layer values mixed by the
   resulting attention → patch embeddings (:class:`grand_engine.ovss.backbones.ClipDense`).
3. **Object context** over the whole image (:mod:`grand_engine.ovss.context`) — presence prior from the mean of
   the windows' global CLIP embeddings, class groups, object features from the initial patch probabilities,
   adjusted text embeddings, per-patch class probabilities mixed with the presence prior.
4. **Label map** — each window's patch probabilities are upsampled (bilinear) to the window, summed over
   overlapping windows and divided by the number of windows covering each pixel, then resized to the original
   image size (bilinear, in chunks of classes with a running maximum, so memory stays bounded) and arg-maxed:
   ``labels[y, x]`` indexes the vocabulary, ``scores[y, x]`` is that class's probability.

The vocabulary is the image's tags plus a stuff list (:func:`ovss_vocabulary`; the default stuff list is
COCO-Stuff's 91 stuff classes, ``grand_engine/data/coco_stuff_categories.txt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from grand_engine.labels import normalise_label, read_category_file
from grand_engine.models.base import load_adapter
from grand_engine.models.clip import LOGIT_SCALE
from grand_engine.models.imaging import check_image
from grand_engine.ovss import context, spectral
from grand_engine.ovss.backbones import ClipDense, resample_grid
from grand_engine.ovss.windows import resized_size, window_grid

if TYPE_CHECKING:
    import torch

    from grand_engine.config import ModelSpec
    from grand_engine.models.clip import ClipAdapter
    from grand_engine.models.dino import DinoAdapter

__all__ = [
    "DEFAULT_STUFF_FILE",
    "CassConfig",
    "CassSegmenter",
    "Segmentation",
    "ovss_vocabulary",
    "stuff_name",
    "stuff_vocabulary",
]

DEFAULT_STUFF_FILE = "coco_stuff_categories.txt"
"""COCO-Stuff's 91 stuff classes (Caesar et al., CVPR 2018), in the dataset's spelling (``sky-other``)."""


def stuff_name(raw: str) -> str:
    """A COCO-Stuff class name as a phrase: the ``-other``/``-stuff`` suffix dropped, other hyphens become spaces,
    then :func:`grand_engine.labels.normalise_label` (``sky-other`` → ``sky``, ``wall-brick`` → ``wall brick``)."""
    text = raw.strip()
    for suffix in ("-other", "-stuff"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    return normalise_label(text.replace("-", " ")).name


@cache
def stuff_vocabulary(file: str = DEFAULT_STUFF_FILE) -> tuple[str, ...]:
    """The stuff class names of a packaged category file, as :func:`stuff_name` phrases, deduplicated in order."""
    names = dict.fromkeys(stuff_name(raw) for raw in read_category_file(file))
    names.pop("", None)
    return tuple(names)


def ovss_vocabulary(tags: Sequence[str], stuff: Sequence[str]) -> tuple[str, ...]:
    """The segmentation vocabulary of one image: its tags, then the stuff names, each normalised
    (:func:`grand_engine.labels.normalise_label`), blanks dropped, deduplicated in first-seen order."""
    names: dict[str, None] = {}
    for raw in (*tags, *stuff):
        name = normalise_label(raw).name if isinstance(raw, str) else ""
        if name:
            names.setdefault(name, None)
    return tuple(names)


@dataclass(frozen=True)
class CassConfig:
    """Parameters of :class:`CassSegmenter`. CASS's paper describes these steps without fixing every constant;
    values marked "chosen here" are this implementation's defaults, not the paper's."""

    short_side: int = (
        448  # resize the short side to 448 px: the sliding-window setting of training-free OVSS benchmarks
    )
    window: int | None = (
        None  # window side in px; None = CLIP's input size (224 for ViT-B/16), i.e. backbone resolution
    )
    stride: int | None = None  # window step in px; None = half a window (112 for ViT-B/16), the usual 50% overlap
    energy: float = (
        0.9  # fraction of the VFM graph's eigenvalue energy kept by the low-rank approximation (chosen here)
    )
    eigenscale_power: float = 1.0  # dynamic eigenscaling exponent p in λ^(1+p) (chosen here; 0 = no rescaling)
    spectrum_size: int = 16  # leading eigenvalues compared when matching heads (chosen here)
    complementary: bool = True  # CASS pairs heads with the most different spectra (maximum total distance)
    attention_temperature: float = 0.1  # τ of softmax((G_CLIP + Ä_VFM) / τ) over cosine graphs (chosen here)
    logit_scale: float = LOGIT_SCALE  # CLIP's trained logit scale 100 for presence prior and patch-class softmax
    group_distance: float = (
        0.15  # text classes within cosine distance 0.15 (average linkage) share a group (chosen here)
    )
    text_adjust_weight: float = 0.3  # w in normalize((1-w)·t + w·o) for each group's most likely class (chosen here)
    min_presence: float = 0.0  # a group's top class is adjusted only when its presence prior is at least this
    presence_weight: float = 0.2  # β mixing the presence prior into every pixel's class distribution (chosen here)
    templates: tuple[str, ...] = ("a photo of a {}.",)  # CLIP prompts per class, embeddings averaged (`{}` = class)
    window_batch: int = 16  # windows per forward pass
    upsample_chunk: int = 16  # classes resized to the original image size at a time (bounds memory)

    def __post_init__(self) -> None:
        self._check_sizes()
        self._check_ranges()
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError(
                f"ovss: templates must be a non-empty list of strings containing '{{}}', got {self.templates!r}"
            )

    def _check_sizes(self) -> None:
        """Sizes and counts are positive integers (``window`` and ``stride`` may be null)."""
        ints = {"short_side": self.short_side, "spectrum_size": self.spectrum_size}
        ints.update(window_batch=self.window_batch, upsample_chunk=self.upsample_chunk)
        for name, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ovss: {name} must be a positive integer, got {value!r}")
        for name in ("window", "stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ovss: {name} must be a positive integer or null, got {value!r}")

    def _check_ranges(self) -> None:
        """Fractions, weights, distances and scales are in their ranges."""
        if not 0.0 < self.energy <= 1.0:
            raise ValueError(f"ovss: energy must be in (0, 1], got {self.energy!r}")
        for name in ("text_adjust_weight", "presence_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ovss: {name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("eigenscale_power", "group_distance", "min_presence"):
            if getattr(self, name) < 0:
                raise ValueError(f"ovss: {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("attention_temperature", "logit_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ovss: {name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class Segmentation:
    """The result for one image: ``labels`` ``(H, W)`` int32 indices into ``vocabulary`` and ``scores`` ``(H, W)``
    float32 (the chosen class's probability), at the original image size; ``presence`` ``(C,)`` the object
    presence prior; ``windows`` the ``(top, left)`` of each window on the ``resized`` ``(h, w)`` image."""

    labels: np.ndarray
    scores: np.ndarray
    vocabulary: tuple[str, ...]
    presence: np.ndarray
    windows: list[tuple[int, int]] = field(default_factory=list)
    resized: tuple[int, int] = (0, 0)


class CassSegmenter:
    """Training-free open-vocabulary semantic segmentation with CLIP + a DINO VFM (see the module docstring)."""

    def __init__(self, clip: ClipAdapter, vfm: DinoAdapter, config: CassConfig | None = None) -> None:
        self.config = config or CassConfig()
        self.clip = clip
        self.vfm = vfm
        self.dense: ClipDense = ClipDense(clip)
        if self.dense.image_size[0] != self.dense.image_size[1]:
            raise ValueError(f"CASS windows are square; CLIP's input size is {self.dense.image_size}")
        self.window = self.config.window or self.dense.image_size[0]
        self.stride = self.config.stride or max(1, self.window // 2)
        if self.stride > self.window:
            raise ValueError(f"ovss: stride {self.stride} is larger than the window {self.window}")
        if self.config.short_side < self.window:
            raise ValueError(f"ovss: short_side {self.config.short_side} is smaller than the window {self.window}")
        self._text_cache: dict[str, np.ndarray] = {}

    @classmethod
    def load(
        cls, clip_spec: ModelSpec, vfm_spec: ModelSpec, config: CassConfig | None = None, gpus: float = 0.0
    ) -> CassSegmenter:
        """Load both backbones through :func:`grand_engine.models.base.load_adapter` (families ``clip`` and
        ``dino``) onto the device a worker with ``gpus`` share gets."""
        return cls(load_adapter(clip_spec, gpus=gpus), load_adapter(vfm_spec, gpus=gpus), config)

    @property
    def device(self) -> Any:
        return next(self.dense.visual.parameters()).device

    # -- text ---------------------------------------------------------------------------------------

    def text_embeddings(self, names: Sequence[str]) -> np.ndarray:
        """``(C, E)`` float32: per class the normalised mean of its template embeddings (cached per name)."""
        missing = [n for n in dict.fromkeys(names) if n not in self._text_cache]
        if missing:
            templates = self.config.templates
            prompts = [t.replace("{}", n) for n in missing for t in templates]
            embeds = self.clip.encode_texts(prompts).reshape(len(missing), len(templates), -1).mean(1)
            embeds /= np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-12)
            self._text_cache.update(zip(missing, embeds.astype(np.float32), strict=True))
        return np.stack([self._text_cache[n] for n in names])

    # -- image --------------------------------------------------------------------------------------

    def segment(self, image: np.ndarray, vocabulary: Sequence[str]) -> Segmentation:
        """Label every pixel of ``image`` (``H×W×3`` uint8 RGB) with one class of ``vocabulary``."""
        import torch  # deferred: torch loads only when an image is segmented
        import torch.nn.functional as F

        image = check_image(image)
        vocab = tuple(vocabulary)
        if not vocab:
            raise ValueError("ovss: the vocabulary is empty (no tags and no stuff classes)")
        bad = [v for v in vocab if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(f"ovss: vocabulary entries must be non-blank strings, got {bad[:3]!r}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("ovss: the vocabulary has repeated class names; deduplicate it (ovss_vocabulary does)")
        cfg = self.config
        height, width = image.shape[:2]
        rh, rw = resized_size(height, width, cfg.short_side)
        windows = window_grid(rh, rw, self.window, self.stride)
        with torch.inference_mode():
            # a read-only frame (the engine's decoded-image cache) is copied: torch wants a writable buffer
            frame = np.require(image, requirements="W")
            pixels = torch.from_numpy(frame).to(self.device).permute(2, 0, 1)[None].float() / 255.0
            resized = F.interpolate(pixels, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
            patches, globals_ = self._encode_windows(resized[0], windows)  # (nW, N, E), (nW, E)
            text = torch.from_numpy(self.text_embeddings(vocab)).to(patches.device)
            presence = context.presence_prior(F.normalize(globals_.mean(0), dim=-1), text, cfg.logit_scale)
            flat = patches.reshape(-1, patches.shape[-1])
            initial = context.class_probabilities(flat, text, cfg.logit_scale)
            groups = context.class_groups(text.cpu().numpy(), cfg.group_distance)
            adjusted = context.adjust_text_embeddings(
                text,
                context.object_features(flat, initial),
                presence,
                groups,
                cfg.text_adjust_weight,
                cfg.min_presence,
            )
            probs = context.class_probabilities(flat, adjusted, cfg.logit_scale, presence, cfg.presence_weight)
            canvas = self._stitch(probs.reshape(len(windows), -1, len(vocab)), windows, (rh, rw))
            labels, scores = self._resize_argmax(canvas, (height, width))
        return Segmentation(
            labels=labels.cpu().numpy().astype(np.int32),
            scores=scores.cpu().numpy().astype(np.float32),
            vocabulary=vocab,
            presence=presence.cpu().numpy().astype(np.float32),
            windows=windows,
            resized=(rh, rw),
        )

    def _encode_windows(self, image: torch.Tensor, windows: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
        """Distilled patch embeddings ``(nW, N, E)`` and global embeddings ``(nW, E)`` of the windows of the
        resized ``(3, h, w)`` image in [0, 1]."""
        import torch  # deferred: torch loads only when an image is segmented

        cfg = self.config
        clip_mean, clip_std = _stats(self.dense.mean, self.dense.std, image)
        vfm_mean, vfm_std = _stats(self.vfm.mean, self.vfm.std, image)
        patches, globals_ = [], []
        for start in range(0, len(windows), cfg.window_batch):
            crops = torch.stack(
                [
                    image[:, y : y + self.window, x : x + self.window]
                    for y, x in windows[start : start + cfg.window_batch]
                ]
            )
            tokens = self.dense.encode((_resize(crops, self.dense.image_size) - clip_mean) / clip_std)
            vfm_keys = self.vfm.last_layer_keys((_resize(crops, self.vfm.image_size) - vfm_mean) / vfm_std)
            vfm_keys = resample_grid(vfm_keys.to(tokens.keys.device), self.vfm.grid, tokens.grid)
            clip_graph = spectral.affinity_graph(tokens.keys)
            clip_values, _ = spectral.token_eigendecompose(tokens.keys)
            vfm_values, vfm_vectors = spectral.token_eigendecompose(vfm_keys)
            distances = spectral.spectral_distances(
                spectral.spectrum_from_eigenvalues(vfm_values, cfg.spectrum_size),
                spectral.spectrum_from_eigenvalues(clip_values, cfg.spectrum_size),
            )
            assignment = torch.as_tensor(
                np.stack([spectral.match_heads(d, cfg.complementary) for d in distances.cpu().numpy()]),
                device=clip_graph.device,
            )
            low_rank = spectral.reconstruct(vfm_values, vfm_vectors, cfg.energy, cfg.eigenscale_power)
            attention = spectral.distill_attention(clip_graph, low_rank, assignment, cfg.attention_temperature)
            patches.append(self.dense.dense(tokens.values, attention))
            globals_.append(tokens.global_embed)
        return torch.cat(patches), torch.cat(globals_)

    def _stitch(self, probs: torch.Tensor, windows: list[tuple[int, int]], size: tuple[int, int]) -> torch.Tensor:
        """``(C, h, w)`` mean over covering windows of the windows' patch probabilities ``(nW, N, C)`` upsampled
        to the window size."""
        import torch  # deferred: torch loads only when an image is segmented
        import torch.nn.functional as F

        gh, gw = self.dense.grid
        n_classes = probs.shape[-1]
        canvas = torch.zeros((n_classes, *size), device=probs.device)
        count = torch.zeros(size, device=probs.device)
        for i, (y, x) in enumerate(windows):
            grid = probs[i].reshape(gh, gw, n_classes).permute(2, 0, 1)[None]
            up = F.interpolate(grid, size=(self.window, self.window), mode="bilinear", align_corners=False)[0]
            canvas[:, y : y + self.window, x : x + self.window] += up
            count[y : y + self.window, x : x + self.window] += 1
        return canvas / count  # every pixel is covered by at least one window (windows.window_starts)

    def _resize_argmax(self, canvas: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Arg-max class and its probability at ``size``, resizing ``upsample_chunk`` classes at a time."""
        import torch  # deferred: torch loads only when an image is segmented
        import torch.nn.functional as F

        best = torch.full(size, -1.0, device=canvas.device)
        labels = torch.zeros(size, dtype=torch.int64, device=canvas.device)
        step = self.config.upsample_chunk
        for start in range(0, canvas.shape[0], step):
            part = canvas[start : start + step][None]
            if tuple(part.shape[-2:]) != tuple(size):
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            value, index = part[0].max(0)
            better = value > best  # strict: on ties the earlier class (vocabulary order) keeps the pixel
            best = torch.where(better, value, best)
            labels = torch.where(better, index + start, labels)
        return labels, best


def _stats(mean: Sequence[float], std: Sequence[float], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torch  # deferred: torch loads only when an image is segmented

    def as_tensor(v: Sequence[float]) -> torch.Tensor:
        return torch.tensor(list(v), dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)

    return as_tensor(mean), as_tensor(std)


def _resize(crops: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    import torch.nn.functional as F  # deferred: torch loads only when an image is segmented

    if tuple(crops.shape[-2:]) == tuple(size):
        return crops
    return F.interpolate(crops, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
