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
from typing import TextIO

from grand_engine.cli.common import EXAMPLES
from grand_engine.config import ConfigError

COMMAND_MODULES = (
    "pipeline",
    "verify",
    "models",
    "export",
    "show",
    "evaluate",
    "stats",
    "compare",
    "sources",
    "doctor",
)
"""Modules of :mod:`grand_engine.cli` that register subcommands."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grand-engine",
        description="GranD grounded vision-language annotation pipeline: SA-1B shards → Parquet levels 1–4.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_verbosity_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"grand_engine.cli.{name}").add_parser(sub)
    return parser


def add_verbosity_options(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    """``-v/--verbose`` (a count) and ``-q/--quiet``, on the main parser and (``sub``) on a subcommand's, so that
    both ``grand-engine -q run …`` and ``grand-engine run … -q`` work."""
    default: dict = {"default": argparse.SUPPRESS} if sub else {}
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        **(default or {"default": 0}),
        help="more on the console: -v shows INFO notes and lets Ray's and the libraries' output through "
        "(by default it goes to OUT/_logs/), -vv debug",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        **(default or {"default": False}),
        help="print only the summary (and errors)",
    )


class _Once(logging.Filter):
    """Lets each distinct message through once: a warning every worker repeats reaches the console one time."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_CONSOLE_LOGGERS: set[str] = {"grand_engine"}
"""Loggers whose records reach the console: grand-engine's, and those of plugin stages' modules
(:func:`show_on_console`)."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Lines of the run's log file (``OUT/_logs/<run time>.log``)."""


def configure_logging(
    verbosity: int = 0, quiet: bool = False, log_file: str | os.PathLike | None = None, console: TextIO | None = None
) -> None:
    """The one logging configuration.

    grand-engine's own loggers write to the console (``console``, default stderr) at WARNING, each distinct
    message once (``-v``: INFO, ``-vv``: DEBUG; ``quiet``: errors only), one line each. With ``log_file`` every
    logger (Ray's, the libraries' and grand-engine's, at INFO; DEBUG with ``-vv``) also writes to that file, through
    the root logger. Calling it again replaces what an earlier call set up (and closes its file).
    """
    if quiet:
        level = logging.ERROR
    else:
        level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    logger = logging.getLogger("grand_engine")
    root = logging.getLogger()
    for owner in [root, *(logging.getLogger(name) for name in sorted(_CONSOLE_LOGGERS))]:
        for old in list(owner.handlers):
            if getattr(old, "grand_engine_console", False) or getattr(old, "grand_engine_file", False):
                owner.removeHandler(old)
                old.close()
                if owner is root:
                    root.setLevel(old.grand_engine_root_level)
    handler = logging.StreamHandler(sys.stderr if console is None else console)
    handler.grand_engine_console = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.setLevel(level)
    handler.addFilter(_Once())
    for name in _CONSOLE_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    file_level = logging.DEBUG if verbosity >= 2 else logging.INFO
    if log_file is not None:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.grand_engine_file = True  # type: ignore[attr-defined]
        to_file.grand_engine_root_level = root.level  # type: ignore[attr-defined]  # restored with the file
        to_file.setFormatter(logging.Formatter(LOG_FORMAT))
        to_file.setLevel(file_level)
        root.addHandler(to_file)  # grand_engine's records reach it too: that logger propagates
        root.setLevel(min(root.level or logging.WARNING, file_level))
    logger.setLevel(min(level, file_level) if log_file is not None else level)


def show_on_console(*names: str) -> None:
    """Let the records of the loggers ``names`` (e.g. a plugin stage's module) reach the console like
    grand-engine's own, from now on and through later :func:`configure_logging` calls."""
    handler = next(
        (h for h in logging.getLogger("grand_engine").handlers if getattr(h, "grand_engine_console", False)), None
    )
    for name in names:
        if name in _CONSOLE_LOGGERS or name.startswith("grand_engine."):
            continue
        _CONSOLE_LOGGERS.add(name)
        if handler is not None:
            logging.getLogger(name).addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, quiet=args.quiet)
    from grand_engine.runtime.lock import LockLostError, OutputLockedError  # deferred: imports pyarrow

    try:
        return args.func(args)
    except (ConfigError, OSError, OutputLockedError, LockLostError) as exc:
        print(f"grand-engine: error: {exc}", file=sys.stderr)
        return 2
