"""A static HTML explorer of a video run: per video, key frames with the masklets drawn in and, per object, its
three descriptions, its referring expression and the expression's check.

``build_video_site(OUT, DIR)`` writes ``DIR/index.html`` (one card per video: a frame with every masklet, the object
count and how many expressions passed their check) and ``DIR/videos/<id>.html``: ``frames`` sampled frames spread
over the video with every object's mask blended in its colour and outlined; then one section per object with its key
frame (the object outlined alone), its name, where its masklet came from (manual, auto or created by SAM 2, and
how many masks SAM 2 filled in), the object-, scene- and video-level descriptions, the expression and the
verification status with its checklist. Pictures are JPEGs rendered here (``DIR/media``), so the site needs no
script and works from ``file://``; it reuses the image explorer's page template and stylesheet. Videos are read one
unit at a time.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grand_engine.explore.markup import TEMPLATES, escape, save_jpeg, template
from grand_engine.explore.site import hex_color, object_color, select_images, unique_slugs
from grand_engine.grandf.reader import MissingStageError, done_units, input_kind, rows_by_id
from grand_engine.io import rle
from grand_engine.io.sa1b import read_locator
from grand_engine.io.store import OutputStore
from grand_engine.io.video import VIDEO, VideoError, decode_frames, video_locator

LEVELS = (("video_object_text", "object"), ("video_scene_text", "scene"), ("video_motion_text", "video"))
MASKLET_TABLES = ("video_tracks", "video_masklets")
CSS = "video.css"


@dataclass
class VideoSiteReport:
    dest: str
    pages: int = 0
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return Path(self.dest) / "index.html"

    def summary(self) -> str:
        note = f"; {len(self.unreadable)} videos could not be decoded" if self.unreadable else ""
        return f"{self.pages} video pages ({self.seconds:.1f} s){note}\nopen {self.index.as_uri()}"


def overlay(frame: np.ndarray, masks: list[tuple[int, np.ndarray]], alpha: float = 0.45) -> np.ndarray:
    """``frame`` with each ``(object id, mask)`` blended in the object's colour and outlined in it."""
    from scipy import ndimage  # deferred: only pages need outlines

    out = frame.astype(np.float32)
    for object_id, mask in masks:
        if not mask.any():
            continue
        color = np.array(object_color(object_id), dtype=np.float32)
        out[mask] = out[mask] * (1 - alpha) + color * alpha
        edge = mask & ~ndimage.binary_erosion(mask, iterations=2, border_value=0)
        out[edge] = color
    return out.clip(0, 255).astype(np.uint8)


def spread(count: int, total: int) -> list[int]:
    """``count`` positions spread evenly over ``total`` (all of them when there are fewer)."""
    if total <= count:
        return list(range(total))
    return sorted({int(p) for p in np.round(np.linspace(0, total - 1, count)).astype(int)})


def is_video_run(out: str | OutputStore) -> bool:
    """True when the run in ``out`` read the ``video`` input kind (its ``run.json`` says so)."""
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    try:
        return input_kind(store).name == VIDEO.name
    except ValueError:  # a kind that is not installed here is not the built-in video kind
        return False


def build_video_site(
    out: str | OutputStore,
    dest: str | Path,
    *,
    videos: int | None = 50,
    video_id: str | None = None,
    frames: int = 6,
) -> VideoSiteReport:
    """Write the explorer of the first ``videos`` videos (all: ``None``), or of the one ``video_id``, of output
    ``out`` into ``dest``. Raises :class:`MissingStageError` when the run has no masklet table, or no video
    ``video_id``."""
    start = time.perf_counter()
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    masklets = next((s for s in MASKLET_TABLES if done_units(store, s)), None)
    if masklets is None:
        raise MissingStageError(f"{store.uri} has no completed unit of video_tracks or video_masklets")
    selected: dict[str, list[str]] = {}
    for unit_id, vid in select_images(store, masklets, None if video_id else videos, video_id):
        selected.setdefault(unit_id, []).append(vid)
    dest = Path(dest)
    for sub in ("assets", "videos", "media"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEMPLATES / "explorer.css", dest / "assets" / "explorer.css")
    shutil.copyfile(TEMPLATES / CSS, dest / "assets" / CSS)
    report = VideoSiteReport(dest=str(dest))
    cards: list[str] = []
    page = template("page.html")
    pages: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]] = []
    for unit_id, ids in selected.items():
        stages = ("videos", masklets, *[s for s, _ in LEVELS], "video_expression")
        tables = {name: rows_by_id(store, name, unit_id) for name in stages}
        for vid in ids:
            row = tables[masklets][vid]
            pages.append(({"video_id": vid, "masklets": row}, {k: v.get(vid) or {} for k, v in tables.items()}))
    slugs = unique_slugs([p[0]["video_id"] for p in pages])
    for meta, rows in pages:
        vid = meta["video_id"]
        body, thumb, stats = _video_page(dest, slugs[vid], rows, meta["masklets"], frames, report)
        (dest / "videos" / f"{slugs[vid]}.html").write_text(
            page.substitute(
                title=escape(vid),
                root="../",
                heading=escape(vid),
                subtitle=escape(rows["videos"].get("file_name", "")),
                nav='<a href="../index.html">index</a>',
                body=body,
            ),
            encoding="utf-8",
        )
        report.pages += 1
        cards.append(
            f'<div class="card"><a href="videos/{slugs[vid]}.html"><img src="{thumb}" alt="{escape(vid)}"></a>'
            f'<div class="body"><h2><a href="videos/{slugs[vid]}.html">{escape(vid)}</a></h2>'
            f'<div class="stats"><span>{stats["objects"]} objects</span><span>{stats["expressions"]} expressions'
            f"</span><span>{stats['verified']} verified</span></div></div></div>"
        )
    index = (
        f'<table class="summary"><tr><th>output</th><td>{escape(store.uri)}</td></tr>'
        f"<tr><th>masklets</th><td>{masklets}</td></tr><tr><th>videos shown</th><td>{len(pages)}</td></tr></table>"
        f'<div class="grid">{"".join(cards)}</div>'
    )
    (dest / "index.html").write_text(
        page.substitute(title="videos", root="", heading="Video explorer", subtitle="", nav="", body=index),
        encoding="utf-8",
    )
    report.seconds = time.perf_counter() - start
    return report


def _by_object(row: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(o["object_id"]): o for o in row.get("objects") or []}


def _video_page(
    dest: Path,
    slug: str,
    rows: dict[str, dict[str, Any]],
    masklets: dict[str, Any],
    count: int,
    report: VideoSiteReport,
) -> tuple[str, str, dict[str, int]]:
    video = rows["videos"]
    objects = masklets.get("objects") or []
    indices = [int(i) for i in video.get("frame_indices") or []]
    shown = spread(count, len(indices))
    levels = {stage: _by_object(rows.get(stage) or {}) for stage, _ in LEVELS}
    expressions = _by_object(rows.get("video_expression") or {})
    keys = {oid: (entry.get("frames") or [None])[0] for oid, entry in levels["video_object_text"].items()}
    wanted = sorted({indices[p] for p in shown} | {k for k in keys.values() if k in indices})
    pictures: dict[int, np.ndarray] = {}
    loc = video_locator(video) if video else None
    if loc is not None and wanted:
        try:
            pictures = dict(zip(wanted, decode_frames(read_locator(loc), wanted), strict=True))
        except (VideoError, OSError) as exc:
            report.unreadable.append(f"{slug}: {exc}")
    fps = float(video.get("fps") or 0) or 1.0
    figures, thumb = [], ""
    for p in shown:
        frame_no = indices[p]
        if frame_no not in pictures:
            continue
        masks = [(int(o["object_id"]), _mask(o, p)) for o in objects if _mask(o, p) is not None]
        name = f"media/{slug}_{frame_no:05d}.jpg"
        save_jpeg(dest / name, overlay(pictures[frame_no], masks), max_side=640)
        thumb = thumb or name
        figures.append(
            f'<figure><img src="../{name}" alt="frame {frame_no}"><figcaption>frame {frame_no} '
            f"({frame_no / fps:.2f} s)</figcaption></figure>"
        )
    sections = []
    verified = 0
    for obj in objects:
        oid = int(obj["object_id"])
        expression = expressions.get(oid) or {}
        status = (expression.get("verification") or {}).get("status") or "none"
        verified += status == "verified"
        key = keys.get(oid)
        key_img = ""
        if key in pictures:
            mask = _mask(obj, indices.index(key))
            if mask is not None:
                name = f"media/{slug}_obj{oid}.jpg"
                save_jpeg(dest / name, overlay(pictures[key], [(oid, mask)]), max_side=480)
                key_img = f'<img class="key" src="../{name}" alt="object {oid} at frame {key}">'
        sections.append(_object_section(obj, levels, expression, status, key_img, key))
    body = (
        f'<link rel="stylesheet" href="../assets/{CSS}">'
        f'<p class="muted">{len(indices)} sampled frames at {float(video.get("sample_fps") or 0):.1f} fps of '
        f"{int(video.get('num_frames') or 0)} ({float(video.get('duration') or 0):.1f} s, "
        f"{video.get('width')}x{video.get('height')}, {escape(video.get('codec'))})</p>"
        f'<div class="frames">{"".join(figures)}</div>{"".join(sections)}'
    )
    thumb = f"{thumb}" if thumb else ""
    stats = {
        "objects": len(objects),
        "expressions": sum(1 for e in expressions.values() if e.get("expression")),
        "verified": verified,
    }
    return body, thumb, stats


def _mask(obj: dict[str, Any], position: int) -> np.ndarray | None:
    masks = obj.get("masks") or []
    seg = masks[position] if position < len(masks) else None
    return None if seg is None else np.asarray(rle.decode(seg), dtype=bool)


def _object_section(
    obj: dict[str, Any],
    levels: dict[str, dict[int, dict[str, Any]]],
    expression: dict[str, Any],
    status: str,
    key_img: str,
    key: int | None,
) -> str:
    oid = int(obj["object_id"])
    looks = levels["video_object_text"].get(oid) or {}
    origin = obj.get("source") or "?"
    if obj.get("masklet_id") is not None:
        origin += f" masklet {obj['masklet_id']}"
    if obj.get("propagated"):
        origin += f", {obj['propagated']} masks filled by SAM 2"
    rows = []
    for stage, label in LEVELS:
        entry = levels[stage].get(oid) or {}
        text = (
            escape(entry.get("text"))
            if entry.get("text")
            else f'<span class="muted">{escape(entry.get("error") or "—")}</span>'
        )
        rows.append(f"<tr><th>{label} level</th><td>{text}</td></tr>")
    expr = (
        escape(expression.get("expression"))
        if expression.get("expression")
        else (f'<span class="muted">{escape(expression.get("error") or "—")}</span>')
    )
    checklist = (expression.get("verification") or {}).get("checklist") or []
    items = "".join(
        f'<li class="{escape(v.get("verdict"))}">{escape(v.get("item"))} <span class="muted">{escape(v.get("evidence"))}</span></li>'
        for v in checklist
    )
    named = expression.get("names_category")
    return (
        f'<section class="object" style="--c:{hex_color(oid)}"><h2><span class="chip" style="--c:{hex_color(oid)}">'
        f"object {oid}</span> {escape(looks.get('category') or '')} "
        f'<span class="badge {escape(status)}">{escape(status)}</span></h2>'
        f'<div class="object-body">{key_img}<div><p class="muted">{escape(origin)}; visible in '
        f"{float(obj.get('visible_fraction') or 0):.0%} of the frames for {float(obj.get('duration') or 0):.1f} s; key "
        f'frame {key if key is not None else "—"}</p><table class="levels">{"".join(rows)}'
        f"<tr><th>expression</th><td>{expr}</td></tr>"
        f"<tr><th>names the object</th><td>{'' if named is None else ('yes' if named else 'no')}</td></tr></table>"
        f'<ul class="checklist">{items}</ul></div></div></section>'
    )
