"""Small hand-built datasets in the file formats of OpenPSG, RefCOCOg and Flickr30K Entities (never real data).

Every image is a flat-colour 40×30 JPEG; every region is a rectangle, so areas and boxes are known by hand:

* OpenPSG (``write_openpsg``): image ``1`` (train) has segments 1 ``wall-other-merged`` (what the others leave:
  1200 − 200 − 200 − 160 = 640 px), 2 ``person`` ``[5, 15) × [5, 25)`` (200 px), 3 ``person`` ``[20, 30) × [5, 25)``
  (200 px) and 4 ``dining table`` ``[0, 40) × [26, 30)`` (160 px); relations ``person-1 beside person-2`` (twice),
  ``person-2 standing on dining table-1``. Image ``2`` (a test id, so split ``val``): ``cat`` ``[0, 20) × [0, 30)``
  (600 px) lying on ``blanket`` (600 px). Image ``3`` has no relation.
* RefCOCOg (``write_refcocog``): image 11 (train) with annotation 101 ``[5, 15) × [5, 25)`` (a polygon, plus a
  malformed 2-number one) and 102 ``[20, 30) × [5, 25)`` (a crowd RLE with list counts); refs "the man on the left"
  (101), a ref whose ``sent`` is empty and whose ``raw`` is "A Woman  In Red." (102), a blank sentence (101) and a
  ref to a missing annotation ("a dog"); image 12 (val) "the cup"; image 13 (test) "a test phrase".
* Flickr30K (``write_flickr30k``, 48×36 images): image 1001 (train) with two sentences — entity 1 has two boxes,
  merged into one; entity 2 is ``nobndbox``; entity 3's box passes the right border by 2 px; entity 9 is
  ``notvisual``. Image 1002
  (val) has an unclosed bracket; image 1003 has no annotation file.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

W, H = 40, 30
FW, FH = 48, 36  # the Flickr30K fixture's size: GLaMM's Flickr30K loader drops images with a side under 32


def write_jpeg(path: Path, color: tuple[int, int, int] = (120, 80, 40), size: tuple[int, int] = (W, H)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    path.write_bytes(buf.getvalue())
    return path


def write_panoptic(path: Path, boxes: list[tuple[int, tuple[int, int, int, int]]], size: tuple[int, int] = (W, H)):
    """A COCO panoptic PNG: each (segment id, (x1, y1, x2, y2)) painted in order."""
    from PIL import Image

    ids = np.zeros((size[1], size[0]), dtype=np.uint32)
    for seg, (x1, y1, x2, y2) in boxes:
        ids[y1:y2, x1:x2] = seg
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG")


THINGS = ["person", "cat", "dining table"]
STUFF = ["wall-other-merged", "blanket"]
PREDICATES = ["beside", "standing on", "lying on"]


def psg_item(stem: str, image_id: str, segments: list[tuple[int, int]], relations: list[list[int]]) -> dict:
    return {
        "file_name": f"train2017/{stem}.jpg",
        "pan_seg_file_name": f"panoptic_train2017/{stem}.png",
        "height": H,
        "width": W,
        "image_id": image_id,
        "segments_info": [{"id": s, "category_id": c, "iscrowd": 0, "isthing": int(c < 3)} for s, c in segments],
        "relations": relations,
    }


def write_openpsg(root: Path) -> dict[str, Any]:
    """The OpenPSG fixture (module docstring); returns the reader's arguments."""
    write_jpeg(root / "train2017/000000000001.jpg")
    write_panoptic(
        root / "panoptic_train2017/000000000001.png",
        [(1, (0, 0, W, H)), (2, (5, 5, 15, 25)), (3, (20, 5, 30, 25)), (4, (0, 26, W, H))],
    )
    write_jpeg(root / "train2017/000000000002.jpg")
    write_panoptic(root / "panoptic_train2017/000000000002.png", [(7, (0, 0, W, H)), (8, (0, 0, 20, H))])
    write_jpeg(root / "train2017/000000000003.jpg")
    write_panoptic(root / "panoptic_train2017/000000000003.png", [(9, (0, 0, W, H))])
    # category ids: 0 person, 1 cat, 2 dining table, 3 wall-other-merged, 4 blanket
    data = [
        psg_item("000000000001", "1", [(1, 3), (2, 0), (3, 0), (4, 2)], [[1, 2, 0], [2, 3, 1], [1, 2, 0]]),
        psg_item("000000000002", "2", [(7, 4), (8, 1)], [[1, 0, 2]]),
        psg_item("000000000003", "3", [(9, 3)], []),
    ]
    psg = {
        "thing_classes": THINGS,
        "stuff_classes": STUFF,
        "predicate_classes": PREDICATES,
        "test_image_ids": ["2"],
        "data": data,
    }
    (root / "psg.json").write_text(json.dumps(psg))
    captions = {
        "images": [{"id": 1, "file_name": "000000000001.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "caption": "Two people  stand by a table."},
            {"id": 2, "image_id": 1, "caption": ""},
        ],
    }
    (root / "captions.json").write_text(json.dumps(captions))
    return {"psg_json": root / "psg.json", "coco_root": root, "captions": [root / "captions.json"]}


def box_polygon(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def refs_list() -> list[dict[str, Any]]:
    def ref(ref_id: int, ann_id: int, image_id: int, split: str, *sents: tuple[str, str]) -> dict[str, Any]:
        return {
            "ref_id": ref_id,
            "ann_id": ann_id,
            "image_id": image_id,
            "split": split,
            "category_id": 1,
            "sentences": [{"sent": s, "raw": r, "tokens": s.split(), "sent_id": ref_id * 10} for s, r in sents],
        }

    return [
        ref(1, 101, 11, "train", ("the man on the left", "The man on the left.")),
        ref(2, 102, 11, "train", ("", "A Woman  In Red.")),
        ref(3, 101, 11, "train", ("  ", " ")),
        ref(4, 999, 11, "train", ("a dog", "a dog")),
        ref(5, 201, 12, "val", ("the cup", "the cup")),
        ref(6, 301, 13, "test", ("a test phrase", "a test phrase")),
    ]


def write_refcocog(root: Path, refs_format: str = "pickle") -> dict[str, Any]:
    """The RefCOCOg fixture (module docstring); ``refs_format`` is pickle, json or parquet."""
    from grand_engine.io import rle

    for image_id in (11, 12, 13):
        write_jpeg(root / f"train2014/COCO_train2014_{image_id:012d}.jpg")
    crowd = np.zeros((H, W), dtype=bool)
    crowd[5:25, 20:30] = True
    instances = {
        "images": [
            {"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": H, "width": W} for i in (11, 12, 13)
        ],
        "annotations": [
            {
                "id": 101,
                "image_id": 11,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [5, 5, 10, 20],
                "segmentation": [box_polygon(5, 5, 15, 25), [1.0, 2.0]],
            },
            {
                "id": 102,
                "image_id": 11,
                "category_id": 1,
                "iscrowd": 1,
                "bbox": [20, 5, 10, 20],
                "segmentation": {"size": [H, W], "counts": [int(v) for v in rle.run_lengths(rle.encode(crowd))]},
            },
            {
                "id": 201,
                "image_id": 12,
                "category_id": 2,
                "iscrowd": 0,
                "bbox": [0, 0, 10, 10],
                "segmentation": [box_polygon(0, 0, 10, 10)],
            },
            {
                "id": 301,
                "image_id": 13,
                "category_id": 2,
                "iscrowd": 0,
                "bbox": [0, 0, 10, 10],
                "segmentation": [box_polygon(0, 0, 10, 10)],
            },
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "cup"}],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    refs = refs_list()
    if refs_format == "pickle":
        path = root / "refs(umd).p"
        path.write_bytes(pickle.dumps(refs, protocol=2))
    elif refs_format == "json":
        path = root / "refs.json"
        path.write_text(json.dumps(refs))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = root / "refs.parquet"
        pq.write_table(pa.Table.from_pylist(refs), path)
    return {"instances_json": root / "instances.json", "refs_path": path, "images_dir": root / "train2014"}


SENTENCES_1001 = [
    "[/EN#1/people Two men] sit on [/EN#3/other a bench] in [/EN#2/scene the park] .",
    "[/EN#1/people The men] wear [/EN#4/clothing/other red hats] and [/EN#9/notvisual something] .",
]


def write_flickr30k(root: Path) -> dict[str, Any]:
    """The Flickr30K Entities fixture (module docstring)."""
    write_jpeg(root / "images/1001.jpg", size=(FW, FH))
    write_jpeg(root / "images/1002.jpg", size=(FW, FH))
    (root / "Sentences").mkdir(parents=True, exist_ok=True)
    (root / "Sentences/1001.txt").write_text("\n".join(SENTENCES_1001) + "\n")
    (root / "Sentences/1002.txt").write_text("[/EN#5/people A woman] holds [/EN#6/other a cup .\n")
    (root / "Sentences/1003.txt").write_text("[/EN#7/people A child] .\n")
    size = f"<size><width>{FW}</width><height>{FH}</height><depth>3</depth></size>"

    def box(x1: int, y1: int, x2: int, y2: int) -> str:
        return f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"

    objects = (
        f"<object><name>1</name>{box(3, 5, 10, 20)}</object>"
        f"<object><name>1</name>{box(12, 4, 20, 22)}</object>"
        "<object><name>2</name><nobndbox>1</nobndbox></object>"
        f"<object><name>3</name>{box(1, 20, 50, 30)}</object>"
        f"<object><name>4</name><name>8</name>{box(6, 1, 15, 6)}</object>"
    )
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations/1001.xml").write_text(
        f"<annotation><filename>1001.jpg</filename>{size}{objects}</annotation>"
    )
    (root / "Annotations/1002.xml").write_text(f"<annotation>{size}</annotation>")
    (root / "val.txt").write_text("1002\n")
    return {"entities_dir": root, "images_dir": root / "images"}
