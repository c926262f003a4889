"""Dataset statistics of a run: per-image and per-dataset figures computed from its Parquet tables.

Only ``done`` units count (their completion records, compacted or not, read once through
:class:`~grand_engine.runtime.records.RecordBook`). The figures come from one **annotation table**, the most
complete of ``level4``, ``level3``, ``level2``, ``link_phrases`` and ``level1`` that has a done unit (or the one
named), read in batches of consecutive units (about :data:`BATCH_ROWS` rows) and queried with DuckDB over the
batch's Arrow table (no Python loop over rows), and from the bookkeeping tables (``_errors``, the records, ``depth``
for normalising object depths). The whole run is never held in memory: integer figures are kept as exact value
counts (so means and percentiles are exact), real ones as fixed-bin histograms with exact count, sum, minimum and
maximum (percentiles interpolated inside a bin). Mask areas are measured on the masks of a sample of about
:data:`MASK_SAMPLE_IMAGES` images chosen by a hash of the image id (every image of a smaller run).

Definitions (``docs/quality.md`` has the full table):

* **regions** of an image: its objects plus its floating objects (GranD counts every region that has a mask; from
  level 3 on every object and floating object has one).
* **referring expressions**: what ``grand-engine export --format refseg`` writes for the image — for each object
  (not floating) with a mask, its attributes without a leaked ``Assistant:`` prefix: the only one, else those naming
  one of the object's labels, else the first (:func:`grand_engine.grandf.records.referring_attributes`, restated in
  SQL).
* **short captions**: non-blank short captions; **grounded** ones have at least one grounded phrase (detail).
* **dense captions**: 1 per image with a non-blank dense caption; its **length** in whitespace-separated words.
* **verification** of a dense caption: *passed* (``verified`` without regeneration), *repaired* (``verified``
  after one or more regenerations), *failed*, *unchecked*.
* **labels**: each region's chosen ``label`` (its first candidate label before level 2).
* **mask area**: a mask's pixels over its image's pixels; **depth**: an object's depth rescaled to its image's depth
  map range, ``(d - min) / (max - min)`` (0 = farthest, 1 = nearest; the ``depth`` table gives min and max).
* **error rows** by stage, type and severity: ``error`` rows exclude the image from the stage's table and from
  everything downstream, ``warning`` rows accompany an image that was processed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import StageRecord, data_path, errors_path, iter_failures
from grand_engine.runtime.records import RecordBook

STATS_DIR = "_stats"
"""Folder of an output that holds ``stats.json`` and the plots (the explorer's dataset page reads it)."""
STATS_JSON = f"{STATS_DIR}/stats.json"
STATS_FORMAT = "grand-engine-stats/1"
"""``format`` field of ``stats.json``: bumped when a key changes meaning."""

ANNOTATION_STAGES = ("level4", "level3", "level2", "link_phrases", "level1")
"""Tables that hold a whole annotation, most complete first: the default annotation table is the first with a done
unit."""
ROOT_STAGE = "images"
DEPTH_STAGE = "depth"
TOP_K = 20
"""Labels listed by name (``--top-k``)."""

MASK_SAMPLE_IMAGES = 20_000
"""Images whose masks the mask-area distribution decodes (about 1.5 M masks at GranD's 74 per image): parsing every
RLE of a large run costs more than everything else together, and a histogram of a million masks is already exact to
its bins. The sample is the images whose :func:`sample_key` falls below ``fraction · 2³²``: the same images on every
run and machine."""
AREA_MIN_FRACTION = 1e-6
"""Lower edge of the mask-area histogram (a 1-pixel mask of a 1-megapixel image); smaller values go to the first bin."""
AREA_BINS_PER_DECADE = 50
DEPTH_BINS = 200
PARALLEL_READS = 8
"""Unit files fetched ahead of the one being queried (an object store hides each request's latency)."""

GRAND_SOURCE = (
    "GLaMM: Pixel Grounding Large Multimodal Model (Rasheed et al., CVPR 2024), statistics of the GranD dataset: "
    "~11 M SA-1B images with ~810 M regions (each with a segmentation mask), ~84 M referring expressions and "
    "~33 M grounded captions (two short captions and one dense caption per image)"
)
"""Where the published per-image figures of :data:`GRAND_PER_IMAGE` come from."""


@dataclass(frozen=True)
class PublishedFigure:
    key: str  # the per-image figure of this run it is compared with
    label: str
    value: float
    derivation: str


GRAND_PER_IMAGE = (
    PublishedFigure("regions", "regions (objects + floating objects)", 810 / 11, "810 M regions / 11 M images"),
    PublishedFigure("referring_expressions", "referring expressions", 84 / 11, "84 M referring expressions / 11 M"),
    PublishedFigure("grounded_short_captions", "grounded short captions", 2.0, "two short captions per image"),
    PublishedFigure("dense_captions", "dense captions", 1.0, "one dense caption per image"),
)
"""GranD's published per-image figures (source: :data:`GRAND_SOURCE`)."""

PER_IMAGE_LABELS = {
    "regions": "regions (objects + floating objects)",
    "objects": "objects",
    "floating_objects": "floating objects",
    "masked_regions": "regions with a mask",
    "referring_expressions": "referring expressions",
    "short_captions": "short captions",
    "grounded_short_captions": "grounded short captions",
    "dense_captions": "dense captions",
    "grounded_dense_captions": "grounded dense captions",
}
"""Per-image figures, in the order they are reported."""

VERIFICATION_OUTCOMES = ("passed", "repaired", "failed", "unchecked")


class StatsError(LookupError):
    """The output has nothing to compute statistics from; the message says what is missing and what to run."""


# -- distributions -----------------------------------------------------------------------------------------------


class Counts:
    """The exact distribution of a non-negative integer quantity: ``counts[v]`` items have value ``v``."""

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, values: Any) -> None:
        v = np.asarray(values, dtype=np.int64).reshape(-1)
        if v.size == 0:
            return
        if v.min() < 0:
            raise ValueError("Counts holds non-negative integers")
        found = np.bincount(v)
        if found.size > self.counts.size:
            self.counts = np.concatenate([self.counts, np.zeros(found.size - self.counts.size, dtype=np.int64)])
        self.counts[: found.size] += found

    @property
    def items(self) -> int:
        return int(self.counts.sum())

    @property
    def total(self) -> int:
        return int((self.counts * np.arange(self.counts.size)).sum())

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0–100) as numpy's default (linear interpolation between order statistics)."""
        n = self.items
        if n == 0:
            return None
        cum = np.cumsum(self.counts)
        pos = q / 100 * (n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        v_lo = int(np.searchsorted(cum, lo, side="right"))
        v_hi = int(np.searchsorted(cum, hi, side="right"))
        return v_lo + (v_hi - v_lo) * (pos - lo)

    def summary(self) -> dict[str, Any]:
        """Items, total, mean, min, p10, median, p90, max and the value histogram (non-zero values only)."""
        n = self.items
        nonzero = np.flatnonzero(self.counts)
        return {
            "items": n,
            "total": self.total,
            "mean": self.total / n if n else None,
            "min": int(nonzero[0]) if n else None,
            "p10": self.percentile(10),
            "median": self.percentile(50),
            "p90": self.percentile(90),
            "max": int(nonzero[-1]) if n else None,
            "histogram": {"value": nonzero.tolist(), "count": self.counts[nonzero].tolist()},
        }


class Histogram:
    """A real quantity in fixed bins (linear or logarithmic) with its exact count, sum, minimum and maximum.

    Values outside the edges go to the first or last bin (min and max stay exact); non-finite values are ignored.
    Percentiles are interpolated inside the bin that holds them (linearly, or in log space for log bins), so they
    are exact to one bin width.
    """

    def __init__(self, lo: float, hi: float, bins: int, log: bool = False) -> None:
        self.log = log
        self.edges = np.logspace(math.log10(lo), math.log10(hi), bins + 1) if log else np.linspace(lo, hi, bins + 1)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.n = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values: Any) -> None:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return
        idx = np.clip(np.searchsorted(self.edges, v, side="right") - 1, 0, self.counts.size - 1)
        self.counts += np.bincount(idx, minlength=self.counts.size)
        self.n += int(v.size)
        self.sum += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def percentile(self, q: float) -> float | None:
        if self.n == 0:
            return None
        target = q / 100 * self.n
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(i, self.counts.size - 1)
        before = cum[i] - self.counts[i]
        frac = (target - before) / self.counts[i] if self.counts[i] else 0.0
        a, b = self.edges[i], self.edges[i + 1]
        value = a * (b / a) ** frac if self.log else a + (b - a) * frac
        return float(min(max(value, self.min), self.max))

    def summary(self) -> dict[str, Any]:
        return {
            "items": self.n,
            "mean": self.sum / self.n if self.n else None,
            "min": self.min if self.n else None,
            "p10": self.percentile(10),
            "median": self.percentile(50),
            "p90": self.percentile(90),
            "max": self.max if self.n else None,
            "histogram": {"edges": self.edges.tolist(), "count": self.counts.tolist(), "log": self.log},
        }


def area_histogram() -> Histogram:
    decades = round(-math.log10(AREA_MIN_FRACTION))
    return Histogram(AREA_MIN_FRACTION, 1.0, decades * AREA_BINS_PER_DECADE, log=True)


def depth_histogram() -> Histogram:
    return Histogram(0.0, 1.0, DEPTH_BINS)


# -- reading the run ---------------------------------------------------------------------------------------------


def done_records(book: RecordBook, stage: str) -> list[StageRecord]:
    """The ``done`` records of ``stage``, in unit order."""
    return sorted((r for r in book.records(stage) if r.status == "done"), key=lambda r: r.unit_id)


def _read(store: OutputStore, rel: str, columns: Sequence[str] | None) -> pa.Table:
    data = store.read_bytes(rel)
    if columns is None:
        return pq.read_table(pa.BufferReader(data))
    names = pq.read_schema(pa.BufferReader(data)).names
    return pq.read_table(pa.BufferReader(data), columns=[c for c in columns if c in names])


def iter_tables(
    store: OutputStore, paths: Sequence[str], columns: Sequence[str] | None = None
) -> Iterator[tuple[str, pa.Table]]:
    """``(path, table)`` of each file in order, a few fetched ahead in parallel."""
    workers = 1 if store.is_local else PARALLEL_READS
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), 2 * workers):
            chunk = paths[start : start + 2 * workers]
            yield from zip(chunk, pool.map(lambda rel: _read(store, rel, columns), chunk), strict=True)


def pick_annotation_stage(book: RecordBook, stage: str | None = None) -> str:
    """The annotation table: ``stage`` when given (it must have a done unit), else the first of
    :data:`ANNOTATION_STAGES` with one."""
    done = set(book.table.filter(pc.equal(book.table["status"], "done"))["stage"].to_pylist())
    if stage is not None:
        if stage not in done:
            raise StatsError(f"stage {stage!r} has no completed unit in this output (completed: {sorted(done)})")
        return stage
    for name in ANNOTATION_STAGES:
        if name in done:
            return name
    raise StatsError(
        f"no completed unit of an annotation table ({', '.join(ANNOTATION_STAGES)}); completed stages: "
        f"{sorted(done) or 'none'}. Run at least level 1 (grand-engine run ... --levels 1)"
    )


# -- the queries -------------------------------------------------------------------------------------------------

_NONBLANK = "regexp_matches(coalesce({0}, ''), '\\S')"
_STRIP = "regexp_replace({0}, '^\\s+|\\s+$', '', 'g')"
_ASSISTANT = "regexp_replace({0}, '^\\s*(?:assistant|istant)\\s*:?\\s*', '', 'i')"

REFERRING_SQL = f"""
WITH o AS (SELECT image_id, unnest(objects) AS o FROM annotation),
a AS (
  SELECT image_id,
    list_filter(list_transform(coalesce(o.attributes, []), lambda x: {_STRIP.format(_ASSISTANT.format("x"))}),
                lambda x: x <> '') AS attrs,
    list_filter(list_transform(coalesce(o.labels, []), lambda l: lower(replace(l, '_', ' '))),
                lambda l: l <> '') AS labels
  FROM o WHERE o.segmentation IS NOT NULL
),
n AS (
  SELECT image_id, attrs,
    len(list_filter(attrs, lambda x: coalesce(list_bool_or(list_transform(labels, lambda l: contains(lower(x), l))),
                                              false))) AS naming
  FROM a
)
SELECT image_id, sum(CASE WHEN len(attrs) <= 1 THEN len(attrs) WHEN naming > 0 THEN naming ELSE 1 END)::BIGINT AS n
FROM n GROUP BY image_id
"""
"""Referring expressions per image (images without any are absent): the refseg export's rule in SQL."""


def per_image_sql(columns: Sequence[str]) -> str:
    """One row per image of the annotation table with the per-image counts its columns allow."""
    parts = [
        "coalesce(len(objects), 0) AS objects",
        "coalesce(len(floating_objects), 0) AS floating_objects",
        "coalesce(len(list_filter(list_concat(coalesce(objects, []), coalesce(floating_objects, [])), "
        "lambda o: o.segmentation IS NOT NULL)), 0) AS masked_regions",
    ]
    if "short_captions" in columns:
        caption = _NONBLANK.format("s.caption")
        parts += [
            f"coalesce(len(list_filter(short_captions, lambda s: {caption})), 0) AS short_captions",
            f"coalesce(len(list_filter(short_captions, lambda s: {caption} AND coalesce(len(s.details), 0) > 0)), 0)"
            " AS grounded_short_captions",
        ]
    elif "captions" in columns:
        parts.append(f"coalesce(len(list_filter(captions, lambda c: {_NONBLANK.format('c')})), 0) AS short_captions")
    if "dense_caption" in columns:
        dense = _NONBLANK.format("dense_caption.caption")
        parts += [
            f"CASE WHEN {dense} THEN 1 ELSE 0 END AS dense_captions",
            f"CASE WHEN {dense} AND coalesce(len(dense_caption.details), 0) > 0 THEN 1 ELSE 0 END"
            " AS grounded_dense_captions",
        ]
    return f"SELECT image_id, {', '.join(parts)} FROM annotation"


SHORT_CAPTION_SQL = f"""
SELECT coalesce(len(s.details), 0) AS phrases
FROM (SELECT unnest(short_captions) AS s FROM annotation) WHERE {_NONBLANK.format("s.caption")}
"""

DENSE_CAPTION_SQL = f"""
SELECT coalesce(len(dense_caption.details), 0) AS phrases,
       len(regexp_split_to_array({_STRIP.format("dense_caption.caption")}, '\\s+')) AS words,
       dense_caption.verification.hallucination_rate_before AS before,
       dense_caption.verification.hallucination_rate_after AS after,
       CASE WHEN dense_caption.verification.status = 'verified' AND coalesce(dense_caption.verification.rounds, 0) > 0
            THEN 'repaired'
            WHEN dense_caption.verification.status = 'verified' THEN 'passed'
            WHEN dense_caption.verification.status IN ('failed', 'unchecked') THEN dense_caption.verification.status
            ELSE 'missing' END AS outcome
FROM annotation WHERE {_NONBLANK.format("dense_caption.caption")}
"""


def regions_sql(sample_below: int | None = None) -> str:
    """One row per region: its label, mask and depth (normalised with the image's depth-map range when known), and
    whether its image is in the mask-area sample: all images (``sample_below`` None), else those whose
    :func:`sample_key` is below ``sample_below``."""
    in_sample = "TRUE" if sample_below is None else f"{SAMPLE_KEY_SQL.format('r.image_id')} < {int(sample_below)}"
    return f"""
WITH r AS (
  SELECT image_id, unnest(list_concat(coalesce(objects, []), coalesce(floating_objects, []))) AS o FROM annotation
)
SELECT r.image_id,
       coalesce(o.label, o.labels[1]) AS label,
       o.segmentation.size[1] AS mask_height,
       o.segmentation.size[2] AS mask_width,
       o.segmentation.counts AS counts,
       {in_sample} AS in_sample,
       o.depth AS depth,
       CASE WHEN o.depth IS NULL OR NOT isfinite(o.depth) THEN NULL
            WHEN d.max > d.min THEN least(greatest((o.depth - d.min) / (d.max - d.min), 0.0), 1.0)
            WHEN d.max = d.min THEN 0.0 END AS depth_unit
FROM r LEFT JOIN depth_range d ON d.image_id = r.image_id
"""


SAMPLE_KEY_SQL = "CAST(('0x' || substr(md5({0}), 1, 8)) AS UBIGINT)"
"""An image's sample key in SQL: the first 32 bits of the MD5 of its id (the same on every machine and run)."""


def sample_key(image_id: str) -> int:
    """:data:`SAMPLE_KEY_SQL` in Python."""
    return int(hashlib.md5(image_id.encode("utf-8")).hexdigest()[:8], 16)


def connect() -> Any:
    """A DuckDB connection on one thread (each query covers one unit or one stage: small; the cores belong to the
    rest of the machine's work)."""
    import duckdb  # imported when statistics are computed, not when the command line starts

    con = duckdb.connect()
    con.execute("SET threads TO 1")
    return con


# -- the accumulator ---------------------------------------------------------------------------------------------


class _Labels:
    """Label counts merged unit by unit (in DuckDB, so millions of distinct labels never become Python objects)."""

    MERGE_ROWS = 500_000

    def __init__(self, con: Any, sample_below: int | None = None) -> None:
        self.con = con
        self.sample_below = sample_below
        self.parts: list[pa.Table] = []
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self.parts.append(table)
        self.rows += table.num_rows
        if self.rows > self.MERGE_ROWS:
            merged = self.merged()
            self.parts, self.rows = [merged], merged.num_rows

    def merged(self) -> pa.Table:
        if not self.parts:
            return pa.table({"label": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
        self.con.register("parts", pa.concat_tables(self.parts))
        return _arrow(
            self.con.sql("SELECT label, sum(n)::BIGINT AS n FROM parts GROUP BY label ORDER BY n DESC, label")
        )


def _arrow(rel: Any) -> pa.Table:
    return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()


@dataclass
class StatsInputs:
    """What the statistics were computed from."""

    annotation_stage: str
    annotation_units: int
    images_units: int


def _mask_areas(regions: pa.Table) -> tuple[np.ndarray, int]:
    """``(area fractions, masks that could not be read)`` of the regions' masks, one vectorised pass per mask size."""
    masked = regions.filter(pc.and_(pc.is_valid(regions["counts"]), regions["in_sample"]))
    if masked.num_rows == 0:
        return np.zeros(0), 0
    fractions: list[np.ndarray] = []
    unreadable = 0
    sizes = masked.group_by(["mask_height", "mask_width"]).aggregate([]).to_pylist()
    for size in sizes:
        h, w = size["mask_height"], size["mask_width"]
        group = masked.filter(pc.and_(pc.equal(masked["mask_height"], h), pc.equal(masked["mask_width"], w)))
        rles = [{"size": [h, w], "counts": c} for c in group["counts"].to_pylist()]
        try:
            areas = rle.validate_many(rles, h, w)
        except rle.RLEError:
            areas = np.full(len(rles), -1, dtype=np.int64)
            for i, r in enumerate(rles):  # only when a mask is malformed or empty: find which ones
                try:
                    areas[i] = int(rle.run_lengths(r)[1::2].sum())
                except rle.RLEError:
                    unreadable += 1
            areas = areas[areas >= 0]
        fractions.append(areas / float(h * w))
    return np.concatenate(fractions), unreadable


class _Accumulator:
    """The statistics of the annotation table, added one batch of units at a time."""

    def __init__(self, con: Any, sample_below: int | None = None) -> None:
        self.con = con
        self.sample_below = sample_below
        self.per_image = {key: Counts() for key in PER_IMAGE_LABELS}
        self.present: set[str] = set()
        self.short_phrases, self.dense_phrases, self.dense_words = Counts(), Counts(), Counts()
        self.verification = dict.fromkeys((*VERIFICATION_OUTCOMES, "missing"), 0)
        self.halluc = {"before": [0, 0.0], "after": [0, 0.0]}
        self.labels = _Labels(con)
        self.unlabelled = 0
        self.areas, self.depths = area_histogram(), depth_histogram()
        self.unreadable_masks = self.regions_without_depth = self.depth_not_normalised = 0
        self.annotated = 0

    def _query(self, sql: str) -> pa.Table:
        return _arrow(self.con.sql(sql))

    def add(self, table: pa.Table, depth_range: pa.Table) -> None:
        self.con.register("annotation", table)
        self.con.register("depth_range", depth_range)
        try:
            self._add(table)
        finally:
            self.con.unregister("annotation")
            self.con.unregister("depth_range")

    def _add(self, table: pa.Table) -> None:
        self.annotated += table.num_rows
        columns = table.column_names
        rows = self._query(per_image_sql(columns))
        for key in rows.column_names[1:]:
            self.per_image[key].add(rows[key].to_numpy())
            self.present.add(key)
        self.per_image["regions"].add(rows["objects"].to_numpy() + rows["floating_objects"].to_numpy())
        self.present.add("regions")
        refs = self._query(REFERRING_SQL)
        # images without a referring expression are absent from the query's result: they count as zero
        self.per_image["referring_expressions"].add(
            np.concatenate([refs["n"].to_numpy(), np.zeros(table.num_rows - refs.num_rows, dtype=np.int64)])
        )
        if "short_captions" in columns:
            self.short_phrases.add(self._query(SHORT_CAPTION_SQL)["phrases"].to_numpy())
        if "dense_caption" in columns:
            self._add_dense(self._query(DENSE_CAPTION_SQL))
        self._add_regions(self._query(regions_sql(self.sample_below)))

    def _add_dense(self, dense: pa.Table) -> None:
        self.dense_phrases.add(dense["phrases"].to_numpy())
        self.dense_words.add(dense["words"].to_numpy())
        for entry in dense["outcome"].value_counts().to_pylist():
            self.verification[entry["values"]] += entry["counts"]
        for key in ("before", "after"):
            values = pc.drop_null(dense[key]).to_numpy(zero_copy_only=False).astype(np.float64)
            values = values[np.isfinite(values)]
            self.halluc[key][0] += int(values.size)
            self.halluc[key][1] += float(values.sum())

    def _add_regions(self, regions: pa.Table) -> None:
        labelled = regions.filter(pc.is_valid(regions["label"]))
        counted = labelled.group_by("label").aggregate([("label", "count")])
        self.labels.add(pa.table({"label": counted["label"], "n": counted["label_count"]}))
        self.unlabelled += regions.num_rows - labelled.num_rows
        fractions, bad = _mask_areas(regions)
        self.areas.add(fractions)
        self.unreadable_masks += bad
        with_depth = int(pc.sum(pc.is_valid(regions["depth"])).as_py() or 0)
        self.regions_without_depth += regions.num_rows - with_depth
        unit_depths = pc.drop_null(regions["depth_unit"]).to_numpy(zero_copy_only=False)
        self.depth_not_normalised += with_depth - unit_depths.size
        self.depths.add(unit_depths)


BATCH_ROWS = 2048
"""Annotation rows queried together: DuckDB spends tens of milliseconds binding each query, so units are batched."""

_NO_DEPTH = pa.schema([("image_id", pa.string()), ("min", pa.float32()), ("max", pa.float32())])


def _batches(
    store: OutputStore, annotation: str, records: list[StageRecord], depth: dict[str, StageRecord]
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """``(annotation rows, depth ranges)`` of consecutive units, about :data:`BATCH_ROWS` rows at a time."""
    paths = [r.output or data_path(annotation, r.unit_id) for r in records]
    tables: list[pa.Table] = []
    ranges: list[pa.Table] = []
    rows = 0
    for record, (_, table) in zip(records, iter_tables(store, paths), strict=True):
        tables.append(table)
        rows += table.num_rows
        found = depth.get(record.unit_id)
        if found is not None:
            rel = found.output or data_path(DEPTH_STAGE, record.unit_id)
            ranges.append(_read(store, rel, _NO_DEPTH.names).select(_NO_DEPTH.names).cast(_NO_DEPTH))
        if rows >= BATCH_ROWS:
            yield (
                pa.concat_tables(tables, promote_options="default"),
                pa.concat_tables([_NO_DEPTH.empty_table(), *ranges]),
            )
            tables, ranges, rows = [], [], 0
    if tables:
        yield pa.concat_tables(tables, promote_options="default"), pa.concat_tables([_NO_DEPTH.empty_table(), *ranges])


def compute_stats(
    out: str | OutputStore,
    stage: str | None = None,
    top_k: int = TOP_K,
    mask_sample_images: int | None = MASK_SAMPLE_IMAGES,
) -> dict[str, Any]:
    """Statistics of the run in ``out`` (a folder, ``s3://…`` URI or store) as a JSON-ready dict (layout in
    ``docs/quality.md``). ``stage``: the annotation table (default: the most complete one with a done unit).

    ``mask_sample_images``: the mask-area distribution decodes the masks of about this many images, chosen by
    :func:`sample_key` (every image when the table has no more, or when None); every other figure covers every
    image."""
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    started = time.perf_counter()
    book = RecordBook.load(store)
    if len(book) == 0:
        raise StatsError(f"{store.uri} has no completion record (_manifests/): is it the output folder of a run?")
    annotation = pick_annotation_stage(book, stage)
    records = done_records(book, annotation)
    rows = sum(r.rows for r in records)
    fraction = 1.0 if mask_sample_images is None or rows <= mask_sample_images else mask_sample_images / rows
    acc = _Accumulator(connect(), None if fraction >= 1.0 else int(fraction * 2**32))
    depth_records = {r.unit_id: r for r in done_records(book, DEPTH_STAGE)}
    for table, depth_range in _batches(store, annotation, records, depth_records):
        acc.add(table, depth_range)
    per_image, present = acc.per_image, acc.present

    notes: list[str] = []
    masked = per_image["masked_regions"].total
    summaries: dict[str, Any] = {}
    for key in PER_IMAGE_LABELS:
        if key not in present and key != "referring_expressions":
            continue
        if key == "referring_expressions" and masked == 0:
            notes.append(
                "referring expressions need masks (an object without a mask has none): "
                f"the {annotation} table has no mask; level 3 adds them"
            )
            continue
        summaries[key] = {"label": PER_IMAGE_LABELS[key], **per_image[key].summary()}
    if "grounded_short_captions" not in summaries and "short_captions" in summaries:
        notes.append(f"the {annotation} table has no grounded phrases yet (level 3 grounds the captions)")

    images_total = sum(r.rows for r in done_records(book, ROOT_STAGE))
    errors = error_summary(store, book, acc.con)
    label_table = acc.labels.merged()
    result: dict[str, Any] = {
        "format": STATS_FORMAT,
        "output": store.uri,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "annotation_stage": annotation,
        "units": {"annotation": len(records), "images": len(done_records(book, ROOT_STAGE))},
        "images": {
            "in_run": images_total,
            "annotated": acc.annotated,
            "excluded_by_errors": errors["images_excluded"],
        },
        "per_image": summaries,
        "grand_comparison": [
            {
                "key": f.key,
                "label": f.label,
                "grand": f.value,
                "run": summaries[f.key]["mean"] if f.key in summaries else None,
                "derivation": f.derivation,
            }
            for f in GRAND_PER_IMAGE
        ],
        "grand_source": GRAND_SOURCE,
        "captions": {
            "short": {
                "captions": per_image["short_captions"].total,
                "phrases_per_caption": acc.short_phrases.summary() if "grounded_short_captions" in present else None,
            }
            if "short_captions" in present
            else None,
            "dense": {
                "captions": acc.dense_words.items,
                "phrases_per_caption": acc.dense_phrases.summary(),
                "words": acc.dense_words.summary(),
            }
            if "dense_captions" in present
            else None,
        },
        "verification": _verification(acc.verification, acc.halluc) if "dense_captions" in present else None,
        "labels": label_summary(label_table, acc.unlabelled, top_k),
        "mask_area": {**acc.areas.summary(), "unreadable_masks": acc.unreadable_masks, "image_fraction": fraction}
        if masked
        else None,
        "depth": {
            **acc.depths.summary(),
            "regions_without_depth": acc.regions_without_depth,
            "not_normalised": acc.depth_not_normalised,
        },
        "errors": errors,
        "stages": stage_summary(book),
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if acc.depth_not_normalised:
        notes.append(
            f"{acc.depth_not_normalised} region depths could not be rescaled (no done depth unit for their image) "
            "and are left out of the depth distribution"
        )
    if fraction < 1.0:
        notes.append(
            f"mask areas come from the masks of {100 * fraction:.2f} % of the images ({acc.areas.n:,} masks), "
            "chosen by a hash of the image id; --mask-sample 0 decodes every mask"
        )
    if acc.unreadable_masks:
        notes.append(f"{acc.unreadable_masks} masks do not decode and are left out of the mask-area distribution")
    if len(records) < result["units"]["images"]:
        notes.append(
            f"the {annotation} table is done for {len(records)} of {result['units']['images']} units: "
            "the figures cover those units only"
        )
    result["_label_counts"] = label_table  # for the plots; removed before the JSON is written
    return result


def _verification(outcomes: dict[str, int], halluc: dict[str, list]) -> dict[str, Any]:
    total = sum(outcomes.values())
    return {
        "dense_captions": total,
        **outcomes,
        "rates": {k: (outcomes[k] / total if total else None) for k in (*VERIFICATION_OUTCOMES, "missing")},
        "hallucination_rate_before": halluc["before"][1] / halluc["before"][0] if halluc["before"][0] else None,
        "hallucination_rate_after": halluc["after"][1] / halluc["after"][0] if halluc["after"][0] else None,
    }


def label_summary(label_counts: pa.Table, unlabelled: int, top_k: int) -> dict[str, Any]:
    """Top-k labels and the long tail of ``label_counts`` (``label``, ``n``, sorted by ``n`` descending)."""
    counts = label_counts["n"].to_numpy(zero_copy_only=False).astype(np.int64)
    names = label_counts["label"].to_pylist()[:top_k]
    total = int(counts.sum())
    cum = np.cumsum(counts)
    top = [
        {"label": name, "count": int(n), "share": n / total}
        for name, n in zip(names, counts[: len(names)].tolist(), strict=True)
    ]
    top_total = int(cum[len(names) - 1]) if names else 0
    ranks = sorted({int(r) for r in np.unique(np.round(np.logspace(0, math.log10(max(len(counts), 1)), 40)))})
    return {
        "labelled_regions": total,
        "unlabelled_regions": unlabelled,
        "distinct": int(counts.size),
        "singletons": int((counts == 1).sum()),
        "top_k": len(names),
        "top": top,
        "top_k_share": top_total / total if total else None,
        "tail_labels": int(counts.size - len(names)),
        "tail_share": (total - top_total) / total if total else None,
        "labels_for_half_of_regions": int(np.searchsorted(cum, total / 2, side="left") + 1) if total else None,
        "rank_frequency": {"rank": ranks if counts.size else [], "count": [int(counts[r - 1]) for r in ranks]}
        if counts.size
        else {"rank": [], "count": []},
    }


# -- bookkeeping: errors and stages ------------------------------------------------------------------------------


def _error_paths(book: RecordBook) -> list[str]:
    table = book.table
    done = table.filter(pc.equal(table["status"], "done"))
    mask = pc.greater(pc.add(pc.fill_null(done["errors"], 0), pc.fill_null(done["warnings"], 0)), 0)
    rows = done.filter(mask).select(["stage", "unit_id", "errors_output"]).to_pylist()
    return [r["errors_output"] or errors_path(r["stage"], r["unit_id"]) for r in rows]


def error_summary(store: OutputStore, book: RecordBook, con: Any = None) -> dict[str, Any]:
    """Error rows of the done units by stage, type and severity, and the images they excluded (``con``: a DuckDB
    connection to reuse)."""
    tables = []
    missing = 0
    for _, table in _safe_tables(store, _error_paths(book)):
        if table is None:
            missing += 1
            continue
        if "severity" not in table.column_names:  # outputs written before warnings existed: every row excluded
            table = table.append_column("severity", pa.array(["error"] * table.num_rows, pa.string()))
        names = ["image_id", "stage", "error_type", "severity"]
        tables.append(table.select(names).cast(pa.schema([(n, pa.string()) for n in names])))
    out: dict[str, Any] = {"error_rows": 0, "warning_rows": 0, "images_excluded": 0, "by_stage": []}
    failed: dict[str, int] = {}
    for rec in iter_failures(store):
        failed[rec.stage] = failed.get(rec.stage, 0) + 1
    out["failed_units"] = dict(sorted(failed.items()))
    if missing:
        out["unreadable_error_files"] = missing
    if not tables:
        return out
    con = con if con is not None else connect()
    con.register("errors", pa.concat_tables(tables))
    by = _arrow(
        con.sql(
            "SELECT stage, error_type, severity, count(*)::BIGINT AS rows, count(DISTINCT image_id)::BIGINT AS images "
            "FROM errors GROUP BY stage, error_type, severity ORDER BY stage, severity, rows DESC, error_type"
        )
    )
    totals = dict(con.sql("SELECT severity, count(*)::BIGINT FROM errors GROUP BY severity").fetchall())
    excluded = con.sql("SELECT count(DISTINCT image_id) FROM errors WHERE severity = 'error'").fetchall()[0][0]
    out.update(
        error_rows=int(totals.get("error", 0)),
        warning_rows=int(totals.get("warning", 0)),
        images_excluded=int(excluded),
        by_stage=by.to_pylist(),
    )
    return out


def _safe_tables(store: OutputStore, paths: Sequence[str]) -> Iterator[tuple[str, pa.Table | None]]:
    def read(rel: str) -> pa.Table | None:
        try:
            return _read(store, rel, None)
        except (FileNotFoundError, OSError, pa.ArrowInvalid):
            return None

    workers = 1 if store.is_local else PARALLEL_READS
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from zip(paths, pool.map(read, paths), strict=True)


def stage_summary(book: RecordBook) -> list[dict[str, Any]]:
    """Per stage: done units, images given, rows, error and warning rows, and compute seconds (from the records)."""
    table = book.table
    done = table.filter(pc.equal(table["status"], "done"))
    if done.num_rows == 0:
        return []
    grouped = done.group_by("stage").aggregate(
        [
            ("unit_id", "count"),
            ("images", "sum"),
            ("rows", "sum"),
            ("errors", "sum"),
            ("warnings", "sum"),
            ("seconds", "sum"),
        ]
    )
    rows = grouped.to_pylist()
    return sorted(
        (
            {
                "stage": r["stage"],
                "units": int(r["unit_id_count"]),
                "images": int(r["images_sum"] or 0),
                "rows": int(r["rows_sum"] or 0),
                "error_rows": int(r["errors_sum"] or 0),
                "warning_rows": int(r["warnings_sum"] or 0),
                "seconds": round(float(r["seconds_sum"] or 0.0), 3),
            }
            for r in rows
        ),
        key=lambda r: r["stage"],
    )


# -- writing -----------------------------------------------------------------------------------------------------


def stats_json(stats: dict[str, Any]) -> str:
    """``stats`` as the text of ``stats.json`` (internal keys, those starting with ``_``, left out)."""
    public = {k: v for k, v in stats.items() if not k.startswith("_")}
    return json.dumps(public, indent=2, ensure_ascii=False) + "\n"


def write_stats(store: OutputStore, stats: dict[str, Any], plots: dict[str, bytes]) -> list[str]:
    """Write ``_stats/stats.json`` and the plots (``_stats/<name>.png``) under ``store``; return the paths written.

    Plots of an earlier computation that this one did not draw are deleted, so the folder describes one run of
    the command."""
    written = []
    for name, data in plots.items():
        rel = f"{STATS_DIR}/{name}"
        store.write_bytes(rel, data)
        written.append(rel)
    for rel in store.list_files(STATS_DIR, ".png"):
        if rel not in written:
            store.delete(rel)
    store.write_text(STATS_JSON, stats_json(stats))
    written.append(STATS_JSON)
    return written
