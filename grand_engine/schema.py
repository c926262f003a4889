"""Arrow types shared by every table.

Conventions (one for the whole project):

* Boxes are absolute pixel ``[x1, y1, x2, y2]`` float32 in the displayed image orientation.
* Masks are COCO compressed RLE ``{size: [H, W], counts: str}`` (pycocotools), never dense arrays.
* Every stage table starts with ``image_id`` (string) and has one row per processed image.
"""

from __future__ import annotations

import json

import pyarrow as pa

BOX = pa.list_(pa.float32(), 4)
"""A box ``[x1, y1, x2, y2]`` in absolute pixels."""

RLE = pa.struct([("size", pa.list_(pa.int32(), 2)), ("counts", pa.string())])
"""A COCO compressed RLE mask."""

IMAGE_ID = pa.field("image_id", pa.string(), nullable=False)


def table_schema(
    *fields: pa.Field | tuple[str, pa.DataType], version: str = "1", pandas_strings: bool = False
) -> pa.Schema:
    """A stage schema: ``image_id`` first, then ``fields``; the schema version goes into the metadata.

    With ``pandas_strings`` the metadata also tells pandas to read the string columns as its nullable ``string``
    dtype: pandas 3 otherwise reads them as ``str``, whose missing value is NaN (a float) where pyarrow, DuckDB
    and polars give null; with it a missing value is ``<NA>``. Other readers ignore this metadata.
    """
    out = [IMAGE_ID]
    for f in fields:
        out.append(f if isinstance(f, pa.Field) else pa.field(f[0], f[1]))
    metadata = {b"grand_engine.schema_version": version.encode()}
    if pandas_strings:
        metadata[b"pandas"] = _pandas_string_metadata([f for f in out if pa.types.is_string(f.type)])
    return pa.schema(out, metadata=metadata)


def _pandas_string_metadata(fields: list[pa.Field]) -> bytes:
    """The ``pandas`` schema metadata naming ``fields`` as pandas ``string`` columns (no index)."""
    columns = [
        {"name": f.name, "field_name": f.name, "pandas_type": "unicode", "numpy_type": "string", "metadata": None}
        for f in fields
    ]
    return json.dumps({"index_columns": [], "column_indexes": [], "columns": columns}).encode()


DETECTIONS_FIELDS = (
    ("boxes", pa.list_(BOX)),
    ("scores", pa.list_(pa.float32())),
    ("labels", pa.list_(pa.string())),
)
"""Columns of every detector side table (one list entry per box)."""

IMAGES_SCHEMA = table_schema(
    ("file_name", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format", pa.string()),
    ("orientation", pa.int16()),  # EXIF orientation tag (1 = as stored); width/height are post-rotation
    ("source", pa.string()),  # tar path or image file path
    ("offset", pa.int64()),  # byte offset of the image data inside `source` (0 for plain files)
    ("size", pa.int64()),  # byte length of the image data
    ("ann_source", pa.string()),  # SA-1B JSON locator (null when the image has none)
    ("ann_offset", pa.int64()),
    ("ann_size", pa.int64()),
)
"""The ``images`` root table: one row per readable image of a unit, with where to read it from."""

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
    ]
)
"""``OUT/_errors/<stage>/<shard>/<unit>.parquet``: one row per problem with an image. ``severity`` is ``error`` (the
image has no row in the stage's table and is excluded downstream) or ``warning`` (the image was processed anyway and
has its row, e.g. ``DuplicateMember``: a repeated id whose first copy is used)."""

SEVERITIES = ("error", "warning")

OBJECT = pa.struct(
    [
        ("id", pa.int32()),
        ("bbox", BOX),
        ("labels", pa.list_(pa.string())),  # normalised candidate names (underscores -> spaces)
        ("qualifiers", pa.list_(pa.string())),  # LVIS parenthetical qualifier per label ("" when none)
        ("label", pa.string()),  # the single chosen label (level 2 on), else null
        ("score", pa.float32()),  # null for objects created from caption grounding
        ("sources", pa.list_(pa.string())),  # detector slots that voted for this object
        ("attributes", pa.list_(pa.string())),  # region descriptions
        ("depth", pa.float32()),  # median relative inverse depth (bigger = nearer), level 2 on
        ("depth_note", pa.string()),  # why depth is null, or which region it came from
        ("segmentation", RLE),  # level 3 on
        ("segmentation_source", pa.string()),  # sa1b | detector | sam
    ]
)
"""An object or floating object of the GranD annotation (fields filled as levels progress)."""

FLOATING_ATTRIBUTE = pa.struct([("bbox", BOX), ("score", pa.float32()), ("attributes", pa.list_(pa.string()))])
"""A region caption that no detector box agreed with (GranD's ``floating_attributes``)."""

LANDMARK = pa.struct([("category", pa.string()), ("fine_category", pa.string())])

AFFORDANCE = pa.struct(
    [
        ("category", pa.string()),
        ("description", pa.string()),
        ("object_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.string())),
    ]
)

DETAIL = pa.struct(
    [
        ("phrase", pa.string()),
        ("tokens_positive", pa.list_(pa.int32(), 2)),  # [start, end) into the stored caption, exact
        ("ids", pa.list_(pa.int32())),  # object / floating object ids the phrase is grounded to
        ("bbox", pa.list_(BOX)),  # the boxes of those ids, equal to the objects' boxes
        ("match", pa.string()),  # how it was grounded: exact | lemma | embedding | noun
    ]
)
"""A grounded phrase of a caption (GranD's caption ``details``)."""

SHORT_CAPTION = pa.struct([("caption", pa.string()), ("details", pa.list_(DETAIL))])

VERIFY_ITEM = pa.struct(
    [
        ("item", pa.string()),  # an object the caption claims is visible
        ("verdict", pa.string()),  # confirmed | unconfirmed
        ("evidence", pa.string()),  # scene_graph_exact | scene_graph_lemma | scene_graph_embedding | detector | none
        ("score", pa.float32()),  # similarity or detector score behind the verdict
    ]
)

VERIFICATION = pa.struct(
    [
        ("status", pa.string()),  # verified | failed | unchecked
        ("rounds", pa.int32()),  # regenerations performed (0 = first caption accepted)
        ("checklist", pa.list_(VERIFY_ITEM)),  # items of the final caption
        ("items_checked", pa.int32()),
        ("items_confirmed", pa.int32()),
        ("hallucination_rate_before", pa.float32()),  # unconfirmed / checked for the first caption
        ("hallucination_rate_after", pa.float32()),  # the same for the final caption
    ]
)

DENSE_CAPTION = pa.struct([("caption", pa.string()), ("details", pa.list_(DETAIL)), ("verification", VERIFICATION)])
"""The level-3 dense caption with its grounded phrases and its verification record."""
