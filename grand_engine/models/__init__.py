"""Model adapters, one module per family. Importing this package registers every family and tiny builder."""

from grand_engine.models import (  # noqa: F401
    clip,
    closed_set,
    depth,
    llm,
    open_vocab,
    sam,
    text,
    vlm,
)
