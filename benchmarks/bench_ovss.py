"""Time per image of the CASS open-vocabulary segmenter (``grand_engine.ovss``, the ``ovss`` stage).

1. **Measured, tiny backbones, this CPU**: the project's tiny ``clip-vit-b16`` and ``dino-vit`` checkpoints (2-layer
   ViTs at the real 224² window and patch 16, so the window count, the graph sizes — 196 tokens — and the stitching
   and resizing of the label map are those of the real run; only the two networks are small). Images are
   ``--width × --height`` (SA-1B's 1500×2250 by default), the vocabulary ``--tags`` tags plus COCO-Stuff's 91
   stuff classes; the first image (text embeddings, warm-up) is not timed.
2. **Estimated, real backbones, a GPU**: FLOPs of one window through CLIP ViT-B/16 (open_clip ``ViT-B-16``) and
   DINO ViT-B/16 (transformers ViT defaults = ``facebook/dino-vitb16``) built on the meta device, plus the graph
   steps at their real shapes, times the windows of one image, plus the text encoder for the tags (the stuff list's
   embeddings are cached across images). Time = FLOPs / (peak × MFU) with the cost model's GPU peaks and MFU
   (``grand_engine.cost``). ``torch.linalg.eigh`` is not counted by the FLOP counter; on the 64×64 Gram
   matrices it is about 9·64³ ≈ 2.4 MFLOP per head, under 0.5 % of a window.

    .venv/bin/python benchmarks/bench_ovss.py [--images 3] [--width 1500] [--height 2250] [--tags 20] [--gpu h100]
        [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402, F401  (puts the repository root on sys.path)

from grand_engine.config import ModelSpec  # noqa: E402
from grand_engine.labels import tag_vocabulary  # noqa: E402
from grand_engine.ovss import CassConfig, CassSegmenter, ovss_vocabulary, stuff_vocabulary  # noqa: E402
from grand_engine.ovss.windows import resized_size, window_grid  # noqa: E402


def synthetic_image(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random RGB image (a few colour blobs), closer to a photo than per-pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.zeros((height, width, 3), dtype=np.float32)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.4) * min(width, height)
        out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * rng.uniform(0, 255, 3)
    return np.clip(out / max(out.max(), 1e-6) * 255, 0, 255).astype(np.uint8)


def measure_tiny(args: argparse.Namespace, vocabulary: tuple[str, ...]) -> dict[str, Any]:
    from grand_engine.models.tiny import build_one

    with tempfile.TemporaryDirectory() as tmp:
        clip_dir = build_one("clip-vit-b16", Path(tmp)).path
        dino_dir = build_one("dino-vit", Path(tmp)).path
        segmenter = CassSegmenter.load(
            ModelSpec(id=str(clip_dir), family="clip", dtype="float32"),
            ModelSpec(id=str(dino_dir), family="dino", dtype="float32"),
            CassConfig(),
        )
        segmenter.segment(synthetic_image(args.width, args.height, 0), vocabulary)  # warm-up, text embeddings
        times = []
        for i in range(args.images):
            image = synthetic_image(args.width, args.height, i + 1)
            start = time.perf_counter()
            out = segmenter.segment(image, vocabulary)
            times.append(time.perf_counter() - start)
    return {"seconds": times, "windows": len(out.windows), "resized": out.resized}


def real_size_flops(classes: int, new_prompts: int, windows: int) -> dict[str, float]:
    """FLOPs of one image at real size (see the module docstring)."""
    import open_clip
    import torch
    from open_clip.model import CLIP
    from transformers import ViTConfig, ViTModel

    from grand_engine.cost.counting import count_flops
    from grand_engine.models.clip import ClipAdapter
    from grand_engine.models.dino import DinoAdapter
    from grand_engine.ovss import context, spectral
    from grand_engine.ovss.backbones import ClipDense

    cfg = CassConfig()
    with torch.device("meta"):
        clip_model = CLIP(**open_clip.get_model_config("ViT-B-16")).eval()
        dino_model = ViTModel(ViTConfig(), add_pooling_layer=False).eval()
    clip = ClipAdapter(ModelSpec(id="ViT-B-16", family="clip"), device="meta")
    clip.model = clip_model
    dense = ClipDense(clip)
    dino = DinoAdapter(ModelSpec(id="facebook/dino-vitb16", family="dino"), device="meta")
    dino.model, dino.image_size, dino.grid, dino.heads = dino_model, (224, 224), (14, 14), 12
    dino._key_proj = dino._find_key_projection()
    window = torch.empty(1, 3, 224, 224, device="meta")
    state: dict[str, Any] = {}

    def clip_part() -> None:
        state["tokens"] = dense.encode(window)

    def dino_part() -> None:
        state["keys"] = dino.last_layer_keys(window)

    def graph_part() -> None:
        tokens, keys = state["tokens"], state["keys"]
        clip_graph = spectral.affinity_graph(tokens.keys)
        clip_values, _ = spectral.token_eigendecompose(tokens.keys)
        values, vectors = spectral.token_eigendecompose(keys)
        spectral.spectral_distances(
            spectral.spectrum_from_eigenvalues(values, cfg.spectrum_size),
            spectral.spectrum_from_eigenvalues(clip_values, cfg.spectrum_size),
        )
        low_rank = spectral.reconstruct(values, vectors, cfg.energy, cfg.eigenscale_power)
        assignment = torch.arange(dense.heads, device="meta")[None]
        attention = spectral.distill_attention(clip_graph, low_rank, assignment, cfg.attention_temperature)
        patches = dense.dense(tokens.values, attention)
        text = torch.empty(classes, patches.shape[-1], device="meta")
        context.class_probabilities(patches[0], text, cfg.logit_scale)  # initial and final probabilities
        context.class_probabilities(patches[0], text, cfg.logit_scale)

    def text_part() -> None:
        clip_model.encode_text(torch.zeros(1, 77, dtype=torch.long))

    per_window = {name: count_flops(fn) for name, fn in (("clip", clip_part), ("dino", dino_part))}
    per_window["graph"] = count_flops(graph_part)
    prompt = count_flops(text_part)
    total = windows * sum(per_window.values()) + new_prompts * prompt
    return {**{f"{k}_per_window": v for k, v in per_window.items()}, "per_prompt": prompt, "per_image": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3, help="timed images (after one warm-up)")
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--height", type=int, default=2250)
    parser.add_argument("--tags", type=int, default=20, help="tags per image added to the stuff list")
    parser.add_argument("--gpu", default="h100", help="GPU of the real-size estimate (cost model keys)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    if args.threads > 0:
        # on a loaded machine MKL's threaded eigh can spin for seconds; one thread measures the work itself
        torch.set_num_threads(args.threads)

    vocabulary = ovss_vocabulary(tag_vocabulary()[: args.tags], stuff_vocabulary())
    cfg = CassConfig()
    rh, rw = resized_size(args.height, args.width, cfg.short_side)
    windows = len(window_grid(rh, rw, 224, 112))
    print(
        f"image {args.width}x{args.height} (WxH) -> {rw}x{rh}, {windows} windows of 224 px; {len(vocabulary)} classes"
    )

    tiny = measure_tiny(args, vocabulary)
    median = statistics.median(tiny["seconds"])
    print(
        f"tiny backbones, CPU ({torch.get_num_threads()} threads): {median:.2f} s/image (median of {args.images}; "
        f"{', '.join(f'{s:.2f}' for s in tiny['seconds'])})"
    )

    try:
        from grand_engine.cost import DEFAULT_MFU
        from grand_engine.cost.gpus import gpu
    except ImportError as err:
        print(f"real-size estimate skipped: the cost model is not available ({err})")
        return 0
    flops = real_size_flops(len(vocabulary), args.tags * len(cfg.templates), windows)
    spec = gpu(args.gpu)
    seconds = flops["per_image"] / (spec.flops * DEFAULT_MFU)
    print(
        "real size (CLIP ViT-B/16 + DINO ViT-B/16), FLOPs per 224 px window: "
        f"CLIP {flops['clip_per_window'] / 1e9:.2f} G, DINO {flops['dino_per_window'] / 1e9:.2f} G, "
        f"graph + dense head {flops['graph_per_window'] / 1e9:.3f} G; per text prompt {flops['per_prompt'] / 1e9:.2f} G"
    )
    print(
        f"real size per image: {flops['per_image'] / 1e9:.1f} GFLOP -> {seconds * 1e3:.1f} ms on {spec.name} "
        f"at {DEFAULT_MFU:.0%} MFU ({1 / seconds:.0f} images/s); label-map stitching and resizing are not counted"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
