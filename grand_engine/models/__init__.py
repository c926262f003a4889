"""Model adapters, one module per family (``base.FAMILY_MODULES`` names them; a family's module is imported
when the family is first loaded), and the tiny random checkpoints in ``grand_engine.models.tiny``."""
