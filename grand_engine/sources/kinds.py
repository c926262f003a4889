"""The input kinds ``openpsg``, ``refcocog`` and ``flickr30k``: record shards read by the ``source_records`` stage.

Each kind lists record shards (``*.jsonl`` files, folders of them, or globs: :func:`~grand_engine.sources.shards.
list_record_shards`) and indexes one shard into one member per record, refusing records of another dataset
(``WrongSource``). ``grand-engine sources prepare <source> …`` writes the shards; a manifest with ``input:
openpsg`` (or ``--input openpsg``) reads them. The kinds are declared in the ``grand_engine.inputs`` entry-point
group.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grand_engine.io.inputs import InputKind
from grand_engine.io.sa1b import ShardIndex
from grand_engine.sources.shards import index_record_shard, list_record_shards

ROOT_STAGE = "source_records"


def _indexer(source: str) -> Callable[[Path], ShardIndex]:
    def index_shard(path: Path) -> ShardIndex:
        return index_record_shard(path, source=source)

    index_shard.__name__ = f"index_{source}_shard"
    return index_shard


def _kind(source: str, description: str) -> InputKind:
    return InputKind(
        name=source,
        root_stage=ROOT_STAGE,
        list_shards=list_record_shards,
        index_shard=_indexer(source),
        description=description,
    )


OPENPSG = _kind("openpsg", "OpenPSG record shards (grand-engine sources prepare openpsg) for GranD-f construction")
REFCOCOG = _kind("refcocog", "RefCOCOg record shards (grand-engine sources prepare refcocog) for GranD-f construction")
FLICKR30K = _kind(
    "flickr30k", "Flickr30K Entities record shards (grand-engine sources prepare flickr30k) for GranD-f construction"
)
