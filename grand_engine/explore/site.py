"""``grand-engine show``: a static HTML explorer of a run's annotations, and single PNG overlays.

The site (``DIR/index.html``, ``DIR/images/<id>.html``, ``DIR/assets``, ``DIR/media``, ``DIR/thumbs``) needs no
server: pages embed their data as JSON and draw masks and boxes on a canvas with ``assets/explorer.js``, so it
works from ``file://``. The index lists the images with thumbnails (masks drawn in), object and mask counts and
the dense caption's verification status. An image page shows the picture with toggleable mask and box overlays
coloured per object, the objects table, the captions with grounded phrases highlighted and linked to their masks,
the scene graph by depth layer (``scene_graph`` side table), and the extra context (level 4), landmark,
affordances and relationships. Images are read one unit at a time.
"""

from __future__ import annotations

import colorsys
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from grand_engine.explore.dataset import SearchEntry, dataset_stats, search_entry, write_dataset_page
from grand_engine.explore.markup import TEMPLATES, escape, save_jpeg, template
from grand_engine.grandf.reader import MissingStageError, done_records, done_units, image_info, iter_rows, read_unit
from grand_engine.io import rle
from grand_engine.io.store import OutputStore
from grand_engine.progress import Progress

DEFAULT_IMAGES = 50
"""Images the site shows when no number is given."""
LEVEL_STAGES = ("level4", "level3", "level2", "level1")

THUMB_SIDE = 320
GOLDEN_ANGLE = 137.50776405


def object_color(oid: int) -> tuple[int, int, int]:
    """A distinct, stable colour per object id (golden-angle hues)."""
    hue = (int(oid) * GOLDEN_ANGLE) % 360 / 360
    r, g, b = colorsys.hls_to_rgb(hue, 0.55, 0.8)
    return int(r * 255), int(g * 255), int(b * 255)


def hex_color(oid: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*object_color(oid))


def _slug(image_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", image_id) or "_"


# -- reading ------------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """Everything shown about one image."""

    unit_id: str
    row: dict[str, Any]
    image: dict[str, Any]
    scene_graph: dict[str, Any] | None = None
    grandf: dict[str, Any] | None = None

    @property
    def image_id(self) -> str:
        return self.row["image_id"]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        h = self.row.get("height") if self.row.get("height") is not None else self.image.get("height")
        w = self.row.get("width") if self.row.get("width") is not None else self.image.get("width")
        return int(h or 1), int(w or 1)

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """``(kind, object)`` for every object then every floating object."""
        return [("object", o) for o in self.row.get("objects") or []] + [
            ("floating", o) for o in self.row.get("floating_objects") or []
        ]

    def mask_of(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        seg = obj.get("segmentation")
        if seg is None or seg.get("counts") is None or list(seg.get("size") or []) != list(self.size):
            return None
        return seg


def pick_stage(store: OutputStore, level: int | None) -> str:
    """``level<N>``, or the highest level with a completed unit when ``level`` is None."""
    candidates = (f"level{level}",) if level else LEVEL_STAGES
    for stage in candidates:
        if done_units(store, stage):
            return stage
    raise MissingStageError(f"{store.uri} has no completed unit of {' / '.join(candidates)}; run the pipeline first")


def select_images(store: OutputStore, stage: str, limit: int | None, image_id: str | None) -> list[tuple[str, str]]:
    """``(unit_id, image_id)`` of the images to show, in unit order (reads only the ``image_id`` column)."""
    out: list[tuple[str, str]] = []
    for unit_id in done_units(store, stage):
        ids = read_unit(store, stage, unit_id, columns=["image_id"]).column("image_id").to_pylist()
        for i in ids:
            if image_id is not None and i != image_id:
                continue
            out.append((unit_id, i))
            if limit is not None and len(out) >= limit:
                return out
        if image_id is not None and out:
            return out
    if image_id is not None and not out:
        raise MissingStageError(f"image {image_id!r} is not in the {stage} table of {store.uri}")
    return out


def iter_images(store: OutputStore, stage: str, selected: list[tuple[str, str]]) -> Iterator[ImageData]:
    """The selected images with their side tables, one unit read at a time."""
    by_unit: dict[str, list[str]] = {}
    for unit_id, image_id in selected:
        by_unit.setdefault(unit_id, []).append(image_id)
    for unit_id, ids in by_unit.items():
        wanted = set(ids)
        images = image_info(store, unit_id)
        side: dict[str, dict[str, dict[str, Any]]] = {}
        for name in ("scene_graph", "grandf"):
            try:
                side[name] = {r["image_id"]: r for r in iter_rows(read_unit(store, name, unit_id))}
            except FileNotFoundError:
                side[name] = {}
        for row in iter_rows(read_unit(store, stage, unit_id)):
            if row["image_id"] in wanted:
                yield ImageData(
                    unit_id,
                    row,
                    images.get(row["image_id"]) or {},
                    side["scene_graph"].get(row["image_id"]),
                    side["grandf"].get(row["image_id"]),
                )


def load_pixels(image: dict[str, Any]) -> np.ndarray | None:
    """The picture of an ``images`` row, or None when its shard cannot be read any more."""
    from grand_engine.runtime.executor import load_pixels as _load  # deferred: imports the whole runtime (~0.5 s)

    if not image.get("source"):
        return None
    try:
        return _load(image)
    except Exception:  # noqa: BLE001 - a moved or damaged shard must not stop the site
        return None


# -- PNG overlays -------------------------------------------------------------------------------------


def render_overlay(
    data: ImageData,
    pixels: np.ndarray | None,
    *,
    masks: bool = True,
    boxes: bool = True,
    labels: bool = True,
    floating: bool = True,
    alpha: float = 0.45,
) -> np.ndarray:
    """The picture (grey when missing) with every mask blended in and boxes drawn, ``H×W×3`` uint8."""
    h, w = data.size
    base = np.full((h, w, 3), 96, dtype=np.uint8) if pixels is None or pixels.shape[:2] != (h, w) else pixels
    out = base.astype(np.float32)
    entries = [(k, o) for k, o in data.entries() if floating or k == "object"]
    if masks:
        _blend_masks(out, data, [o for _, o in entries], alpha)
    im = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    if boxes:
        _draw_boxes(im, entries, labels)
    return np.asarray(im)


def _blend_masks(out: np.ndarray, data: ImageData, objects: list[dict[str, Any]], alpha: float) -> None:
    """Blend each object's mask colour into ``out`` (float ``H×W×3``), largest mask first."""
    with_masks = [(o, data.mask_of(o)) for o in objects]
    decoded = [(o, rle.decode(m)) for o, m in with_masks if m is not None]
    for obj, mask in sorted(decoded, key=lambda t: -int(t[1].sum())):
        color = np.array(object_color(obj["id"]), dtype=np.float32)
        out[mask] = out[mask] * (1 - alpha) + color * alpha


def _draw_boxes(im: Image.Image, entries: list[tuple[str, dict[str, Any]]], labels: bool) -> None:
    """Draw each entry's box (thinner for floating objects) and, with ``labels``, its id and label."""
    draw = ImageDraw.Draw(im)
    side = max(im.size)
    width = max(2, round(side / 320))
    try:
        font = ImageFont.load_default(size=max(11, round(side / 55)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for kind, obj in entries:
        box = obj.get("bbox")
        if box is None:
            continue
        color = object_color(obj["id"])
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width if kind == "object" else max(1, width // 2))
        if labels:
            text = f"{obj['id']} {_label(obj)}"
            tx, ty = x1, max(0.0, y1 - font.size - 4 if hasattr(font, "size") else y1 - 14)
            left, top, right, bottom = draw.textbbox((tx + 3, ty + 2), text, font=font)
            draw.rectangle([tx, ty, right + 3, bottom + 2], fill=color)
            draw.text((tx + 3, ty + 2), text, fill=(0, 0, 0), font=font)


def write_png(path: str | Path, array: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


# -- HTML fragments -----------------------------------------------------------------------------------


def _label(obj: dict[str, Any]) -> str:
    labels = [x for x in obj.get("labels") or [] if x]
    return obj.get("label") or (labels[0] if labels else "?")


def _score(value: Any) -> str:
    return "" if value is None or not np.isfinite(value) else f"{float(value):.2f}"


def _chip(oid: int, text: str) -> str:
    return f'<span class="chip" style="--c:{hex_color(oid)}" data-ids="{int(oid)}">{escape(text)}</span>'


def _ids_attr(ids: list[int]) -> str:
    return " ".join(str(int(i)) for i in ids)


def highlight(caption: str, details: list[dict[str, Any]], masked: set[int]) -> tuple[str, list[dict[str, Any]]]:
    """``caption`` as HTML with each grounded span in a ``<mark>`` linked to its ids; also the details that
    could not be shown inline (no span, or nested in a span already shown)."""
    spans = []
    rest = []
    for det in details or []:
        span = det.get("tokens_positive")
        ids = [int(i) for i in det.get("ids") or [] if i is not None]
        if span is None or not (0 <= span[0] < span[1] <= len(caption)):
            rest.append(det)
            continue
        spans.append((int(span[0]), int(span[1]), ids, det))
    spans.sort(key=lambda s: (s[0], -s[1]))
    parts: list[str] = []
    pos = 0
    for start, end, ids, det in spans:
        if start < pos:
            rest.append(det)
            continue
        parts.append(escape(caption[pos:start]))
        color = hex_color(ids[0]) if ids else "#999999"
        cls = "phrase" if any(i in masked for i in ids) else "phrase nomask"
        title = f"ids {', '.join(map(str, ids))}" + ("" if "nomask" not in cls else " (no mask)")
        parts.append(
            f'<mark class="{cls}" style="--c:{color}" data-ids="{_ids_attr(ids)}" title="{escape(title)}">'
            f"{escape(caption[start:end])}</mark>"
        )
        pos = end
    parts.append(escape(caption[pos:]))
    return "".join(parts), rest


def _other_details(rest: list[dict[str, Any]]) -> str:
    if not rest:
        return ""
    items = ", ".join(
        f'<span class="chip" style="--c:#999" data-ids="{_ids_attr([int(i) for i in d.get("ids") or []])}">'
        f"{escape(d.get('phrase'))}</span>"
        for d in rest
    )
    return f'<div class="dropped">also grounded (nested or without span): {items}</div>'


def captions_panel(data: ImageData, masked: set[int]) -> str:
    """The dense caption (with its verification checklist), the GranD-f record's note and the short captions."""
    out = ['<section class="panel" id="captions"><h2>Captions</h2>']
    out += _dense_caption(data.row.get("dense_caption"), masked)
    if data.grandf is not None:
        out.append(_grandf_note(data.grandf))
    out += _short_captions(data.row, masked)
    out.append("</section>")
    return "\n".join(out)


def _dense_caption(dense: dict[str, Any] | None, masked: set[int]) -> list[str]:
    if not dense or not dense.get("caption"):
        return ['<p class="muted">no dense caption</p>']
    ver = dense.get("verification") or {}
    status = ver.get("status") or "none"
    text, rest = highlight(dense["caption"], dense.get("details") or [], masked)
    out = [
        f'<h3>Dense caption <span class="badge {escape(status)}">{escape(status)}</span></h3>',
        f'<p class="caption-text" id="dense-caption">{text}</p>{_other_details(rest)}',
    ]
    checklist = ver.get("checklist") or []
    if checklist:
        rows = "".join(
            f"<tr><td>{escape(c.get('item'))}</td><td>{escape(c.get('verdict'))}</td><td>{escape(c.get('evidence'))}</td>"
            f"<td>{_score(c.get('score'))}</td></tr>"
            for c in checklist
        )
        out.append(
            f"<details><summary>verification: {escape(ver.get('items_confirmed'))}/{escape(ver.get('items_checked'))} "
            f"items confirmed, {escape(ver.get('rounds'))} regeneration(s)</summary>"
            f'<table class="objects"><tr><th>item</th><th>verdict</th><th>evidence</th><th>score</th></tr>'
            f"{rows}</table></details>"
        )
    return out


def _grandf_note(gf: dict[str, Any]) -> str:
    """Whether the image's GranD-f record is exported, its phrase count and the phrases it dropped."""
    dropped = ", ".join(f"{escape(d['phrase'])} ({escape(d['reason'])})" for d in gf.get("dropped_phrases") or [])
    state = "exported" if gf.get("skip_reason") is None else f"not exported: {escape(gf['skip_reason'])}"
    return (
        f'<div class="dropped">GranD-f record: {len(gf.get("groundings") or [])} phrases with masks, {state}'
        + (f"; dropped: {dropped}" if dropped else "")
        + "</div>"
    )


def _short_captions(row: dict[str, Any], masked: set[int]) -> list[str]:
    """The short captions with their grounded phrases, else the plain level-1 captions, else nothing."""
    shorts = row.get("short_captions") or []
    if shorts:
        items = []
        for s in shorts:
            if s.get("caption") is not None:
                text, rest = highlight(s["caption"], s.get("details") or [], masked)
                items.append(f'<li class="caption-text short-caption">{text}{_other_details(rest)}</li>')
    elif row.get("captions"):
        items = [f"<li>{escape(c)}</li>" for c in row["captions"] if c]
    else:
        return []
    return ['<h3>Short captions</h3><ul class="plain">', *items, "</ul>"]


def objects_panel(data: ImageData) -> str:
    out = ['<section class="panel" id="objects"><h2>Objects</h2>']
    for kind, title in (("object", "Objects"), ("floating", "Floating objects")):
        group = [o for k, o in data.entries() if k == kind]
        if not group:
            continue
        out.append(f"<h3>{title} ({len(group)})</h3>")
        out.append(
            '<table class="objects"><tr><th></th><th>id</th><th>label</th><th>score</th><th>depth</th>'
            "<th>mask</th><th>attributes</th></tr>"
        )
        for obj in group:
            oid = int(obj["id"])
            has_mask = data.mask_of(obj) is not None
            attrs = [a for a in obj.get("attributes") or [] if a]
            score, depth = _score(obj.get("score")), _score(obj.get("depth"))
            labels = ", ".join(obj.get("labels") or [])
            out.append(
                f'<tr class="object {kind}" data-ids="{oid}" data-mask="{int(has_mask)}">'
                f'<td><input type="checkbox" class="object-toggle" data-id="{oid}" checked '
                f'title="show object {oid}"></td>'
                f'<td><span class="swatch" style="--c:{hex_color(oid)}"></span> {oid}</td>'
                f'<td title="{escape(labels)}">{escape(_label(obj))}</td><td>{score}</td><td>{depth}</td>'
                f"<td>{escape(obj.get('segmentation_source') or '') if has_mask else '—'}</td>"
                f"<td>{'; '.join(escape(a) for a in attrs[:2])}{' …' if len(attrs) > 2 else ''}</td></tr>"
            )
        out.append("</table>")
    fa = data.row.get("floating_attributes") or []
    if fa:
        out.append(f'<h3>Floating attributes ({len(fa)})</h3><ul class="plain">')
        for f in fa:
            box = ", ".join(f"{float(v):.0f}" for v in f.get("bbox") or [])
            out.append(
                f'<li>{"; ".join(escape(a) for a in f.get("attributes") or [])} <span class="muted">[{box}]</span></li>'
            )
        out.append("</ul>")
    if not data.entries():
        out.append('<p class="muted">no objects</p>')
    out.append("</section>")
    return "\n".join(out)


def scene_graph_panel(data: ImageData) -> str:
    labels = {int(o["id"]): _label(o) for _, o in data.entries()}
    sg = data.scene_graph
    out = ['<section class="panel" id="scene-graph"><h2>Scene graph</h2>']
    if sg is None:
        out.append('<p class="muted">no scene_graph table for this image</p></section>')
        return "\n".join(out)
    group_ids: dict[int, list[int]] = {}
    for layer in sg.get("layers") or []:
        out.append(f'<h3 class="layer">{escape(layer.get("name"))}</h3><ul class="plain">')
        for group in layer.get("groups") or []:
            ids = [int(i) for i in group.get("object_ids") or []]
            group_ids[int(group["group_id"])] = ids
            chips = " ".join(_chip(i, f"{i} {labels.get(i, '?')}") for i in ids)
            out.append(
                f'<li><span class="chip" style="--c:#888" data-ids="{_ids_attr(ids)}">Group {int(group["group_id"])}'
                f"</span> {chips}</li>"
            )
        out.append("</ul>")
    rels = sg.get("relationships") or []
    if rels:
        out.append('<h3>Relationships</h3><ul class="plain">')
        for rel in rels:
            gids = [int(g) for g in rel.get("group_ids") or []]
            ids = sorted({i for g in gids for i in group_ids.get(g, [])})
            out.append(
                f'<li><span class="chip" style="--c:#888" data-ids="{_ids_attr(ids)}">{escape(rel.get("phrase"))}</span>'
                f' <span class="muted">groups {", ".join(map(str, gids))}</span></li>'
            )
        out.append("</ul>")
    if sg.get("text"):
        out.append(f'<details><summary>rendered text</summary><pre class="sg">{escape(sg["text"])}</pre></details>')
    out.append("</section>")
    return "\n".join(out)


def context_panel(data: ImageData) -> str:
    row = data.row
    labels = {int(o["id"]): _label(o) for _, o in data.entries()}
    out = ['<section class="panel" id="context"><h2>Context</h2>']
    landmark = row.get("landmark") or {}
    if landmark.get("category") or landmark.get("fine_category"):
        out.append(
            f"<p><b>Landmark:</b> {escape(landmark.get('category'))}"
            f"{' / ' + escape(landmark.get('fine_category')) if landmark.get('fine_category') else ''}</p>"
        )
    if row.get("additional_context"):
        out.append(f'<h3>Extra context</h3><p id="additional-context">{escape(row["additional_context"])}</p>')
    affordances = row.get("affordances") or []
    if affordances:
        out.append('<h3>Affordances</h3><ul class="plain">')
        for a in affordances:
            chips = " ".join(_chip(int(i), f"{int(i)} {labels.get(int(i), '?')}") for i in a.get("object_ids") or [])
            out.append(f"<li><b>{escape(a.get('category'))}</b>: {escape(a.get('description'))} {chips}</li>")
        out.append("</ul>")
    rels = row.get("relationships") or []
    if rels:
        out.append('<h3>Grounded phrases</h3><ul class="plain">')
        for rel in rels:
            ids = [int(i) for i in rel.get("object_ids") or []]
            color = hex_color(ids[0]) if ids else "#999999"
            out.append(
                f'<li><span class="chip" style="--c:{color}" data-ids="{_ids_attr(ids)}">'
                f"{escape(rel.get('phrase'))}</span></li>"
            )
        out.append("</ul>")
    out.append("</section>")
    return "\n".join(out)


def page_data(data: ImageData) -> dict[str, Any]:
    """The JSON the image page embeds for ``explorer.js``."""
    h, w = data.size
    objects = []
    for kind, obj in data.entries():
        mask = data.mask_of(obj)
        box = obj.get("bbox")
        objects.append(
            {
                "id": int(obj["id"]),
                "kind": kind,
                "label": _label(obj),
                "color": hex_color(obj["id"]),
                "bbox": None if box is None else [round(float(v), 2) for v in box],
                "rle": None if mask is None else mask["counts"],
            }
        )
    return {"image_id": data.image_id, "width": w, "height": h, "objects": objects}


def _script_json(obj: Any) -> str:
    """JSON safe inside ``<script>``: no ``<`` (so no ``</script>``), no raw U+2028/2029."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _status(row: dict[str, Any]) -> str:
    dense = row.get("dense_caption")
    if not dense or not dense.get("caption"):
        return "none"
    return (dense.get("verification") or {}).get("status") or "none"


# -- the site -----------------------------------------------------------------------------------------


@dataclass
class SiteReport:
    dest: str
    stage: str
    pages: int = 0
    total_images: int = 0
    without_pixels: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return Path(self.dest) / "index.html"

    @property
    def dataset(self) -> Path:
        return Path(self.dest) / "dataset.html"

    def summary(self) -> str:
        note = f"; {len(self.without_pixels)} without readable pixels" if self.without_pixels else ""
        return (
            f"{self.pages} image pages from {self.stage} ({self.seconds:.1f} s){note}\nopen {self.index.as_uri()}"
            f"\ndataset page (statistics, search, error rows): {self.dataset.as_uri()}"
        )


def build_site(
    out: str | OutputStore,
    dest: str | Path,
    *,
    images: int | None = DEFAULT_IMAGES,
    image_id: str | None = None,
    level: int | None = None,
    progress: bool = False,
    stats: bool = True,
) -> SiteReport:
    """Write the explorer for ``images`` images (or the one ``image_id``) of output ``out`` into ``dest``.

    The dataset page shows the statistics of ``grand-engine stats`` from ``OUT/_stats``; without them, ``stats``
    computes them for the page when the stats module is installed."""
    start = time.perf_counter()
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    stage = pick_stage(store, level)
    selected = select_images(store, stage, None if image_id else images, image_id)
    site = _Site(Path(dest), stage, [iid for _, iid in selected])
    site.prepare()
    with Progress(len(selected), "explorer", "image", enabled=progress) as bar:
        for data in iter_images(store, stage, selected):
            site.add_image(data)
            bar.update(1)
    total = sum(r.rows for r in done_records(store, stage).values())
    site.write_index(store.uri, total)
    run_stats = dataset_stats(store, Path(dest), compute=stats)
    write_dataset_page(
        Path(dest), store, stage, site.search, total, site.page, template("dataset_body.html"), run_stats
    )
    site.report.seconds = time.perf_counter() - start
    return site.report


def unique_slugs(image_ids: list[str]) -> dict[str, str]:
    """A file-name-safe stem per image id, distinct even when two ids differ only in unsafe characters."""
    slugs: dict[str, str] = {}
    taken: set[str] = set()
    for iid in image_ids:
        slug = _slug(iid)
        while slug in taken:
            slug += "_"
        slugs[iid] = slug
        taken.add(slug)
    return slugs


class _Site:
    """The explorer being written into ``dest``: one page per image as it is read, then the index."""

    def __init__(self, dest: Path, stage: str, order: list[str]) -> None:
        self.dest = dest
        self.stage = stage
        self.order = order  # image ids in page order (prev / next links)
        self.slugs = unique_slugs(order)
        self.report = SiteReport(dest=str(dest), stage=stage)
        self.cards: list[str] = []
        self.search: list[SearchEntry] = []
        self.statuses: dict[str, int] = {}
        self.page, self.body, self.card = template("page.html"), template("image_body.html"), template("card.html")

    def prepare(self) -> None:
        """Create the folders and copy the script and the stylesheet."""
        for sub in ("assets", "images", "media", "thumbs"):
            (self.dest / sub).mkdir(parents=True, exist_ok=True)
        for name in ("explorer.js", "explorer.css"):
            shutil.copyfile(TEMPLATES / name, self.dest / "assets" / name)

    def add_image(self, data: ImageData) -> None:
        """Write the page, picture and thumbnail of one image and keep its index card."""
        slug = self.slugs[data.image_id]
        masked = {int(o["id"]) for _, o in data.entries() if data.mask_of(o) is not None}
        status = _status(data.row)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        picture = self._picture(data, slug)
        (self.dest / "images" / f"{slug}.html").write_text(
            self._image_page(data, picture, masked, status), encoding="utf-8"
        )
        self.cards.append(self._card(data, slug, status, masked))
        self.search.append(search_entry(data.row, f"images/{slug}.html", f"thumbs/{slug}.jpg"))
        self.report.pages += 1

    def _picture(self, data: ImageData, slug: str) -> str:
        """Save the picture and the overlay thumbnail; return the page's ``<img>`` (or a note without pixels)."""
        pixels = load_pixels(data.image)
        h, w = data.size
        save_jpeg(self.dest / "thumbs" / f"{slug}.jpg", render_overlay(data, pixels, labels=False), THUMB_SIDE)
        if pixels is None:
            self.report.without_pixels.append(data.image_id)
            return (
                f'<div class="nopixels" style="aspect-ratio:{w}/{h}">picture not readable from '
                f"{escape(data.image.get('source') or 'the images table')}</div>"
            )
        save_jpeg(self.dest / "media" / f"{slug}.jpg", pixels)
        return f'<img src="../media/{slug}.jpg" alt="{escape(data.image_id)}" width="{w}" height="{h}">'

    def _nav(self, image_id: str) -> str:
        """Links to the previous image, the index and the next image."""
        i = self.order.index(image_id)
        nav = ['<a href="../index.html">index</a>']
        if i > 0:
            prev = self.order[i - 1]
            nav.insert(0, f'<a href="{self.slugs[prev]}.html" rel="prev">← {escape(prev)}</a>')
        if i + 1 < len(self.order):
            nxt = self.order[i + 1]
            nav.append(f'<a href="{self.slugs[nxt]}.html" rel="next">{escape(nxt)} →</a>')
        return " ".join(nav)

    def _image_page(self, data: ImageData, picture: str, masked: set[int], status: str) -> str:
        h, w = data.size
        content = self.body.substitute(
            picture=picture,
            width=w,
            height=h,
            captions=captions_panel(data, masked),
            objects=objects_panel(data),
            scene_graph=scene_graph_panel(data),
            context=context_panel(data),
            data=_script_json(page_data(data)),
        )
        return self.page.substitute(
            title=escape(f"{data.image_id} — grand-engine explorer"),
            root="../",
            heading=escape(data.image_id),
            subtitle=escape(f"{data.image.get('file_name') or ''} · {w}×{h} · {self.stage} · unit {data.unit_id}")
            + f' · <span class="badge {escape(status)}">{escape(status)}</span>',
            nav=self._nav(data.image_id),
            body=content,
        )

    def _card(self, data: ImageData, slug: str, status: str, masked: set[int]) -> str:
        """The index card of one image: thumbnail, counts, landmark and the start of its caption."""
        row = data.row
        dense = row.get("dense_caption") or {}
        caption = dense.get("caption") or next(iter(row.get("captions") or []), "") or ""
        landmark = row.get("landmark") or {}
        return self.card.substitute(
            image_id=escape(data.image_id),
            href=f"images/{slug}.html",
            thumb=f"thumbs/{slug}.jpg",
            badge=f'<span class="badge {escape(status)}">{escape(status)}</span>',
            objects=len(row.get("objects") or []),
            floating=len(row.get("floating_objects") or []),
            masks=len(masked),
            phrases=len(dense.get("details") or []),
            landmark=escape(" / ".join(x for x in (landmark.get("category"), landmark.get("fine_category")) if x)),
            caption=escape(caption[:240] + ("…" if len(caption) > 240 else "")),
        )

    def write_index(self, output_uri: str, total_images: int) -> None:
        """Write ``index.html``: the summary table and the cards of the pages written."""
        self.report.total_images = total_images
        index_body = template("index_body.html").substitute(
            output=escape(output_uri),
            stage=escape(self.stage),
            shown=self.report.pages,
            total=total_images,
            verification=escape(", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())) or "—"),
            cards="\n".join(self.cards),
        )
        page = self.page.substitute(
            title="grand-engine explorer",
            root="",
            heading="grand-engine explorer",
            subtitle=escape(output_uri),
            nav='<a href="dataset.html" id="dataset-link">dataset: statistics, search, error rows</a>',
            body=index_body,
        )
        (self.dest / "index.html").write_text(page, encoding="utf-8")


def write_overlay_png(
    out: str | OutputStore, path: str | Path, image_id: str | None = None, level: int | None = None
) -> str:
    """Write the overlay of ``image_id`` (default: the first image) as a PNG; return the image id."""
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    stage = pick_stage(store, level)
    selected = select_images(store, stage, 1, image_id)
    if not selected:
        raise MissingStageError(f"the {stage} table of {store.uri} has no rows")
    data = next(iter_images(store, stage, selected))
    write_png(path, render_overlay(data, load_pixels(data.image)))
    return data.image_id
