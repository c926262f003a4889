"""The ``grand-engine`` command.

Each module of this package registers its subcommands with ``add_parser(subparsers)`` and binds each to a
function ``args -> exit code`` through ``set_defaults(func=...)``; :data:`COMMAND_MODULES` lists them in the order
``--help`` shows. A command module imports the code it drives only when it runs, so ``--help`` and every command
start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from grand_engine.cli.common import EXAMPLES
from grand_engine.config import ConfigError

COMMAND_MODULES = ("pipeline", "models", "export", "show", "evaluate", "sources")
"""Modules of :mod:`grand_engine.cli` that register subcommands."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grand-engine",
        description="GranD grounded vision-language annotation pipeline: SA-1B shards → Parquet levels 1–4.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log lines on stderr (-v: progress notes, -vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"grand_engine.cli.{name}").add_parser(sub)
    return parser


def configure_logging(verbosity: int = 0) -> None:
    """The one logging configuration: grand-engine's own loggers write to stderr at WARNING (``-v``: INFO, ``-vv``:
    DEBUG), one line each."""
    level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    logger = logging.getLogger("grand_engine")
    for handler in list(logger.handlers):
        if getattr(handler, "grand_engine_console", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.grand_engine_console = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    from grand_engine.runtime.lock import LockLostError, OutputLockedError

    try:
        return args.func(args)
    except (ConfigError, OSError, OutputLockedError, LockLostError) as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
