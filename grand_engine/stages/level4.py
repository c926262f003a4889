"""``level4``: the final GranD record — ``level3`` plus the extra-context paragraph (GranD step 23, §5, §8).

Every ``level3`` column, plus ``additional_context``: the ``extra_context`` stage's ``text`` as produced (the
reference stripped it; the LLM stage already returns the completion stripped). An image whose text is null or
blank becomes an error row naming the reason instead of a record without its paragraph (the reference dropped
such images silently, §14.23, §14.52). A completion cut at the token limit (``finish_reason == "length"``) only
reaches this stage when ``extra_context`` was told to keep it (its ``accept_truncated``); ``reject_truncated``
refuses such rows here as well.

Every row is checked with :func:`grand_engine.validate.validate_annotation` at level 4 (``check_invariants``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import table_schema
from grand_engine.stages.level3 import LEVEL3_FIELDS

__all__ = ["LEVEL4_FIELDS", "LEVEL4_SCHEMA", "Level4", "merge_level4"]

LEVEL4_FIELDS: tuple[tuple[str, pa.DataType], ...] = (*LEVEL3_FIELDS, ("additional_context", pa.string()))
"""The ``level4`` table's columns after ``image_id``: the final GranD annotation."""

LEVEL4_SCHEMA = table_schema(*LEVEL4_FIELDS)


def merge_level4(level3: dict[str, Any], extra: dict[str, Any], *, reject_truncated: bool = False) -> dict[str, Any]:
    """The ``level4`` row (without ``image_id``) from a ``level3`` row and an ``extra_context`` row."""
    text = extra.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"extra_context produced no text (text={text!r}, finish_reason={extra.get('finish_reason')!r})"
        )
    if reject_truncated and extra.get("finish_reason") == "length":
        raise ValueError(
            f"extra_context stopped at the token limit (max_tokens_used={extra.get('max_tokens_used')!r}, "
            f"attempts={extra.get('attempts')!r}); the paragraph is cut"
        )
    row = {name: level3.get(name) for name, _ in LEVEL3_FIELDS}
    row["additional_context"] = text
    return row


@dataclass
class Level4(Stage):
    """Attach the extra-context paragraph to the level-3 annotation: the final GranD record."""

    name: ClassVar[str] = "level4"
    requires: ClassVar[tuple[str, ...]] = ("level3", "extra_context")
    level: ClassVar[int | None] = 4
    schema: ClassVar[pa.Schema] = LEVEL4_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=256)

    reject_truncated: bool = False  # also refuse completions cut at max_tokens that extra_context chose to keep
    check_invariants: bool = True  # validate each output row at level 4 (spec §8 invariants)

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        row = merge_level4(
            unit.input_row("level3", image_id),
            unit.input_row("extra_context", image_id),
            reject_truncated=self.reject_truncated,
        )
        row["image_id"] = image_id
        return self.require_valid(row, 4) if self.check_invariants else row
