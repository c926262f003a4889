"""Moved to :mod:`grand_engine.progress` (the project's one progress display); this name stays for modules that
still import it from here."""

from grand_engine.progress import Progress

__all__ = ["Progress"]
