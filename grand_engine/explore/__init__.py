"""The static HTML explorer and PNG overlays: ``grand-engine show`` (see :mod:`grand_engine.explore.site`)."""
