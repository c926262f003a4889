"""``grandf``: one GCG (grounded conversation generation) record per image (GranD-f, spec §11).

GranD-f's ``GranDf_HA_GCG_train.json`` holds, per image, a caption and its grounded phrases, each with its
character span (``token_positives``, GranD-f's spelling) and the COCO RLE masks of the objects it names. This
stage builds that record from the level-4 (or level-3) annotation of every image:

1. **Caption**: the dense caption (spec step 20b). An image without one gets ``skip_reason =
   "no_dense_caption"``. With ``verified_only`` (default) a caption whose verification status is not
   ``verified`` keeps its record but gets ``skip_reason = "verification_<status>"`` — GranD-f is a
   quality-filtered set and the reference had no hallucination filter at all (§14.51).
2. **Span** of each detail: its ``tokens_positive`` when it selects the phrase (case-insensitive); otherwise
   the first case-insensitive occurrence of the phrase in the caption (the reference's ``indices`` rule,
   step 20b). The grounding's ``phrase`` is then the caption's own text at that span, so
   ``caption[start:end] == phrase`` holds exactly. Offsets are Python string indices (Unicode code points).
   A phrase found nowhere is dropped (``no_span``).
3. **Masks**: the ``segmentation`` of each of the detail's ids, searched in ``objects`` *and*
   ``floating_objects`` (the reference's caption-grounding converter searched objects only, §14.47), in the
   detail's id order, duplicates removed; a mask whose size is not the image's is ignored. A phrase whose ids
   all miss is dropped (``unknown_ids``); one whose objects have no usable mask is dropped (``no_mask``) —
   GranD-f phrases always have a mask. ``rle_masks`` and ``object_ids`` are aligned; consumers take the union.
4. **Order and overlap**: groundings are ordered by start offset (longer first on a tie). GCG training rewrites
   every span as ``<p> span </p> [SEG]``, which cannot nest, so a span overlapping an earlier kept one is dropped
   (``overlap``, when ``drop_overlapping``); a phrase whose text equals an earlier kept one's is dropped
   (``duplicate_phrase``) because GranD-f keys groundings by phrase text.
5. A record with a caption but no grounding left gets ``skip_reason = "no_grounded_phrase"``.
6. **Short-caption variant**: the same steps on every short caption (spec step 20a), in ``short_captions``
   (each with its own ``groundings`` and ``dropped_phrases``); verification does not apply to them.

Every image of the input gets a row (``skip_reason`` says why a row is not a usable GCG record), so no image
leaves silently; ``grand-engine export OUT --format grandf`` writes the rows whose ``skip_reason`` is null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.grandf.gcg import DROP_REASONS, find_span, gcg_groundings, gcg_record, mask_index
from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import RLE, table_schema

__all__ = [
    "DROP_REASONS",
    "GRANDF_SCHEMA",
    "GROUNDING",
    "GrandF",
    "find_span",
    "gcg_groundings",
    "gcg_record",
    "mask_index",
]

GROUNDING = pa.struct(
    [
        ("phrase", pa.string()),  # == caption[start:end]
        ("token_positives", pa.list_(pa.int32(), 2)),  # [start, end) code-point offsets (GranD-f spelling)
        ("rle_masks", pa.list_(RLE)),  # one mask per entry of object_ids
        ("object_ids", pa.list_(pa.int32())),  # the objects / floating objects the masks belong to
    ]
)
"""One grounded phrase of a GCG record."""

DROPPED = pa.struct([("phrase", pa.string()), ("reason", pa.string())])
"""A caption phrase left out of the record and why (no_span | unknown_ids | no_mask | overlap | duplicate_phrase)."""

SHORT_GCG = pa.struct(
    [("caption", pa.string()), ("groundings", pa.list_(GROUNDING)), ("dropped_phrases", pa.list_(DROPPED))]
)
"""The GCG form of one short caption."""

GRANDF_SCHEMA = table_schema(
    ("file_name", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("caption", pa.string()),  # the dense caption (null when the image has none)
    ("groundings", pa.list_(GROUNDING)),  # ordered by start offset
    ("dropped_phrases", pa.list_(DROPPED)),
    ("verification_status", pa.string()),  # the dense caption's verification status (null without a caption)
    ("skip_reason", pa.string()),  # null for a usable GCG record
    ("short_captions", pa.list_(SHORT_GCG)),  # the short-caption variant, one entry per short caption
    pandas_strings=True,  # pandas reads a null skip_reason as <NA> (nullable string), not NaN
)
"""The ``grandf`` table."""


@dataclass
class GrandF(Stage):
    """GCG records (GranD-f layout) from the final annotation: caption, phrase spans and their masks."""

    name: ClassVar[str] = "grandf"
    requires: ClassVar[tuple[str, ...]] = ("level4", "images")
    level: ClassVar[int | None] = 4
    schema: ClassVar[pa.Schema] = GRANDF_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=256)

    source: str = "level4"  # the annotation table read: level4 (final) or level3 (no extra context needed)
    verified_only: bool = True  # a dense caption must pass verification to be a GCG record (§14.51 fix)
    drop_overlapping: bool = True  # GCG's <p> span </p> [SEG] rewriting cannot nest spans (§11)

    def __post_init__(self) -> None:
        if self.source not in ("level3", "level4"):
            raise ValueError(f"grandf.source must be 'level3' or 'level4', got {self.source!r}")

    def inputs(self) -> tuple[str, ...]:
        return (self.source, "images")

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        row = dict(unit.input_row(self.source, image_id))
        image = unit.image_row(image_id)
        row["image_id"] = image_id
        if row.get("width") is None or row.get("height") is None:
            row["width"], row["height"] = image.get("width"), image.get("height")
        return gcg_record(row, image["file_name"], self.verified_only, self.drop_overlapping)
