"""What ``grand-engine stats`` shows: the console report, the PNG plots and a standalone HTML page.

Plots are drawn with matplotlib's object API (``matplotlib.figure.Figure``: no pyplot state, no display), one PNG
per figure, and listed in ``stats["plots"]`` (name, file, title) so that a reader of ``stats.json`` (the explorer's
dataset page) can show them without knowing their names in advance.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.quality.stats import GRAND_PER_IMAGE, PER_IMAGE_LABELS, VERIFICATION_OUTCOMES

AREA_PLOT_GROUP = 6
"""Fine mask-area bins merged per plotted bar (50 bins per decade → 6 decades of 50 bars)."""
DEPTH_PLOT_GROUP = 5
MAX_BARS = 60
"""An integer distribution with more distinct values than this is plotted in bins."""
LISTED_LABELS = 10
"""Labels named on the console (all top-k are in the JSON and the plot)."""
RUN_COLOR, GRAND_COLOR, WARNING_COLOR = "#3465a4", "#cc0000", "#f57900"


# -- console -----------------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.{digits}f}"


def _f(value: float | None, digits: int) -> str:
    """A real number with a fixed number of decimals ("–" for None)."""
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _spread(s: dict[str, Any], digits: int = 1) -> str:
    return f"{_num(s['p10'], digits)}–{_num(s['p90'], digits)}"


def format_report(stats: dict[str, Any]) -> str:
    """The console report of :func:`grand_engine.quality.stats.compute_stats`' result."""
    lines: list[str] = []
    images = stats["images"]
    units = stats["units"]
    lines.append(
        f"annotation table: {stats['annotation_stage']} ({units['annotation']} of {units['images']} units done) — "
        f"{images['annotated']} images annotated of {images['in_run']} in the run; "
        f"{images['excluded_by_errors']} images excluded by error rows"
    )
    lines.append("")
    per_image = stats["per_image"]
    grand = {f.key: f.value for f in GRAND_PER_IMAGE}
    header = ("per image", "GranD paper", "this run", "median", "p10–p90", "min–max", "dataset total")
    rows = []
    keys = [f.key for f in GRAND_PER_IMAGE] + [k for k in PER_IMAGE_LABELS if k not in grand]
    for key in keys:
        s = per_image.get(key)
        if s is None and key not in grand:
            continue
        label = PER_IMAGE_LABELS[key]
        g = f"{grand[key]:.1f}" if key in grand else ""
        if s is None:
            rows.append((label, g, "n/a", "", "", "", ""))
            continue
        rows.append(
            (
                label,
                g,
                "–" if s["mean"] is None else f"{s['mean']:.1f}",
                _num(s["median"]),
                _spread(s),
                f"{_num(s['min'])}–{_num(s['max'])}",
                f"{s['total']:,}",
            )
        )
    lines += _table(header, rows, align="lrrrrrr")
    lines.append(f"GranD paper: {stats['grand_source']}.")
    lines.append("")

    captions = stats.get("captions") or {}
    short, dense = captions.get("short"), captions.get("dense")
    if short:
        text = f"short captions: {short['captions']:,}"
        if short.get("phrases_per_caption"):
            p = short["phrases_per_caption"]
            text += (
                f"; grounded phrases per caption: mean {_f(p['mean'], 2)}, median {_num(p['median'])}, "
                f"max {_num(p['max'])}"
            )
        lines.append(text)
    if dense:
        w, p = dense["words"], dense["phrases_per_caption"]
        lines.append(
            f"dense captions: {dense['captions']:,}; words: mean {_f(w['mean'], 1)}, median {_num(w['median'])}, "
            f"p10–p90 {_spread(w)}; grounded phrases per caption: mean {_f(p['mean'], 2)}, "
            f"median {_num(p['median'])}, max {_num(p['max'])}"
        )
    v = stats.get("verification")
    if v and v["dense_captions"]:
        parts = [f"{k} {v[k]} ({_pct(v['rates'][k])})" for k in VERIFICATION_OUTCOMES]
        if v.get("missing"):
            parts.append(f"without a record {v['missing']}")
        lines.append(f"verification of {v['dense_captions']} dense captions: " + ", ".join(parts))
        lines.append(
            f"  hallucination rate (unconfirmed / checked items): before {_f(v['hallucination_rate_before'], 3)}, "
            f"after {_f(v['hallucination_rate_after'], 3)}"
        )
    labels = stats.get("labels") or {}
    if labels.get("labelled_regions"):
        lines.append(
            f"labels: {labels['labelled_regions']:,} labelled regions ({labels['unlabelled_regions']:,} without), "
            f"{labels['distinct']:,} distinct, {labels['singletons']:,} seen once; the top {labels['top_k']} cover "
            f"{_pct(labels['top_k_share'])}, the other {labels['tail_labels']:,} labels {_pct(labels['tail_share'])}; "
            f"{labels['labels_for_half_of_regions']:,} labels cover half of the regions"
        )
        named = ", ".join(f"{t['label']} {t['count']:,}" for t in labels["top"][:LISTED_LABELS])
        lines.append(f"  most frequent: {named}")
    area = stats.get("mask_area")
    if area and area["items"]:
        lines.append(
            f"mask area (share of the image, {area['items']:,} masks): mean {area['mean']:.4f}, "
            f"median {area['median']:.4f}, p10–p90 {area['p10']:.4f}–{area['p90']:.4f}"
        )
    depth = stats.get("depth")
    if depth and depth["items"]:
        lines.append(
            f"depth (0 = farthest, 1 = nearest in its image; {depth['items']:,} regions, "
            f"{depth['regions_without_depth']:,} without a depth): mean {depth['mean']:.3f}, "
            f"median {depth['median']:.3f}, p10–p90 {depth['p10']:.3f}–{depth['p90']:.3f}"
        )
    lines.append("")
    errors = stats["errors"]
    lines.append(
        f"error rows of done units: {errors['error_rows']:,} errors ({errors['images_excluded']:,} images excluded), "
        f"{errors['warning_rows']:,} warnings (images kept)"
    )
    if errors["by_stage"]:
        lines += _table(
            ("stage", "error type", "severity", "rows", "images"),
            [
                (e["stage"], e["error_type"], e["severity"], f"{e['rows']:,}", f"{e['images']:,}")
                for e in errors["by_stage"]
            ],
            align="lllrr",
            indent="  ",
        )
    if errors.get("failed_units"):
        failed = ", ".join(f"{stage} {n}" for stage, n in errors["failed_units"].items())
        lines.append(f"units that failed as a whole (grand-engine status): {failed}")
    for note in stats.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], align: str, indent: str = "") -> list[str]:
    """Rows under a header, each column left (``l``) or right (``r``) aligned."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return indent + "  ".join(cells).rstrip()

    return [fmt(header), *(fmt(r) for r in rows)]


# -- plots -------------------------------------------------------------------------------------------------------


def _figure(width: float = 6.4, height: float = 3.6, counts_on: str | None = "y") -> tuple[Any, Any]:
    """A figure with one axes whose ``counts_on`` axis (``"x"``, ``"y"`` or None) has integer ticks."""
    from matplotlib.figure import Figure  # matplotlib is imported only when plots are drawn
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    if counts_on is not None:
        getattr(ax, f"{counts_on}axis").set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _int_bars(ax: Any, summary: dict[str, Any], color: str = RUN_COLOR, label: str | None = None) -> None:
    values = np.asarray(summary["histogram"]["value"], dtype=np.int64)
    counts = np.asarray(summary["histogram"]["count"], dtype=np.int64)
    if values.size and values.max() - values.min() > MAX_BARS:
        edges = np.histogram_bin_edges(values, bins=40, range=(values.min(), values.max() + 1))
        binned, _ = np.histogram(values, bins=edges, weights=counts)
        ax.bar(edges[:-1], binned, width=np.diff(edges), align="edge", color=color, alpha=0.8, label=label)
    else:
        ax.bar(values, counts, width=0.8, color=color, alpha=0.8, label=label)


def _per_image_plot(stats: dict[str, Any], key: str, title: str) -> bytes | None:
    s = stats["per_image"].get(key)
    if not s or not s["items"]:
        return None
    fig, ax = _figure()
    _int_bars(ax, s)
    ax.axvline(s["mean"], color=RUN_COLOR, linestyle="--", label=f"this run: mean {s['mean']:.1f}")
    published = {f.key: f for f in GRAND_PER_IMAGE}.get(key)
    if published is not None:
        ax.axvline(published.value, color=GRAND_COLOR, label=f"GranD paper: {published.value:.1f}")
    ax.set_xlabel(f"{PER_IMAGE_LABELS[key]} per image")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(frameon=False)
    return _png(fig)


def _grand_plot(stats: dict[str, Any]) -> bytes | None:
    rows = [r for r in stats["grand_comparison"] if r["run"] is not None]
    if not rows:
        return None
    from matplotlib.figure import Figure  # matplotlib is imported only when plots are drawn

    fig = Figure(figsize=(1.0 + 1.6 * len(rows), 3.2), layout="constrained")
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    for ax, r in zip(axes, rows, strict=True):
        bars = ax.bar(["GranD", "this run"], [r["grand"], r["run"]], color=[GRAND_COLOR, RUN_COLOR])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_title(r["label"].replace(" (", "\n("), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
    fig.suptitle("Per image: GranD paper and this run", fontsize=11)
    return _png(fig)


def _phrases_plot(stats: dict[str, Any]) -> bytes | None:
    captions = stats.get("captions") or {}
    series = []
    if captions.get("short") and captions["short"].get("phrases_per_caption"):
        series.append(("short captions", captions["short"]["phrases_per_caption"], RUN_COLOR))
    if captions.get("dense") and captions["dense"]["phrases_per_caption"]["items"]:
        series.append(("dense captions", captions["dense"]["phrases_per_caption"], WARNING_COLOR))
    series = [s for s in series if s[1]["items"]]
    if not series:
        return None
    fig, ax = _figure(counts_on=None)
    width = 0.8 / len(series)
    for i, (label, s, color) in enumerate(series):
        values = np.asarray(s["histogram"]["value"], dtype=np.float64)
        counts = np.asarray(s["histogram"]["count"], dtype=np.float64)
        ax.bar(
            values + (i - (len(series) - 1) / 2) * width,
            counts / counts.sum(),
            width=width,
            color=color,
            label=f"{label} (mean {s['mean']:.2f})",
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("grounded phrases per caption")
    ax.set_ylabel("share of captions")
    ax.set_title("Grounded phrases per caption")
    ax.legend(frameon=False)
    return _png(fig)


def _words_plot(stats: dict[str, Any]) -> bytes | None:
    dense = (stats.get("captions") or {}).get("dense")
    if not dense or not dense["words"]["items"]:
        return None
    fig, ax = _figure()
    _int_bars(ax, dense["words"])
    ax.set_xlabel("words per dense caption")
    ax.set_ylabel("dense captions")
    ax.set_title(f"Dense-caption length (mean {dense['words']['mean']:.1f} words)")
    return _png(fig)


def _verification_plot(stats: dict[str, Any]) -> bytes | None:
    v = stats.get("verification")
    if not v or not v["dense_captions"]:
        return None
    fig, ax = _figure()
    names = [*VERIFICATION_OUTCOMES, "missing"] if v.get("missing") else list(VERIFICATION_OUTCOMES)
    colors = ["#4e9a06", "#73d216", GRAND_COLOR, "#888a85", "#555753"]
    ax.bar(names, [v[n] for n in names], color=colors[: len(names)])
    for i, n in enumerate(names):
        ax.annotate(_pct(v["rates"][n]), (i, v[n]), ha="center", va="bottom", fontsize=8)
    ax.margins(y=0.12)
    ax.set_ylabel("dense captions")
    ax.set_title("Verification of the dense captions")
    return _png(fig)


def _labels_top_plot(stats: dict[str, Any]) -> bytes | None:
    labels = stats.get("labels") or {}
    top = labels.get("top") or []
    if not top:
        return None
    fig, ax = _figure(6.4, 1.2 + 0.22 * len(top), counts_on="x")
    ax.barh([t["label"] for t in top][::-1], [t["count"] for t in top][::-1], color=RUN_COLOR)
    ax.set_xlabel("regions")
    ax.set_title(f"Top {len(top)} labels ({_pct(labels['top_k_share'])} of labelled regions)")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def _labels_rank_plot(stats: dict[str, Any], counts: np.ndarray | None) -> bytes | None:
    labels = stats.get("labels") or {}
    if counts is None or counts.size == 0:
        return None
    fig, ax = _figure(counts_on=None)
    ranks = np.arange(1, counts.size + 1)
    ax.loglog(ranks, counts, marker=".", linestyle="-", color=RUN_COLOR)
    if labels.get("top_k") and labels["top_k"] < counts.size:
        ax.axvline(labels["top_k"], color=GRAND_COLOR, linestyle="--", label=f"top {labels['top_k']}")
        ax.legend(frameon=False)
    ax.set_xlabel("label rank")
    ax.set_ylabel("regions")
    ax.set_title(f"Label frequency: {labels['distinct']:,} labels, {labels['singletons']:,} seen once")
    return _png(fig)


def _coarse(summary: dict[str, Any], group: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.asarray(summary["histogram"]["edges"], dtype=np.float64)
    counts = np.asarray(summary["histogram"]["count"], dtype=np.int64)
    n = counts.size // group * group
    return edges[: n + 1 : group], counts[:n].reshape(-1, group).sum(axis=1)


def _area_plot(stats: dict[str, Any]) -> bytes | None:
    area = stats.get("mask_area")
    if not area or not area["items"]:
        return None
    edges, counts = _coarse(area, AREA_PLOT_GROUP)
    fig, ax = _figure()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=RUN_COLOR)
    ax.set_xscale("log")
    ax.axvline(area["median"], color=GRAND_COLOR, linestyle="--", label=f"median {area['median']:.4f}")
    ax.set_xlabel("mask area / image area")
    ax.set_ylabel("masks")
    ax.set_title("Mask area")
    ax.legend(frameon=False)
    return _png(fig)


def _depth_plot(stats: dict[str, Any]) -> bytes | None:
    depth = stats.get("depth")
    if not depth or not depth["items"]:
        return None
    edges, counts = _coarse(depth, DEPTH_PLOT_GROUP)
    fig, ax = _figure()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=RUN_COLOR)
    ax.set_xlabel("region depth in its image's depth range (0 = farthest, 1 = nearest)")
    ax.set_ylabel("regions")
    ax.set_title("Region depth")
    return _png(fig)


def _errors_plot(stats: dict[str, Any]) -> bytes | None:
    rows = stats["errors"]["by_stage"]
    if not rows:
        return None
    fig, ax = _figure(6.4, 1.2 + 0.25 * len(rows), counts_on="x")
    names = [f"{r['stage']}: {r['error_type']}" for r in rows][::-1]
    colors = [GRAND_COLOR if r["severity"] == "error" else WARNING_COLOR for r in rows][::-1]
    ax.barh(names, [r["rows"] for r in rows][::-1], color=colors)
    ax.set_xlabel("rows (red: error, the image is excluded; orange: warning)")
    ax.set_title("Error rows by stage and type")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


PLOTS: tuple[tuple[str, str, Callable[..., bytes | None]], ...] = (
    ("per_image_vs_grand", "Per-image figures: this run and GranD", _grand_plot),
    ("regions_per_image", "Regions per image", lambda s: _per_image_plot(s, "regions", "Regions per image")),
    (
        "referring_expressions_per_image",
        "Referring expressions per image",
        lambda s: _per_image_plot(s, "referring_expressions", "Referring expressions per image"),
    ),
    ("phrases_per_caption", "Grounded phrases per caption", _phrases_plot),
    ("dense_caption_words", "Dense-caption length", _words_plot),
    ("verification", "Verification of the dense captions", _verification_plot),
    ("labels_top", "Most frequent labels", _labels_top_plot),
    ("labels_rank_frequency", "Label frequency by rank", None),
    ("mask_area", "Mask area", _area_plot),
    ("depth", "Region depth", _depth_plot),
    ("errors", "Error rows by stage and type", _errors_plot),
)
"""Every plot: ``(name, title, drawing function)``; the file is ``<name>.png``."""


def render_plots(stats: dict[str, Any], label_counts: Any = None) -> dict[str, bytes]:
    """``{"<name>.png": PNG bytes}`` of every plot the statistics have data for; records them in
    ``stats["plots"]`` as ``[{"name", "file", "title"}]``. ``label_counts``: the full label table (``label``,
    ``n``, most frequent first) for the rank-frequency plot."""
    counts = None
    if label_counts is not None and label_counts.num_rows:
        counts = label_counts["n"].to_numpy(zero_copy_only=False)
    out: dict[str, bytes] = {}
    listed = []
    for name, title, draw in PLOTS:
        data = _labels_rank_plot(stats, counts) if draw is None else draw(stats)
        if data is None:
            continue
        out[f"{name}.png"] = data
        listed.append({"name": name, "file": f"{name}.png", "title": title})
    stats["plots"] = listed
    return out


# -- HTML --------------------------------------------------------------------------------------------------------


def write_html(dest: str | Path, stats: dict[str, Any], plots: dict[str, bytes]) -> Path:
    """A standalone page ``DEST/index.html`` with the console report and every plot (written next to it)."""
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in plots.items():
        (folder / name).write_bytes(data)
    figures = "\n".join(
        f'<figure><img src="{html.escape(p["file"])}" alt="{html.escape(p["title"])}">'
        f"<figcaption>{html.escape(p['title'])}</figcaption></figure>"
        for p in stats.get("plots", [])
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>grand-engine stats: {html.escape(stats["output"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}
figure{{display:inline-block;margin:0.5em;vertical-align:top}}img{{max-width:520px}}</style></head>
<body><h1>Dataset statistics</h1><p>{html.escape(stats["output"])} — computed {html.escape(stats["generated_at"])}</p>
<pre>{html.escape(format_report(stats))}</pre>
{figures}
</body></html>
"""
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
