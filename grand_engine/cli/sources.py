"""``grand-engine sources``: prepare record shards from OpenPSG, RefCOCOg or Flickr30K Entities, and the demo of the
GranD-f source construction (docs/grandf_sources.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grand_engine.cli.common import parse_vars


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sources prepare openpsg|refcocog|flickr30k`` and ``sources demo``."""
    p = sub.add_parser("sources", help="GranD-f from open datasets: record shards from OpenPSG, RefCOCOg, Flickr30K")
    ssub = p.add_subparsers(dest="sources_command", required=True)
    prep = ssub.add_parser("prepare", help="read a dataset's files and write its record shards (JSON Lines)")
    psub = prep.add_subparsers(dest="source", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("dest", help="folder for the record shards (<source>-<n>.jsonl)")
        q.add_argument("--records-per-shard", type=int, default=1000, help="records per shard file (default 1000)")
        q.add_argument("--limit", type=int, default=None, help="read at most N images (trial runs)")

    q = psub.add_parser("openpsg", help="psg.json + panoptic PNGs (+ COCO captions) -> relation records")
    q.add_argument("--psg", required=True, help="OpenPSG's psg.json")
    q.add_argument("--coco-root", required=True, help="folder that psg.json's file_name (train2017/…) is relative to")
    q.add_argument("--panoptic-root", default=None, help="folder of pan_seg_file_name (default: --coco-root)")
    q.add_argument("--captions", nargs="*", default=[], help="COCO caption files (captions_train2017.json, …)")
    common(q)

    q = psub.add_parser("refcocog", help="COCO instances + RefCOCOg refs -> phrase records")
    q.add_argument("--instances", required=True, help="COCO-2014 instances file (instances.json)")
    q.add_argument("--refs", required=True, help="refs(umd).p (read without running code), or a JSON/Parquet copy")
    q.add_argument("--images", required=True, help="folder of the COCO-2014 train images")
    q.add_argument("--splits", default="train,val", help="ref splits to keep (default train,val)")
    common(q)

    q = psub.add_parser("flickr30k", help="Flickr30K Entities Sentences + Annotations -> phrase records")
    q.add_argument("--entities", required=True, help="folder holding Sentences/, Annotations/ and train/val/test.txt")
    q.add_argument("--images", required=True, help="folder of the Flickr30K images (<id>.jpg)")
    q.add_argument("--splits", default="train,val", help="splits to keep (default train,val)")
    common(q)
    prep.set_defaults(func=cmd_prepare)

    demo = ssub.add_parser(
        "demo", help="build tiny OpenPSG/RefCOCOg/Flickr30K fixtures and run the whole construction on them"
    )
    demo.add_argument("--out", default="sources_demo", help="demo folder (default: ./sources_demo)")
    demo.add_argument("--backend", choices=["ray", "inline"], default="inline")
    demo.add_argument(
        "--var",
        dest="variables",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="manifest variables, e.g. llm_dir=PATH (default: SmolLM2 when installed)",
    )
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)
    return p


def _splits(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def cmd_prepare(args: argparse.Namespace) -> int:
    # deferred: the readers import numpy, Pillow and pyarrow
    from grand_engine.sources.prepare import prepare

    try:
        if args.source == "openpsg":
            from grand_engine.sources.openpsg import read_openpsg  # deferred, as above

            records = read_openpsg(
                args.psg, args.coco_root, panoptic_root=args.panoptic_root, captions=args.captions, limit=args.limit
            )
        elif args.source == "refcocog":
            from grand_engine.sources.refcocog import read_refcocog  # deferred, as above

            records = read_refcocog(
                args.instances, args.refs, args.images, splits=_splits(args.splits), limit=args.limit
            )
        else:
            from grand_engine.sources.flickr30k import read_flickr30k  # deferred, as above

            records = read_flickr30k(args.entities, args.images, splits=_splits(args.splits), limit=args.limit)
        report = prepare(args.source, records, Path(args.dest), args.records_per_shard)
    except (ValueError, FileNotFoundError) as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"next: grand-engine run --manifest grandf_sources --input {args.source} --shards {args.dest} --out OUT")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from grand_engine.demo_sources import run_demo  # deferred: the demo runs the pipeline

    report = run_demo(
        Path(args.out), backend=args.backend, variables=parse_vars(args.variables), progress=not args.no_progress
    )
    print(report.summary())
    return 0 if report.ok else 1
