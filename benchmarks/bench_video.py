"""Time per video and peak memory of the video engine: decoding, masklet parsing, and the whole Ref-SAV pipeline.

Each phase runs in a child process of its own, so its peak resident memory (``ru_maxrss``) is its own:

* ``decode`` — an SA-V sized clip (``--width`` × ``--height``, 24 fps, ``--seconds`` long; a pan over a photo, H.264
  as SA-V ships) probed (every frame decoded once: the ``videos`` stage's check) and its 6 fps frames decoded (what
  the model stages read);
* ``masklets`` — an SA-V masklet file with ``--objects`` masklets over the clip's annotated frames parsed and
  checked against the video (the ``video_masklets`` stage's reading);
* ``pipeline`` — ``--videos`` demo clips (``grand_engine.demo_video``'s cat clip, ``--demo-frames`` frames at
  320×240) through every stage of the ``video_tiny`` manifest on the inline backend: seconds per video per stage.
  The checkpoints are the tiny random ones, so the model stages' times measure the engine around the models and
  the models' fixed costs on CPU, not a real checkpoint's speed.

    .venv/bin/python benchmarks/bench_video.py [--seconds 10] [--objects 30] [--videos 2] [--phase decode]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from common import child_env, header

RATE = 24.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pan_clip(width: int, height: int, frames: int) -> list[np.ndarray]:
    """A pan over the astronaut photo scaled to cover the frame (the moving content keeps H.264 honest)."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    scale = 1.5 * max(width / photo.width, height / photo.height)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)))
    span = photo.width - width
    return [
        np.asarray(photo.crop((k * span // max(1, frames - 1), 0, k * span // max(1, frames - 1) + width, height)))
        for k in range(frames)
    ]


def phase_decode(args: argparse.Namespace) -> dict:
    from grand_engine.io.video import decode_frames, encode_video, probe_video, sample_indices

    frames = round(args.seconds * RATE)
    data = encode_video(pan_clip(args.width, args.height, frames), RATE)
    start = time.perf_counter()
    info = probe_video(data)
    probe_s = time.perf_counter() - start
    indices = sample_indices(info.num_frames, info.fps, 6.0)
    start = time.perf_counter()
    decoded = decode_frames(data, indices)
    decode_s = time.perf_counter() - start
    return {
        "phase": "decode",
        "video": f"{args.width}x{args.height}, {frames} frames, {len(data) / 1e6:.2f} MB",
        "probe_s": round(probe_s, 3),
        "decode_6fps_s": round(decode_s, 3),
        "frames_6fps": len(decoded),
        "peak_mb": round(peak_mb(), 1),
    }


def phase_masklets(args: argparse.Namespace) -> dict:
    import json as _json

    from grand_engine.demo_video import sav_masklets
    from grand_engine.io.video import parse_masklets

    frames = round(args.seconds * RATE)
    rng = np.random.default_rng(0)
    objects = []
    for k in range(args.objects):
        x, y = int(rng.integers(0, args.width - 64)), int(rng.integers(0, args.height - 64))
        masks = []
        for f in range(frames):
            m = np.zeros((args.height, args.width), bool)
            m[y : y + 48 + k % 16, min(args.width - 1, x + f // 8) : x + f // 8 + 40] = True
            masks.append(m)
        objects.append(masks)
    raw = _json.dumps(sav_masklets("v", objects, num_frames=frames)).encode()
    start = time.perf_counter()
    parsed = parse_masklets(raw, width=args.width, height=args.height, num_frames=frames)
    seconds = time.perf_counter() - start
    return {
        "phase": "masklets",
        "file_mb": round(len(raw) / 1e6, 2),
        "masklets": len(parsed),
        "annotated_frames": len(parsed[0].masks) if parsed else 0,
        "parse_s": round(seconds, 3),
        "peak_mb": round(peak_mb(), 1),
    }


def phase_pipeline(args: argparse.Namespace) -> dict:
    from grand_engine.config import load_manifest
    from grand_engine.demo_video import build_video_demo_shard
    from grand_engine.models.tiny import build_all, default_tiny_dir
    from grand_engine.runtime.run import run

    tiny = default_tiny_dir()
    build_all(tiny, names=["sam2-video", "qwen2.5-vl", "llama"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo = build_video_demo_shard(root / "demo", num_frames=args.demo_frames)
        shard = root / "shards" / "sav_000000.tar"
        shard.parent.mkdir()
        with tarfile.open(demo) as src, tarfile.open(shard, "w") as dst:
            members = {m.name: src.extractfile(m).read() for m in src.getmembers()}
            for k in range(args.videos):  # copies of the cat clip and its masklets under new ids
                for suffix in (".mp4", "_manual.json"):
                    payload = members[f"sav_000001{suffix}"]
                    info = tarfile.TarInfo(f"sav_{k + 1:06d}{suffix}")
                    info.size = len(payload)
                    dst.addfile(info, io.BytesIO(payload))
        variables = {"tiny_dir": str(tiny), "llm_dir": str(tiny / "llama")}
        manifest = load_manifest("video_tiny", variables=variables)
        start = time.perf_counter()
        _, summary = run(manifest, [str(shard.parent)], str(root / "out"), backend="inline", progress=False)
        wall = time.perf_counter() - start
    per_video = {name: round(t.seconds / max(1, args.videos), 2) for name, t in summary.per_stage.items()}
    return {
        "phase": "pipeline",
        "videos": args.videos,
        "frames_per_video": args.demo_frames,
        "wall_s": round(wall, 1),
        "seconds_per_video_by_stage": per_video,
        "seconds_per_video": round(sum(t.seconds for t in summary.per_stage.values()) / max(1, args.videos), 1),
        "peak_mb": round(peak_mb(), 1),
    }


PHASES = {"decode": phase_decode, "masklets": phase_masklets, "pipeline": phase_pipeline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=sorted(PHASES), default=None, help="run one phase here (no child)")
    parser.add_argument("--width", type=int, default=848)  # SA-V's most common frame size (848x480)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--objects", type=int, default=30)  # SA-V auto files hold tens of masklets
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--demo-frames", type=int, default=48)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return
    header("bench_video: time per video and peak memory")
    passed = list(sys.argv[1:])
    for name in ("decode", "masklets", "pipeline"):
        out = (
            subprocess.run(
                [sys.executable, __file__, "--phase", name, *passed],
                env=child_env(),
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        result = json.loads(out)
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
