"""``grand-engine export``: argument parser and command (the export code is imported only when it runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``grand-engine export`` on the ``grand-engine`` subcommand parsers."""
    p = sub.add_parser(
        "export",
        help="write a run's annotations as GranD-f / GranD / COCO / referring-expression / caption-grounding JSON",
        description="Stream a run's tables into the JSON layouts GranD consumers read (see docs/exports.md).",
    )
    p.add_argument("out", help="the run's output folder (or s3://bucket/prefix)")
    p.add_argument(
        "dest", help="destination file (a folder for --layout files; in an existing folder: a default name)"
    )
    p.add_argument(
        "--format",
        required=True,
        help="grandf, grandf-short, grand, coco, refseg or caption-grounding (docs/exports.md shows each)",
    )
    p.add_argument("--level", type=int, choices=(3, 4), default=4, help="annotation table to read (default 4)")
    p.add_argument(
        "--layout",
        choices=("jsonl", "files"),
        default="jsonl",
        help="per-image formats: one JSON Lines file (default) or one <image_id>.json per image in a folder",
    )
    p.add_argument("--include-floating", action="store_true", help="coco, refseg: export floating objects too")
    p.add_argument("--max-images", type=int, default=None, help="stop after N images (trial exports)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run one export and print its report; exit 1 when a record failed its check, 2 on a usage error."""
    from grand_engine.grandf.exports import PER_IMAGE_FORMATS, default_dest, export
    from grand_engine.grandf.reader import MissingStageError

    dest = Path(args.dest)
    if dest.is_dir() and not (args.layout == "files" and args.format in PER_IMAGE_FORMATS):
        dest = dest / default_dest(args.format, args.layout)
    try:
        report = export(
            args.out,
            args.format,
            dest,
            level=args.level,
            layout=args.layout,
            include_floating=args.include_floating,
            max_images=args.max_images,
            progress=not args.no_progress,
        )
    except (MissingStageError, FileExistsError, ValueError) as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.invalid else 0
