"""``scene_graph``: depth layers, proximity groups and the rendered scene-graph text (GranD §4.1).

1. **Pool**: ``objects``, or ``floating_objects`` when the image has no objects; objects without a finite
   ``depth`` are left out. When more than ``max_objects`` remain, the ones with attributes come first (pool
   order), then the rest, and the list is cut at ``max_objects`` — also when more than ``max_objects`` have
   attributes (the reference's negative slice let the pool overshoot, §14.37). Depth-less objects are
   dropped *before* the cap, so the cap counts objects that can be rendered.
2. **Layers** on per-image normalised inverse depth ``nd = 1 − (d − dmin)/(dmax − dmin)`` (``0.5`` when all
   depths are equal; the nearest object gets 0): ``nd < 0.1`` Immediate Foreground, ``< 0.6`` Foreground,
   ``< 0.85`` Midground, else Background.
3. **Groups** inside each layer (layers in that order, objects in pool order): the first remaining object
   seeds a group with the next id of a counter shared by all layers (from 0); every remaining object whose
   bbox centre lies at Euclidean distance ``< group_distance`` from the *seed's* centre joins it (single
   pass, not transitive); repeat.
4. **Relationships**: each ``level2`` relationship maps to the distinct group ids of its objects that are in
   the pool, in the order of its ``object_ids`` (the reference repeated a group once per object); a
   relationship none of whose objects is in the pool is left out (the reference printed it with empty
   parentheses).
5. **Text**, in the reference's layout::

       <Layer>:
       Group <gid>: <entry>, <entry>
       <blank>
       Short Captions:
       <caption>
       <blank>
       Relationships:
       <phrase>, Group Ids: (<gid>, <gid>)
       <blank>
       Landmarks:
       <category>, <fine_category>

   An entry is the object's ``label`` (``labels[0]`` when ``label`` is null), then ``/<first attribute>``
   with any text up to the first ":" removed (e.g. a leaked ``Assistant:`` prefix). Every underscore in the
   text becomes a space. Captions and attributes have their whitespace collapsed so each stays on one line;
   null or blank captions are skipped. A missing landmark (null, or both fields blank) omits the
   ``Landmarks`` block instead of failing the image; one blank field prints only the other. An image with no
   pool (no depth anywhere) still renders its captions, relationships block and landmark (the reference
   skipped such images). The ``layers`` column lists the non-empty layers only, nearest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.geometry import box_centers
from grand_engine.runtime.stage import Resources, Stage, UnitInput
from grand_engine.schema import table_schema

LAYER_NAMES = ("Immediate Foreground", "Foreground", "Midground", "Background")
"""Depth layers, nearest first (spec §4.1 step 2)."""

GROUP = pa.struct([("group_id", pa.int32()), ("object_ids", pa.list_(pa.int32()))])
LAYER = pa.struct([("name", pa.string()), ("groups", pa.list_(GROUP))])
GROUP_RELATIONSHIP = pa.struct([("phrase", pa.string()), ("group_ids", pa.list_(pa.int32()))])

SCENE_GRAPH_SCHEMA = table_schema(
    ("layers", pa.list_(LAYER)),  # non-empty layers only, nearest first
    ("relationships", pa.list_(GROUP_RELATIONSHIP)),
    ("text", pa.string()),
    ("num_objects", pa.int32()),  # objects in the pool (after the depth filter and the cap)
)
"""The ``scene_graph`` table."""


def build_scene_graph(
    row: dict[str, Any],
    *,
    layer_thresholds: tuple[float, float, float] = (0.1, 0.6, 0.85),
    group_distance: float = 200.0,
    max_objects: int = 100,
) -> dict[str, Any]:
    """Layers, groups, relationships and text of one image's level-2 row (see the module docstring).

    Returns ``{"layers", "relationships", "text", "num_objects"}``.
    """
    if len(layer_thresholds) != 3 or list(layer_thresholds) != sorted(layer_thresholds):
        raise ValueError(f"layer_thresholds must be three increasing numbers, got {layer_thresholds!r}")
    pool = select_pool(row, max_objects=max_objects)
    layers, group_of, layer_lines = _group_layers(assign_layers(pool, layer_thresholds), group_distance)
    relationships = _group_relationships(row.get("relationships") or [], group_of)
    return {
        "layers": layers,
        "relationships": relationships,
        "text": _render_text(layer_lines, row, relationships),
        "num_objects": len(pool),
    }


def _group_layers(
    layer_members: list[list[dict[str, Any]]], group_distance: float
) -> tuple[list[dict[str, Any]], dict[int, int], list[str]]:
    """Step 3: the non-empty layers with their groups (ids counted across layers), each object id's group, and
    the layers' text lines."""
    layers: list[dict[str, Any]] = []
    group_of: dict[int, int] = {}
    text_lines: list[str] = []
    next_group = 0
    for name, members in zip(LAYER_NAMES, layer_members, strict=True):
        if not members:
            continue
        groups = group_by_proximity(members, group_distance, first_group_id=next_group)
        next_group += len(groups)
        layers.append(
            {
                "name": name,
                "groups": [{"group_id": gid, "object_ids": [o["id"] for o in objs]} for gid, objs in groups],
            }
        )
        text_lines.append(f"{name}:")
        for gid, objs in groups:
            for obj in objs:
                if obj.get("id") is not None:
                    group_of[int(obj["id"])] = gid
            text_lines.append(f"Group {gid}: " + ", ".join(_entry(o) for o in objs))
    return layers, group_of, text_lines


def _group_relationships(relationships: list[dict[str, Any]], group_of: dict[int, int]) -> list[dict[str, Any]]:
    """Step 4: each relationship with the distinct groups of its pooled objects; those with none left out."""
    out: list[dict[str, Any]] = []
    for rel in relationships:
        gids: list[int] = []
        for oid in rel.get("object_ids") or []:
            gid = group_of.get(oid)
            if gid is not None and gid not in gids:
                gids.append(gid)
        if gids:
            out.append({"phrase": rel.get("phrase") or "", "group_ids": gids})
    return out


def _render_text(layer_lines: list[str], row: dict[str, Any], relationships: list[dict[str, Any]]) -> str:
    """Step 5: the layers, captions, relationships and landmark blocks, underscores turned into spaces."""
    blocks: list[list[str]] = []
    if layer_lines:
        blocks.append(layer_lines)
    blocks.append(["Short Captions:"] + [_one_line(c) for c in row.get("captions") or [] if c and c.strip()])
    blocks.append(
        ["Relationships:"]
        + [f"{r['phrase']}, Group Ids: ({', '.join(str(g) for g in r['group_ids'])})" for r in relationships]
    )
    landmark = _landmark_line(row.get("landmark"))
    if landmark:
        blocks.append(["Landmarks:", landmark])
    text = "\n".join("".join(line + "\n" for line in block) for block in blocks)
    return text.replace("_", " ")


def select_pool(row: dict[str, Any], *, max_objects: int = 100) -> list[dict[str, Any]]:
    """The objects the scene graph shows: objects (else floating objects) with a depth, capped (step 1).

    Raises ``ValueError`` naming the object when one of them has no usable box.
    """
    candidates = list(row.get("objects") or []) or list(row.get("floating_objects") or [])
    pool = [o for o in candidates if _depth(o) is not None]
    for obj in pool:
        box = obj.get("bbox")
        if box is None or len(box) != 4 or any(v is None or not math.isfinite(v) for v in box):
            raise ValueError(f"object id {obj.get('id')} has no usable bbox ({box!r})")
    if len(pool) > max_objects:
        attributed = [o for o in pool if _first_attribute(o)]
        plain = [o for o in pool if not _first_attribute(o)]
        pool = (attributed + plain)[:max_objects]
    return pool


def assign_layers(
    pool: list[dict[str, Any]], thresholds: tuple[float, float, float] = (0.1, 0.6, 0.85)
) -> list[list[dict[str, Any]]]:
    """The pool split into the four layers of :data:`LAYER_NAMES`, pool order kept inside each (step 2)."""
    out: list[list[dict[str, Any]]] = [[] for _ in LAYER_NAMES]
    if not pool:
        return out
    depths = [_depth(o) for o in pool]
    dmin, dmax = min(depths), max(depths)
    for obj, d in zip(pool, depths, strict=True):
        nd = 1.0 - (d - dmin) / (dmax - dmin) if dmax != dmin else 0.5
        layer = next((i for i, t in enumerate(thresholds) if nd < t), len(thresholds))
        out[layer].append(obj)
    return out


def group_by_proximity(
    objects: list[dict[str, Any]], distance: float = 200.0, first_group_id: int = 0
) -> list[tuple[int, list[dict[str, Any]]]]:
    """Seeded, single-pass grouping by bbox-centre distance ``< distance`` from the seed (step 3)."""
    if not objects:
        return []
    centers = box_centers([o["bbox"] for o in objects])
    remaining = list(range(len(objects)))
    groups: list[tuple[int, list[dict[str, Any]]]] = []
    gid = first_group_id
    while remaining:
        seed, rest = remaining[0], remaining[1:]
        dist = np.hypot(*(centers[rest] - centers[seed]).T) if rest else np.zeros(0)
        members = [seed] + [i for i, d in zip(rest, dist, strict=True) if d < distance]
        remaining = [i for i, d in zip(rest, dist, strict=True) if not d < distance]
        groups.append((gid, [objects[i] for i in members]))
        gid += 1
    return groups


def correct_attribute(attribute: str) -> str:
    """Drop any text up to the first ":" (e.g. an ``Assistant:`` prefix) and collapse whitespace."""
    if ":" in attribute:
        attribute = attribute.split(":", 1)[1]
    return _one_line(attribute)


# -- helpers ------------------------------------------------------------------------------------------------


def _depth(obj: dict[str, Any]) -> float | None:
    d = obj.get("depth")
    if d is None:
        return None
    d = float(d)
    return d if math.isfinite(d) else None


def _first_attribute(obj: dict[str, Any]) -> str:
    attrs = obj.get("attributes")
    if isinstance(attrs, str):
        first = attrs
    else:
        first = next((a for a in attrs or [] if a), "")
    return correct_attribute(first) if first else ""


def _entry(obj: dict[str, Any]) -> str:
    label = obj.get("label") or next((lab for lab in obj.get("labels") or [] if lab), "")
    return "/".join(part for part in (_one_line(label), _first_attribute(obj)) if part)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _landmark_line(landmark: Any) -> str:
    if not isinstance(landmark, dict):
        return ""
    parts = [_one_line(landmark.get(k) or "") for k in ("category", "fine_category")]
    return ", ".join(p for p in parts if p)


# -- the stage ----------------------------------------------------------------------------------------------


@dataclass
class SceneGraph(Stage):
    """Render the hierarchical scene graph of each image for the dense-caption LLM (spec §4.1)."""

    name: ClassVar[str] = "scene_graph"
    requires: ClassVar[tuple[str, ...]] = ("level2",)
    level: ClassVar[int | None] = 3
    schema: ClassVar[pa.Schema] = SCENE_GRAPH_SCHEMA
    default_resources: ClassVar[Resources] = Resources(cpus=1.0, batch_size=256)

    immediate_foreground: float = 0.1  # spec §4.1 step 2: nd < 0.1 -> Immediate Foreground
    foreground: float = 0.6  # spec §4.1 step 2: nd < 0.6 -> Foreground
    midground: float = 0.85  # spec §4.1 step 2: nd < 0.85 -> Midground, else Background
    group_distance: float = 200.0  # spec §4.1 step 3: centre distance < 200 px joins the seed's group
    max_objects: int = 100  # spec §4.1 step 1: at most 100 objects, attributed ones first

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any]:
        row = unit.input_row(self.requires[0], image_id)
        out = build_scene_graph(
            row,
            layer_thresholds=(self.immediate_foreground, self.foreground, self.midground),
            group_distance=self.group_distance,
            max_objects=self.max_objects,
        )
        return {"image_id": image_id, **out}
