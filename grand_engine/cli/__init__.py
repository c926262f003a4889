"""The ``grand-engine`` command.

Each module of this package registers its subcommands with ``add_parser(subparsers)`` and binds each to a
function ``args -> exit code`` through ``set_defaults(func=...)``; :data:`COMMAND_MODULES` lists them in the order
``--help`` shows. A command module imports the code it drives only when it runs, so ``--help`` and every command
start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from grand_engine.cli.common import EXAMPLES
from grand_engine.config import ConfigError

COMMAND_MODULES = ("pipeline", "models", "export", "show", "evaluate")
"""Modules of :mod:`grand_engine.cli` that register subcommands."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grand-engine",
        description="GranD grounded vision-language annotation pipeline: SA-1B shards → Parquet levels 1–4.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"grand_engine.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from grand_engine.runtime.lock import LockLostError, OutputLockedError

    try:
        return args.func(args)
    except (ConfigError, OSError, OutputLockedError, LockLostError) as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
