"""GranD-f records and exports (``grand-engine export``): :mod:`grand_engine.grandf.gcg` (the GCG rules),
:mod:`~grand_engine.grandf.records` (one builder and check per format), :mod:`~grand_engine.grandf.exports`
(streaming export driver), :mod:`~grand_engine.grandf.writers` (incremental JSON writers),
:mod:`~grand_engine.grandf.reader` (unit-by-unit reads of ``done`` units) and :mod:`grand_engine.cli.export`.
Submodules are imported on use so that the command line starts fast.
"""
