"""``grand-engine models smoke``: the acceptance check of a manifest's models, for a machine that has the weights.

Every distinct model of the manifest's enabled stages (a *role*: one spec, however many slots share it) is loaded
once and run on photos whose answers are known: the scikit-image photos of the demo (the astronaut is a person, the
cat a cat, the coffee a cup, the rocket a rocket, the motorcycle a motorcycle; the rocket and motorcycle photos stand
on a ground plane, so their depth maps must be nearer at the bottom) and, per family, a probe of its own (a disc to
segment, a question to answer, a sentence to parse). Per role it reports pass / fail with the reason, the load time,
the peak GPU memory and the throughput at the manifest's batch size.

A checkpoint built by ``grand-engine models tiny`` has random weights; its answers are reported as
``not checked (random weights)`` and never as passed. The decision reads the marker file that only the tiny
builder writes (:func:`grand_engine.models.tiny.random_weights`), so a real checkpoint is never mislabelled.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.config import ModelSpec, PipelineManifest
from grand_engine.io.photos import DEMO_IMAGES
from grand_engine.models.base import load_adapter, looks_local, strip_scheme
from grand_engine.models.check import format_size
from grand_engine.models.tiny import random_weights

PASS, FAIL, RANDOM, ERROR, NO_ANSWER = "pass", "fail", "not checked (random weights)", "error", "no known answer"


@dataclass(frozen=True)
class Photo:
    """A bundled photo with its known answers."""

    name: str
    pixels: np.ndarray
    label: str  # the object an open-vocabulary detector or CLIP must name first
    coco: str | None  # the COCO-80 class a closed-set detector must find (None: not a COCO class)
    caption_words: tuple[str, ...]  # a caption must mention one of these
    ground_plane: bool  # the scene stands on the ground, so the bottom of the depth map is nearer than the top


PHOTO_ANSWERS = {
    "astronaut": ("person", "person", ("astronaut", "woman", "person", "man", "suit", "nasa"), False),
    "cat": ("cat", "cat", ("cat", "kitten", "kitty"), False),
    "coffee": ("cup", "cup", ("coffee", "cup", "mug", "latte", "cappuccino", "espresso"), False),
    "rocket": ("rocket", None, ("rocket", "launch", "spacecraft", "missile", "shuttle"), True),
    "motorcycle": ("motorcycle", "motorcycle", ("motorcycle", "motorbike", "bike", "scooter"), True),
}
"""name -> (label, COCO class, caption words, ground plane) of the demo's photos."""

QUERIES = ["person", "cat", "cup", "rocket", "motorcycle"]


def bundled_photos() -> list[Photo]:
    """The demo's five scikit-image photos with their known answers."""
    photos = []
    for name, load in DEMO_IMAGES:
        label, coco, words, ground = PHOTO_ANSWERS[name]
        pixels = np.ascontiguousarray(load()[..., :3]).astype(np.uint8)
        photos.append(Photo(name, pixels, label, coco, words, ground))
    return photos


def folder_images(folder: Path) -> list[np.ndarray]:
    """Every decodable image of ``folder`` (sorted by name), for throughput on the user's own photos."""
    from grand_engine.io.images import ImageError, decode_image

    images = []
    for path in sorted(p for p in Path(folder).expanduser().iterdir() if p.is_file()):
        try:
            images.append(decode_image(path.read_bytes()))
        except ImageError:
            continue
    if not images:
        raise FileNotFoundError(f"no decodable image in {folder}")
    return images


@dataclass
class RoleResult:
    """The smoke result of one distinct model."""

    slots: list[str]
    spec: ModelSpec
    batch_size: int
    status: str = ERROR
    reason: str = ""
    load_s: float | None = None
    peak_gpu_bytes: int | None = None
    items_per_s: float | None = None
    unit: str = "images"
    answers: list[str] = field(default_factory=list)

    @property
    def role(self) -> str:
        return self.slots[0]


@dataclass(frozen=True)
class Probe:
    """A family's known-answer check and its throughput workload.

    ``check(adapter, photos) -> (passed, reason)`` runs the known answers; ``work(adapter, images)`` is one batch of
    the role's normal work (timed for the throughput); ``unit`` names what ``work`` counts.
    """

    check: Callable[[Any, list[Photo]], tuple[bool, str]]
    work: Callable[[Any, list[np.ndarray]], Any]
    unit: str = "images"


def _judge(results: list[tuple[str, bool, str]]) -> tuple[bool, str]:
    """All of ``(photo, ok, what was seen)`` must hold; the reason lists what was seen and flags the failures."""
    ok = all(r[1] for r in results)
    return ok, "; ".join(f"{name}: {seen}" + ("" if good else " (wrong)") for name, good, seen in results)


# ---- probes ------------------------------------------------------------------------------------------------------


def _depth_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    ground = [p for p in photos if p.ground_plane]
    maps = adapter.predict([p.pixels for p in ground], long_side=256)
    results = []
    for photo, dm in zip(ground, maps, strict=True):
        quarter = max(1, dm.depth.shape[0] // 4)
        bottom, top = float(dm.depth[-quarter:].mean()), float(dm.depth[:quarter].mean())
        results.append((photo.name, bottom > top, f"bottom {bottom:.3g} vs top {top:.3g}"))
    return _judge(results)


def _closed_set_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    coco = [p for p in photos if p.coco]
    found = adapter.detect([p.pixels for p in coco], threshold=0.3)
    results = []
    for photo, det in zip(coco, found, strict=True):
        labels = list(dict.fromkeys(det.labels))
        results.append((photo.name, photo.coco in labels, f"{photo.coco} among {labels[:5] or 'nothing'}"))
    return _judge(results)


def _open_vocab_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    found = adapter.detect([p.pixels for p in photos], [QUERIES] * len(photos), threshold=0.0)
    results = []
    for photo, det in zip(photos, found, strict=True):
        best = det.labels[int(np.argmax(det.scores))] if len(det) else "nothing"
        results.append((photo.name, best == photo.label, f"best box '{best}'"))
    return _judge(results)


def _clip_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    texts = [f"a photo of a {q}" for q in QUERIES]
    probs = adapter.classify_each([p.pixels for p in photos], [texts] * len(photos))
    results = []
    for photo, p in zip(photos, probs, strict=True):
        best = QUERIES[int(np.argmax(p))]
        results.append((photo.name, best == photo.label, f"'{best}' {float(np.max(p)):.2f}"))
    return _judge(results)


def disc_image(size: int = 256) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A grey disc on a textured background: the image, the disc's mask and a box around it."""
    yy, xx = np.mgrid[:size, :size]
    cx, cy, r = 0.55 * size, 0.45 * size, 0.25 * size
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    rng = np.random.default_rng(0)
    image = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    image[disc] = (200, 60, 40)
    box = [cx - r - 4, cy - r - 4, cx + r + 4, cy + r + 4]
    return image, disc, box


def _sam_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    from grand_engine.io import rle

    image, disc, box = disc_image()
    mask = rle.decode(adapter.segment_boxes(image, [box])[0]).astype(bool)
    iou = float((mask & disc).sum() / max(1, (mask | disc).sum()))
    return iou > 0.85, f"disc IoU {iou:.2f} (needs > 0.85)"


def _sam_work(adapter: Any, images: list[np.ndarray]) -> Any:
    for image in images:
        h, w = image.shape[:2]
        adapter.segment_boxes(image, [[w * 0.25, h * 0.25, w * 0.75, h * 0.75]])


def _vlm_prompt(adapter: Any) -> str:
    if adapter.model_type == "florence2":
        return "<CAPTION>"
    if adapter.model_type == "kosmos-2":
        return "<grounding>An image of"
    return "Describe this image in one sentence." if adapter.chat else "a photo of"


def _vlm_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    out = adapter.generate([p.pixels for p in photos], _vlm_prompt(adapter), max_new_tokens=48)
    results = []
    for photo, gen in zip(photos, out, strict=True):
        text = gen.text.lower()
        results.append((photo.name, any(w in text for w in photo.caption_words), repr(gen.text[:60])))
    return _judge(results)


LLM_QUESTION = "Which animal says meow? Answer with one word."


def _llm_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    reply = adapter.chat(
        [[{"role": "user", "content": LLM_QUESTION}]], max_new_tokens=16, temperature=0.0, top_p=1.0, seed=0
    )[0]
    return "cat" in reply.text.lower(), f"{LLM_QUESTION!r} -> {reply.text[:40]!r}"


def _llm_work(adapter: Any, items: list[Any]) -> Any:
    conversation = [{"role": "user", "content": "Describe a quiet street in two sentences."}]
    adapter.chat([conversation] * len(items), max_new_tokens=64, temperature=0.7, top_p=0.95, seed=0)


def _spacy_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    chunks = [c[0] for c in adapter.noun_chunks(["A man rides a brown horse."])[0]]
    return chunks == ["A man", "a brown horse"], f"noun chunks {chunks}"


def _sentence_check(adapter: Any, photos: list[Photo]) -> tuple[bool, str]:
    pony, table = (float(v) for v in adapter.similarity(["horse"], ["pony", "table"])[0])
    return pony > table, f"horse~pony {pony:.2f} vs horse~table {table:.2f}"


PROBES: dict[str, Probe] = {
    "depth": Probe(_depth_check, lambda a, images: a.predict(images)),
    "detector": Probe(_closed_set_check, lambda a, images: a.detect(images)),
    "owl": Probe(_open_vocab_check, lambda a, images: a.detect(images, [QUERIES] * len(images))),
    "grounding_dino": Probe(_open_vocab_check, lambda a, images: a.detect(images, [QUERIES] * len(images))),
    "clip": Probe(_clip_check, lambda a, images: a.encode_images(images)),
    "hf_clip": Probe(_clip_check, lambda a, images: a.encode_images(images)),
    "sam": Probe(_sam_check, _sam_work),
    "sam2": Probe(_sam_check, _sam_work),
    "sam3": Probe(_open_vocab_check, lambda a, images: a.detect(images, [QUERIES] * len(images))),
    "vlm": Probe(_vlm_check, lambda a, images: a.generate(images, _vlm_prompt(a), max_new_tokens=32)),
    "llm": Probe(_llm_check, _llm_work, unit="conversations"),
    "spacy": Probe(_spacy_check, lambda a, items: a.noun_chunks(["A man rides a brown horse."] * len(items)), "texts"),
    "sentence": Probe(_sentence_check, lambda a, items: a.encode(["a man riding a horse"] * len(items)), "texts"),
}
"""Known-answer probes by family; a family without one is loaded, timed and reported as ``no known answer``."""


# ---- running -----------------------------------------------------------------------------------------------------


def _spec_key(spec: ModelSpec) -> str:
    return json.dumps(spec.model_dump(), sort_keys=True, default=str)


def roles(manifest: PipelineManifest, only: Sequence[str] = ()) -> list[RoleResult]:
    """One :class:`RoleResult` (not yet run) per distinct model spec of the enabled stages, in manifest order, with
    every ``stage.slot`` that uses it and the largest batch size among those stages (default 8). ``only`` keeps the
    roles with one of those ``stage.slot`` names or stage names."""
    by_key: dict[str, RoleResult] = {}
    for stage_name, stage in manifest.stages.items():
        if not stage.enabled:
            continue
        for slot, spec in stage.models.items():
            name = f"{stage_name}.{slot}"
            if only and name not in only and stage_name not in only:
                continue
            batch = int(stage.resources.batch_size or 8)
            role = by_key.setdefault(_spec_key(spec), RoleResult(slots=[], spec=spec, batch_size=batch))
            role.slots.append(name)
            role.batch_size = max(role.batch_size, batch)
    return list(by_key.values())


def is_random(spec: ModelSpec) -> bool:
    """True when the spec names a local checkpoint built with random weights by ``grand-engine models tiny``."""
    raw = strip_scheme(spec.id)
    if not (spec.id.startswith("local-dir:") or looks_local(raw)):
        return False  # a Hub id: real weights
    path = Path(raw).expanduser()
    return random_weights(path / spec.file if spec.file else path)


def _gpu() -> Any:
    """torch when CUDA is available, else None."""
    import torch  # heavy: imported only when a smoke run starts

    return torch if torch.cuda.is_available() else None


def run_role(role: RoleResult, photos: list[Photo], images: list[np.ndarray]) -> RoleResult:
    """Load ``role``'s model once, run its known answers on ``photos`` and time one batch of ``images``."""
    probe = PROBES.get(role.spec.family)
    torch = _gpu()
    if torch is not None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        used_before = torch.cuda.mem_get_info()[1] - torch.cuda.mem_get_info()[0]
    start = time.perf_counter()
    try:
        adapter = load_adapter(role.spec, gpus=1.0 if torch is not None else 0.0)
    except Exception as exc:  # noqa: BLE001 - a role that cannot load is reported, the others still run
        role.status, role.reason = ERROR, f"load failed: {type(exc).__name__}: {str(exc)[:300]}"
        return role
    role.load_s = time.perf_counter() - start
    try:
        if probe is None:
            role.status, role.reason = NO_ANSWER, f"family {role.spec.family!r} has no smoke probe"
        else:
            role.unit = probe.unit
            passed, reason = probe.check(adapter, photos)
            if is_random(role.spec):
                role.status, role.reason = RANDOM, f"ran; seen: {reason}"
            else:
                role.status, role.reason = (PASS if passed else FAIL), reason
            batch = [images[k % len(images)] for k in range(role.batch_size)]
            start = time.perf_counter()
            probe.work(adapter, batch)
            role.items_per_s = len(batch) / max(time.perf_counter() - start, 1e-9)
    except Exception as exc:  # noqa: BLE001 - reported per role
        role.status, role.reason = ERROR, f"{type(exc).__name__}: {str(exc)[:300]}"
    if torch is not None:
        used_after = torch.cuda.mem_get_info()[1] - torch.cuda.mem_get_info()[0]
        # vLLM's engine may hold memory outside torch's allocator: the device-wide growth counts too
        role.peak_gpu_bytes = max(int(torch.cuda.max_memory_allocated()), int(used_after - used_before))
    del adapter
    gc.collect()
    return role


def run_smoke(
    manifest: PipelineManifest,
    images: list[np.ndarray] | None = None,
    only: Sequence[str] = (),
    photos: list[Photo] | None = None,
) -> list[RoleResult]:
    """Smoke-test every role of ``manifest`` (or those named in ``only``); ``images`` (default: the bundled photos)
    are the throughput workload."""
    photos = bundled_photos() if photos is None else photos
    work = images if images else [p.pixels for p in photos]
    return [run_role(role, photos, work) for role in roles(manifest, only)]


def format_smoke(results: Sequence[RoleResult]) -> str:
    """One line per role and a summary line."""
    if not results:
        return "no model slots in the enabled stages"
    width = max(len(r.role) for r in results)
    lines = []
    for r in results:
        load = "-" if r.load_s is None else f"{r.load_s:.1f} s"
        peak = "-" if r.peak_gpu_bytes is None else format_size(r.peak_gpu_bytes)
        rate = "-" if r.items_per_s is None else f"{r.items_per_s:.2f} {r.unit}/s @ {r.batch_size}"
        shared = f" (also {', '.join(r.slots[1:])})" if len(r.slots) > 1 else ""
        lines.append(
            f"{r.role.ljust(width)}  {r.status:28s} load {load:>8s}  GPU {peak:>9s}  {rate:24s} "
            f"{r.spec.family}: {r.spec.id}{shared} | {r.reason}"
        )
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, RANDOM, NO_ANSWER, ERROR)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(results)} models)")
    return "\n".join(lines)


def smoke_failed(results: Sequence[RoleResult]) -> bool:
    return any(r.status in (FAIL, ERROR) for r in results)
