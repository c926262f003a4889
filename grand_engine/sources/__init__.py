"""Open datasets repurposed for GranD-f (GLaMM's GCG fine-tuning set): OpenPSG, RefCOCOg, Flickr30K Entities.

Each reader turns a dataset's own files into :class:`~grand_engine.sources.records.SourceRecord` objects, one per
image (Flickr30K: one per image and sentence), that say everything the later stages need: the image's file, the
base captions, the entities or referring phrases with their regions, the relations, and what was left out and why.

* :mod:`~grand_engine.sources.openpsg` — ``psg.json`` (COCO panoptic segments and [subject, object, predicate]
  relations) plus the panoptic PNGs and, optionally, COCO caption files: *relation* records;
* :mod:`~grand_engine.sources.refcocog` — COCO instances plus the RefCOCOg refs (the public pickle, read with the
  restricted unpickler of :mod:`~grand_engine.sources.safe_pickle`, or a JSON / Parquet copy): *phrase* records;
* :mod:`~grand_engine.sources.flickr30k` — Flickr30K Entities' ``Sentences/*.txt`` and ``Annotations/*.xml``:
  *phrase* records whose regions are boxes (the ``source_masks`` stage turns them into SAM masks).

:mod:`~grand_engine.sources.shards` writes records as JSON Lines *record shards* and indexes such a shard into
members (one per record) for the planner; ``grand-engine sources prepare`` is the command that does both.
"""

from __future__ import annotations

SOURCES = ("openpsg", "refcocog", "flickr30k")
"""The datasets with a reader."""

KINDS = ("relation", "phrase")
"""What a record gives the LLM: relation triples between named entities, or referring phrases."""
