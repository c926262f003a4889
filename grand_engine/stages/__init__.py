"""Built-in stages, one module per stage slot.

Each stage is declared in the ``grand_engine.stages`` entry-point group of this package's ``pyproject.toml``, so
the registry (:data:`grand_engine.runtime.stage.STAGES`) imports a stage's module only when a pipeline uses it;
a plugin package declares its stages the same way.
"""
