"""``grand-engine models``: tiny checkpoints and checkpoint checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from grand_engine.cli.common import parse_vars
from grand_engine.config import load_manifest


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``models tiny`` and ``models check``."""
    p_models = sub.add_parser("models", help="tiny checkpoints and checkpoint checks")
    msub = p_models.add_subparsers(dest="models_command", required=True)
    p_tiny = msub.add_parser("tiny", help="build tiny random-initialised checkpoints of every model family")
    p_tiny.add_argument("dir", nargs="?", default=None, help="destination (default: GRAND_TINY_DIR or ~/.cache/…)")
    p_tiny.add_argument("--force", action="store_true", help="rebuild existing checkpoints")
    p_tiny.set_defaults(func=cmd_models)
    p_check = msub.add_parser("check", help="resolve every checkpoint of a manifest without loading weights")
    p_check.add_argument("--manifest", default="tiny")
    p_check.add_argument("--var", dest="variables", action="append", default=[], metavar="NAME=VALUE")
    p_check.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "tiny":
        from grand_engine.models import tiny

        dest = Path(args.dir).expanduser() if args.dir else tiny.default_tiny_dir()
        print(tiny.format_reports(tiny.build_all(dest, force=args.force)))
        return 0
    from grand_engine.models.check import check_manifest, format_checks

    manifest = load_manifest(args.manifest, variables=parse_vars(args.variables))
    checks = check_manifest(manifest)
    print(format_checks(checks))
    return 0 if all(c.result.found for c in checks) else 1
