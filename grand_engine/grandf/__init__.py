"""GranD-f records and exports (``grand-engine export``).

:mod:`~grand_engine.grandf.gcg` (the GCG rules), :mod:`~grand_engine.grandf.formats` (one class per export format,
and their registry), :mod:`~grand_engine.grandf.records` (record builders and checks),
:mod:`~grand_engine.grandf.exports` (the streaming export driver), :mod:`~grand_engine.grandf.writers`
(incremental JSON writers), :mod:`~grand_engine.grandf.reader` (unit-by-unit reads of ``done`` units).

This package's ``__init__`` imports nothing heavy, so the command line and ``import grand_engine`` start fast:
:func:`get_export_format` and :func:`export_formats` import the formats on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grand_engine.grandf.formats import ExportFormat

__all__ = ["export_formats", "get_export_format"]


def get_export_format(name: str) -> type[ExportFormat]:
    """The export format class registered as ``name`` (built-in, or from the entry-point group
    ``grand_engine.exports``, loaded only when ``name`` is not a built-in); ``KeyError`` lists the known names."""
    from grand_engine.grandf import formats  # deferred: the formats import numpy

    return formats.get_export_format(name)


def export_formats() -> dict[str, type[ExportFormat]]:
    """Every export format by name, the entry-point group ``grand_engine.exports`` included."""
    from grand_engine.grandf import formats  # deferred: the formats import numpy

    return formats.export_formats()
