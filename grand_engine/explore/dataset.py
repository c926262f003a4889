"""The explorer's dataset page (``DIR/dataset.html``): the run as a whole.

* what each stage did, from the run's records (:func:`grand_engine.runtime.run.status`);
* the dataset statistics and plots of ``grand-engine stats``: read from ``OUT/_stats/stats.json`` (and the PNGs it
  lists) when the command was run, else computed here when :mod:`grand_engine.quality.stats` is installed, else a
  note saying how to produce them;
* a search of the images the explorer shows, by object label and by caption text (dense, short and level-1
  captions);
* the error rows of every stage, with a filter by error type (rows of done units only, as their records name them;
  at most :data:`MAX_ERROR_ROWS` are listed).

Search and filter run in the page (``assets/dataset.js``) over data written into it: no server.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grand_engine.explore.markup import escape
from grand_engine.grandf.reader import done_records
from grand_engine.io.store import OutputStore

MAX_ERROR_ROWS = 5000
"""Error rows listed on the page (the count of all of them is shown)."""
STATS_JSON = "_stats/stats.json"
"""Where ``grand-engine stats`` writes its figures (``docs/quality.md``); its plots are listed in ``plots``."""


@dataclass
class SearchEntry:
    """What the search looks at for one image the explorer shows."""

    image_id: str
    href: str
    thumb: str
    labels: list[str]
    captions: list[str]


def search_entry(row: dict[str, Any], href: str, thumb: str) -> SearchEntry:
    """The labels of every object and floating object, and every caption, of one level row."""
    labels: list[str] = []
    for obj in (row.get("objects") or []) + (row.get("floating_objects") or []):
        for label in [obj.get("label"), *(obj.get("labels") or [])]:
            if label and label not in labels:
                labels.append(label)
    captions = [((row.get("dense_caption") or {}).get("caption"))]
    captions += [s.get("caption") for s in row.get("short_captions") or []]
    captions += list(row.get("captions") or [])
    return SearchEntry(row["image_id"], href, thumb, labels, [c for c in captions if c])


@dataclass
class RunStats:
    """What ``grand-engine stats`` says of the output: its report and its plots, or why there is none."""

    report: str = ""
    plots: list[dict[str, str]] = field(default_factory=list)  # {"file", "title"}; files under DIR/stats/
    note: str = ""


def dataset_stats(store: OutputStore, dest: Path, compute: bool = True) -> RunStats:
    """The statistics for the page, their plots copied (or drawn) into ``dest/stats``: from ``OUT/_stats`` when
    present, else computed when the stats module is installed and ``compute`` is true."""
    has_module = importlib.util.find_spec("grand_engine.quality.stats") is not None
    how = f"grand-engine stats {store.uri}"
    try:
        stats = json.loads(store.read_text(STATS_JSON))
        plots = {p["file"]: store.read_bytes(f"_stats/{p['file']}") for p in stats.get("plots", [])}
        source = f"from {store.uri}/{STATS_JSON} ({stats.get('generated_at', 'time unknown')})"
    except FileNotFoundError:
        if not has_module:
            return RunStats(note="Dataset statistics come from `grand-engine stats`, which this installation lacks.")
        if not compute:
            return RunStats(note=f"No statistics yet: run `{how}`, then build this site again.")
        try:
            stats, plots = _compute(store)
        except Exception as exc:  # noqa: BLE001 - the site must not fail for its statistics
            return RunStats(
                note=f"The statistics could not be computed here ({type(exc).__name__}: {exc}); try `{how}`."
            )
        source = f"computed while building this site; `{how}` saves them with the output"
    folder = dest / "stats"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in plots.items():
        (folder / Path(name).name).write_bytes(data)
    listed = [{"file": f"stats/{Path(p['file']).name}", "title": p.get("title", p["file"])} for p in stats["plots"]]
    return RunStats(report=_report(stats), plots=listed, note=source)


def _compute(store: OutputStore) -> tuple[dict[str, Any], dict[str, bytes]]:
    # the stats module loads DuckDB and matplotlib: imported only when a site computes its statistics
    from grand_engine.quality.stats import compute_stats
    from grand_engine.quality.stats_report import render_plots

    stats = compute_stats(store)
    plots = render_plots(stats, stats.pop("_label_counts", None))
    return stats, plots


def _report(stats: dict[str, Any]) -> str:
    """The text report of the stats command; the figures as indented JSON when its module is missing or does not
    read this ``stats.json`` (written by another version)."""
    try:
        from grand_engine.quality.stats_report import format_report  # deferred: numpy and the stats module

        return format_report(stats)
    except Exception:  # noqa: BLE001 - any stats.json is shown, in its raw form at worst
        return json.dumps({k: v for k, v in stats.items() if k != "plots"}, indent=1, ensure_ascii=False)


@dataclass
class ErrorRows:
    rows: list[dict[str, Any]]
    total: int
    types: Counter


def error_rows(store: OutputStore, stages: list[str], limit: int = MAX_ERROR_ROWS) -> ErrorRows:
    """The error rows of ``stages``' done units (the files their records name), the first ``limit`` of them."""
    rows: list[dict[str, Any]] = []
    types: Counter = Counter()
    total = 0
    for stage in stages:
        for record in done_records(store, stage).values():
            if not record.errors_output:
                continue
            table = store.read_table(record.errors_output)
            types.update(table.column("error_type").to_pylist())
            total += table.num_rows
            if len(rows) < limit:
                rows += table.slice(0, limit - len(rows)).to_pylist()
    return ErrorRows(rows, total, types)


def stage_table(out: str) -> str:
    """What each stage did, from the records (an empty string when the output has no ``run.json``)."""
    from grand_engine.config import ConfigError
    from grand_engine.runtime.run import status  # deferred: the driver module imports the runtime

    try:
        run_info, stages = status(out)
    except ConfigError:
        return ""
    units = run_info.get("units", 0)
    head = (
        "<tr><th>stage</th><th>units done</th><th>images</th><th>rows</th><th>error rows</th><th>error types</th></tr>"
    )
    body = "".join(
        f"<tr><td>{escape(s.stage)}</td><td>{s.done}/{units}</td><td>{s.images}</td><td>{s.rows}</td><td>{s.errors}</td>"
        f"<td>{escape(', '.join(f'{k} {v}' for k, v in sorted(s.error_types.items())))}</td></tr>"
        for s in stages
    )
    return f'<table class="summary" id="stage-table">{head}{body}</table>'


def _stats_section(stats: RunStats) -> str:
    if not stats.report:
        return f'<p class="muted" id="stats-note">{escape(stats.note)}</p>'
    figures = "".join(
        f'<figure><img src="{escape(p["file"])}" alt="{escape(p["title"])}"><figcaption>{escape(p["title"])}</figcaption></figure>'
        for p in stats.plots
    )
    return (
        f'<p class="muted" id="stats-note">{escape(stats.note)}</p>'
        f'<pre class="report" id="stats-report">{escape(stats.report)}</pre><div class="plots">{figures}</div>'
    )


def _search_items(entries: list[SearchEntry]) -> str:
    items = []
    for e in entries:
        labels = "\n".join(e.labels).lower()
        text = "\n".join(e.captions).lower()
        caption = e.captions[0] if e.captions else ""
        items.append(
            f'<li class="hit" data-image-id="{escape(e.image_id)}" data-labels="{escape(labels)}" data-text="{escape(text)}">'
            f'<a href="{escape(e.href)}"><img src="{escape(e.thumb)}" alt="{escape(e.image_id)}"></a>'
            f'<div><a href="{escape(e.href)}">{escape(e.image_id)}</a> <span class="muted">{escape(", ".join(e.labels))}</span>'
            f'<div class="caption">{escape(caption[:200] + ("…" if len(caption) > 200 else ""))}</div></div></li>'
        )
    return "\n".join(items)


def _error_section(errors: ErrorRows, pages: dict[str, str]) -> tuple[str, str]:
    """The error type options and the table rows (an image shown by the site links to its page)."""
    options = "".join(
        f'<option value="{escape(t)}">{escape(t)} ({n})</option>'
        for t, n in sorted(errors.types.items(), key=lambda x: -x[1])
    )
    rows = []
    for r in errors.rows:
        image = escape(r["image_id"])
        if r["image_id"] in pages:
            image = f'<a href="{escape(pages[r["image_id"]])}">{image}</a>'
        rows.append(
            f'<tr class="error-row" data-type="{escape(r["error_type"])}"><td>{escape(r["stage"])}</td><td>{escape(r["unit_id"])}'
            f"</td><td>{image}</td><td>{escape(r['error_type'])}</td><td>{escape(r.get('severity'))}</td>"
            f"<td>{escape(r['message'])}</td></tr>"
        )
    return options, "\n".join(rows)


def write_dataset_page(
    dest: Path,
    store: OutputStore,
    stage: str,
    entries: list[SearchEntry],
    total_images: int,
    page: string.Template,
    body: string.Template,
    stats: RunStats,
) -> Path:
    """Write ``dest/dataset.html`` (and its script) for the images ``entries`` the site shows."""
    try:
        stages = list(json.loads(store.read_text("run.json")).get("stages", {}))
    except FileNotFoundError:
        stages = []
    errors = error_rows(store, stages)
    options, rows = _error_section(errors, {e.image_id: e.href for e in entries})
    listed = f"{len(errors.rows)} of {errors.total}" if errors.total > len(errors.rows) else f"{errors.total}"
    shutil.copyfile(Path(__file__).resolve().parent / "templates" / "dataset.js", dest / "assets" / "dataset.js")
    content = body.substitute(
        output=escape(store.uri),
        stage=escape(stage),
        shown=len(entries),
        total=total_images,
        stage_table=stage_table(store.uri) or '<p class="muted">no run.json: not a run output</p>',
        stats=_stats_section(stats),
        items=_search_items(entries),
        error_options=options,
        error_rows=rows,
        errors_listed=listed,
    )
    target = dest / "dataset.html"
    target.write_text(
        page.substitute(
            title="dataset — grand-engine explorer",
            root="",
            heading="dataset",
            subtitle=escape(store.uri),
            nav='<a href="index.html">images</a>',
            body=content,
        ),
        encoding="utf-8",
    )
    return target
