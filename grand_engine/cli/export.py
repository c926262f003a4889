"""``grand-engine export``: argument parser and command (the export code is imported only when it runs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from grand_engine.grandf import export_formats, get_export_format


class _FormatNames:
    """The ``--format`` choices: the registered export formats, looked up only when argparse needs them.

    argparse reads ``choices`` when it checks a value or prints the export command's help, never while the
    parser is built (the option has a ``metavar``), so ``grand-engine --help`` imports no format.
    """

    def __contains__(self, name: object) -> bool:
        try:
            get_export_format(str(name))
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(export_formats())


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
        choices=_FormatNames(),
        metavar="FORMAT",
        help="one of %(choices)s (docs/exports.md shows each)",
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
    # deferred: the export driver and the reader import numpy and pyarrow
    from grand_engine.grandf.exports import export, resolve_dest
    from grand_engine.grandf.reader import MissingStageError

    try:
        report = export(
            args.out,
            args.format,
            resolve_dest(args.format, args.dest, args.layout),
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
