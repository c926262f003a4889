"""A demo output for the explorer tests: the real demo shard, with level-4 annotations built by hand on it.

``images`` and ``sa1b`` run for real (inline backend, no models) on ``grand_engine.demo``'s shard; each image's
level-4 row then takes its six largest SA-1B masks as objects (ids 0–5, depth falling with size), one more mask as
a floating object (id 6) and one floating object without a mask (id 7). The ``scene_graph`` table comes from the
real ``build_scene_graph`` and the ``grandf`` table from the real ``GrandF`` stage. Expected per image: 7 mask
overlays, 8 boxes.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.grandf.level4 import detail, level4_row, level4_table, obj, verification, write_stage

VOCAB = ("person", "cat", "cup", "rocket", "motorcycle", "tree", "sky", "table", "wall", "flag")
MASKED_PER_IMAGE = 7
BOXES_PER_IMAGE = 8


def _caption_details(caption: str, phrases: list[tuple[str, list[int]]]) -> list[dict]:
    out = []
    for phrase, ids in phrases:
        start = caption.index(phrase)
        out.append(detail(phrase, [start, start + len(phrase)], ids))
    return out


def demo_level4_row(sa1b_row: dict, n: int) -> dict:
    """The hand-built level-4 row of the ``n``-th demo image (see the module docstring)."""
    width, height = sa1b_row["image_width"], sa1b_row["image_height"]
    anns = sorted(sa1b_row["annotations"], key=lambda a: -a["area"])
    labels = [VOCAB[(n + i) % len(VOCAB)] for i in range(8)]
    objects = [
        obj(i, a["bbox"], labels[i], attributes=[f"a {labels[i]} region"], mask=a["segmentation"], depth=float(10 - i))
        for i, a in enumerate(anns[:6])
    ]
    a6 = anns[6]
    floating = [
        obj(6, a6["bbox"], None, labels=[labels[6]], mask=a6["segmentation"], source="sam", depth=None),
        obj(7, [1.0, 1.0, width / 4, height / 4], None, labels=[labels[7]], mask=None, depth=None),
    ]
    dense = (
        f"In this picture a {labels[0]} stands beside a {labels[1]}; a small {labels[6]} and a "
        f"{labels[7]} <b>&amp</b> are near the {labels[2]}."
    )
    short = f"a {labels[0]} and a {labels[1]}"
    return level4_row(
        sa1b_row["image_id"],
        width,
        height,
        objects=objects,
        floating_objects=floating,
        relationships=[{"phrase": f"a {labels[0]}", "object_ids": [0]}],
        short_captions=[
            {"caption": short, "details": _caption_details(short, [(f"a {labels[0]}", [0]), (f"a {labels[1]}", [1])])}
        ],
        dense_caption={
            "caption": dense,
            "details": _caption_details(
                dense,
                [
                    (f"a {labels[0]}", [0]),
                    (f"a {labels[1]}", [1]),
                    (f"a small {labels[6]}", [6]),
                    (f"a {labels[7]}", [7]),
                    (f"the {labels[2]}", [2]),
                ],
            ),
            "verification": verification("failed" if n == 2 else "verified"),
        },
        additional_context=f"Context paragraph for image {sa1b_row['image_id']}: the {labels[0]} is in focus.",
    )


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory) -> Path:
    """The demo output folder (see the module docstring)."""
    from grand_engine.config import load_manifest
    from grand_engine.demo import build_demo_shard
    from grand_engine.io.store import OutputStore
    from grand_engine.runtime.run import run
    from grand_engine.runtime.stage import UnitInput
    from grand_engine.stages.grandf import GrandF
    from grand_engine.stages.scene_graph import SCENE_GRAPH_SCHEMA, build_scene_graph

    root = tmp_path_factory.mktemp("demo")
    build_demo_shard(root / "shards")
    manifest = load_manifest("tiny", variables={"tiny_dir": str(root / "no-models-needed")})
    out = root / "output"
    run(manifest, [str(root / "shards")], str(out), stages=["sa1b"], backend="inline", progress=False)
    store = OutputStore(out)
    for path in sorted((out / "sa1b").rglob("*.parquet")):
        unit_id = str(path.relative_to(out / "sa1b").with_suffix(""))
        rows = [demo_level4_row(r, n) for n, r in enumerate(pq.read_table(path).to_pylist())]
        level4 = level4_table(rows)
        write_stage(store, "level4", unit_id, level4)
        graphs = [{"image_id": r["image_id"], **build_scene_graph(r)} for r in rows]
        write_stage(store, "scene_graph", unit_id, pa.Table.from_pylist(graphs, schema=SCENE_GRAPH_SCHEMA))
        images = store.read_table(f"images/{unit_id}.parquet")
        keep = pc.is_in(images.column("image_id"), value_set=level4.column("image_id"))
        unit = UnitInput(unit_id, images.filter(keep), {"level4": level4})
        write_stage(store, "grandf", unit_id, GrandF.configure().process(unit).table)
    return out
