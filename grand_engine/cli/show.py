"""``grand-engine show``: argument parser and command (the site builder is imported only when it runs)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``grand-engine show`` on the ``grand-engine`` subcommand parsers."""
    p = sub.add_parser(
        "show",
        help="write a static HTML explorer (and/or a PNG overlay) of a run's annotations",
        description="A static site (opens from file://, no server) or one PNG overlay; see docs/exports.md.",
    )
    p.add_argument("out", help="the run's output folder (or s3://bucket/prefix)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--images", type=int, default=None, help="first N images (videos, for a video run; default 50)")
    which.add_argument("--image", default=None, help="one image id (a video id for a video run)")
    p.add_argument("--html", default=None, metavar="DIR", help="write the site here (open DIR/index.html)")
    p.add_argument("--png", default=None, metavar="FILE", help="write one overlay PNG (--image, else the first image)")
    p.add_argument("--level", type=int, choices=(1, 2, 3, 4), default=None, help="table to show (default: highest)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument(
        "--no-stats",
        action="store_true",
        help="without OUT/_stats (grand-engine stats), do not compute the dataset page's statistics",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the site and/or the PNG; exit 2 when the output has nothing to show."""
    # deferred: the site builder and the reader import numpy, pyarrow and Pillow
    from grand_engine.explore.site import DEFAULT_IMAGES, build_site, write_overlay_png
    from grand_engine.explore.video import build_video_site, is_video_run
    from grand_engine.grandf.reader import MissingStageError

    if not args.html and not args.png:
        print("grand-engine: error: show needs --html DIR and/or --png FILE", file=sys.stderr)
        return 2
    try:
        if args.html and is_video_run(args.out):  # a video run: key frames with masklets, the three levels
            limit = DEFAULT_IMAGES if args.images is None else args.images
            report = build_video_site(args.out, args.html, videos=limit, video_id=args.image)
            print(report.summary())
        elif args.html:
            report = build_site(
                args.out,
                args.html,
                images=DEFAULT_IMAGES if args.images is None else args.images,
                image_id=args.image,
                level=args.level,
                progress=not args.no_progress,
                stats=not args.no_stats,
            )
            print(report.summary())
        if args.png:
            shown = write_overlay_png(args.out, args.png, args.image, args.level)
            print(f"overlay of {shown}: {args.png}")
    except MissingStageError as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
    return 0
