"""Flickr30K Entities → *phrase* records, one per image and sentence.

Inputs (the dataset's own layout): ``Sentences/<id>.txt`` — one sentence per line, each annotated phrase written
``[/EN#<entity id>/<type>[/<type>…] <phrase words>]``; ``Annotations/<id>.xml`` — the image ``size`` and its
``object`` elements, each with one or more entity ids (``name``) and either a ``bndbox`` (``xmin``, ``ymin``,
``xmax``, ``ymax``: 1-based, inclusive pixel coordinates) or ``nobndbox``/``scene``; and, optionally,
``train.txt``/``val.txt``/``test.txt`` listing the image ids of each split (an image in none of them is ``train``).

Sentence ``k`` of image ``<id>`` becomes record ``flickr_<id>_<k>``: its base caption is the sentence with the
brackets removed, its phrases are the annotated phrases, each with the union of its entity's boxes (the "merged
ground truth" of GLaMM's ``flickr_mergedGT`` files) as ``[xmin − 1, ymin − 1, xmax, ymax]`` (0-based, end
exclusive). The ``source_masks`` stage turns each box into a SAM mask.

Left out, with their reason: a phrase of type ``notvisual`` (``not_visual``), a phrase whose entity has no box
(``no_box``), an empty phrase, a box outside the image (see :func:`~grand_engine.sources.records.check_record`).
A sentence with unbalanced brackets is an error record (``MalformedSentence``); a missing or unreadable
annotation file makes every sentence of the image an error record (``MissingAnnotation``, ``MalformedAnnotation``).
An annotation file with a document type declaration is refused unparsed (entity expansion is the classic XML bomb;
the dataset's files have none).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from grand_engine.sources.records import Entity, SourceRecord, check_record

_PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s/\]]+)+)(?: ([^\[\]]*))?\]")


@dataclass
class Sentence:
    """One annotated sentence: its plain text and its phrases ``(entity id, types, text, start, end)``."""

    text: str
    phrases: list[tuple[int, list[str], str, int, int]] = field(default_factory=list)


@dataclass
class ImageBoxes:
    """The boxes of one annotation file: its size and ``{entity id: [[x1, y1, x2, y2], …]}`` (0-based, end
    exclusive)."""

    width: int
    height: int
    boxes: dict[int, list[list[float]]] = field(default_factory=dict)


def parse_sentence(line: str) -> Sentence:
    """Parse one annotated line; ``ValueError`` when a bracket is left open or closed without an opening."""
    parts: list[str] = []
    phrases: list[tuple[int, list[str], str, int, int]] = []
    pos = 0
    length = 0
    for match in _PHRASE.finditer(line):
        between = line[pos : match.start()]
        if "[" in between or "]" in between:
            raise ValueError(f"unbalanced bracket before column {match.start()}")
        parts.append(between)
        length += len(between)
        words = match.group(3) or ""
        phrases.append((int(match.group(1)), match.group(2).strip("/").split("/"), words, length, length + len(words)))
        parts.append(words)
        length += len(words)
        pos = match.end()
    tail = line[pos:]
    if "[" in tail or "]" in tail:
        raise ValueError(f"unbalanced bracket after column {pos}")
    parts.append(tail)
    return Sentence("".join(parts), phrases)


def parse_annotation(data: bytes) -> ImageBoxes:
    """Parse one ``Annotations/<id>.xml``; ``ValueError`` for a DTD, malformed XML or a missing size."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ValueError("the file declares a document type or entities; refused unparsed")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from None
    try:
        width = int(root.findtext("size/width") or "")
        height = int(root.findtext("size/height") or "")
    except ValueError:
        raise ValueError("no integer size/width and size/height") from None
    out = ImageBoxes(width, height)
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        try:
            x1, y1, x2, y2 = (float(box.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise ValueError("a bndbox without numeric xmin, ymin, xmax and ymax") from None
        for name in obj.findall("name"):
            try:
                entity = int(name.text or "")
            except ValueError:
                continue
            out.boxes.setdefault(entity, []).append([x1 - 1.0, y1 - 1.0, x2, y2])
    return out


def union_box(boxes: list[list[float]]) -> list[float]:
    """The smallest box holding every box of ``boxes``."""
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def read_splits(entities_dir: Path) -> dict[str, str]:
    """``{image id: split}`` from ``train.txt``, ``val.txt`` and ``test.txt`` when present."""
    out: dict[str, str] = {}
    for split in ("train", "val", "test"):
        path = entities_dir / f"{split}.txt"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").split():
                out[line.strip()] = split
    return out


def _sentence_record(
    stem: str, k: int, line: str, boxes: ImageBoxes | None, failure: tuple[str, str] | None, split: str, image: Path
) -> SourceRecord:
    record = SourceRecord(
        record_id=f"flickr_{stem}_{k}",
        source="flickr30k",
        kind="phrase",
        split=split,
        file_name=image.name,
        image_path=str(image),
        width=boxes.width if boxes else None,
        height=boxes.height if boxes else None,
        source_key=f"{stem}#{k}",
    )
    if failure is not None:
        return record.fail(*failure)
    try:
        sentence = parse_sentence(line)
    except ValueError as exc:
        return record.fail("MalformedSentence", f"sentence {k}: {exc}")
    record.captions = [" ".join(sentence.text.split())]
    assert boxes is not None
    for entity_id, types, words, _, _ in sentence.phrases:
        phrase = " ".join(words.split())
        if "notvisual" in types:
            record.drop(phrase, "not_visual")
            continue
        entity_boxes = boxes.boxes.get(entity_id)
        if not entity_boxes:
            record.drop(phrase, "no_box" if phrase else "empty_phrase")
            continue
        record.entities.append(
            Entity(key=phrase, label="/".join(types), object_id=entity_id, bbox=union_box(entity_boxes))
        )
    return check_record(record)


def read_flickr30k(
    entities_dir: str | Path,
    images_dir: str | Path,
    *,
    splits: tuple[str, ...] = ("train", "val", "test"),
    limit: int | None = None,
) -> Iterator[SourceRecord]:
    """One phrase record per sentence of every ``Sentences/*.txt`` under ``entities_dir`` (sorted by image id);
    images are ``images_dir/<id>.jpg``. ``splits`` keeps only those splits; ``limit`` stops after that many
    images."""
    entities_dir, images_dir = Path(entities_dir), Path(images_dir)
    sentences_dir = entities_dir / "Sentences"
    if not sentences_dir.is_dir():
        raise FileNotFoundError(f"{entities_dir} has no Sentences folder (the Flickr30K Entities layout)")
    split_of = read_splits(entities_dir)
    files = sorted(sentences_dir.glob("*.txt"), key=lambda p: p.stem)
    count = 0
    for path in files:
        stem = path.stem
        split = split_of.get(stem, "train")
        if split not in splits:
            continue
        if limit is not None and count >= limit:
            return
        count += 1
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        xml = entities_dir / "Annotations" / f"{stem}.xml"
        boxes: ImageBoxes | None = None
        failure: tuple[str, str] | None = None
        try:
            boxes = parse_annotation(xml.read_bytes())
        except FileNotFoundError:
            failure = ("MissingAnnotation", f"no annotation file {xml}")
        except ValueError as exc:
            failure = ("MalformedAnnotation", f"{xml}: {exc}")
        for k, line in enumerate(lines):
            yield _sentence_record(stem, k, line, boxes, failure, split, images_dir / f"{stem}.jpg")
