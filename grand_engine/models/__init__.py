"""Model adapters, one module per family (declared in the ``grand_engine.model_families`` entry-point group, so a
family's module is imported when the family is first loaded), and the tiny random checkpoints in
``grand_engine.models.tiny``."""
