"""Input kinds: what a run reads and which root stage turns it into the unit's table.

An :class:`InputKind` tells the planner how to resolve ``--shards`` specs into shard paths and how to index one
shard into its members (each member is one element of work — an image, a video, a dataset record — with byte
locators of its data and its annotation), and names the root stage that turns a unit's members into the table every
other stage reads. The built-in kind ``images`` reads SA-1B tar shards and folders of images
(:mod:`grand_engine.io.sa1b`) with the ``images`` root stage. A manifest names its kind (``input: images``), the
command line may override it (``--input``), and packages add kinds through the ``grand_engine.inputs`` entry-point
group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grand_engine.io import sa1b
from grand_engine.io.sa1b import ShardIndex
from grand_engine.registry import INPUT_KIND_GROUP, Registry


@dataclass(frozen=True)
class InputKind:
    """How a run finds and indexes its work (see the module docstring)."""

    name: str
    root_stage: str  # the stage that turns a unit's members into the table the other stages read
    list_shards: Callable[[Sequence[str | Path]], list[Path]]  # specs -> sorted absolute shard paths
    index_shard: Callable[[Path], ShardIndex]  # one shard -> its members in a stable order
    description: str = ""


def _check_input_kind(name: str, obj: object) -> None:
    if not isinstance(obj, InputKind):
        raise TypeError(f"{obj!r} is not a grand_engine.io.inputs.InputKind")
    if obj.name != name:
        raise TypeError(f"the input kind is named {obj.name!r}, but its entry point is {name!r}")


INPUT_KINDS: Registry[InputKind] = Registry("input kind", INPUT_KIND_GROUP, check=_check_input_kind)
"""Every input kind by name (built-in ones registered below, others from the ``grand_engine.inputs`` group)."""

IMAGES = INPUT_KINDS.register(
    "images",
    InputKind(
        name="images",
        root_stage="images",
        list_shards=sa1b.list_shards,
        index_shard=sa1b.index_shard,
        description="SA-1B tar shards (image + same-stem JSON) or folders of images",
    ),
)


def get_input_kind(name: str) -> InputKind:
    """The input kind ``name``; ``KeyError`` lists the known kinds."""
    return INPUT_KINDS.get(name)
