"""``grand-engine verify``: check an output's tables against its records and its images against its tables."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``verify``."""
    p = sub.add_parser(
        "verify",
        help="check every table against its record and every image against the tables (--repair drops bad records)",
        description=(
            "Reads every table of a run: each must be there with the recorded size, row count and schema version, "
            "and each image a stage was given must be in its table or its error rows exactly once. With --repair the "
            "records of the failing (stage, unit) pairs are removed so that the next run recomputes exactly those."
        ),
    )
    p.add_argument("out", help="the run's output folder (or s3://bucket/prefix)")
    p.add_argument("--repair", action="store_true", help="remove the records of the pairs that fail a check")
    p.add_argument("--limit", type=int, default=50, help="discrepancies listed (default 50)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress display")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when everything checks out, 1 when a discrepancy was found (also after --repair)."""
    from grand_engine.progress import Progress  # deferred: the checks import pyarrow and the runtime
    from grand_engine.runtime.verify import verify

    shown: list[Progress] = []

    def start(units: int) -> None:
        shown.append(Progress(units, "verify", "units", enabled=not args.no_progress))

    try:
        report = verify(args.out, repair=args.repair, on_start=start, on_unit=lambda: shown[0].update())
    finally:
        for progress in shown:
            progress.close()
    for finding in report.findings[: args.limit]:
        print(finding)
    if len(report.findings) > args.limit:
        print(f"… {len(report.findings) - args.limit} more (use --limit)")
    print(report.summary())
    return 0 if report.ok else 1
