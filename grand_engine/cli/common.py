"""What the command modules share: the examples shown by ``--help`` and ``--var`` parsing."""

from __future__ import annotations

from grand_engine.config import ConfigError

EXAMPLES = """\
examples:
  grand-engine demo                                   build the sample shard and run it (tiny models, CPU)
  grand-engine run --shards sa1b/ --out out/ --levels 1-4 --manifest grand
  grand-engine run --shards 'sa1b/sa_00000*.tar' --out out/ --stages depth --max-units 2 --backend inline
  grand-engine run --shards imgs/ --out out/ --set detect_ov.threshold=0.1 --set depth.resources.gpus=0.5
  grand-engine status out/                            per-stage progress from the manifests
  grand-engine rerun out/ --stage level1              recompute level1 and everything downstream
  grand-engine errors out/ --stage images             list per-image error rows
  grand-engine models tiny ~/.cache/grand-engine/tiny build tiny random checkpoints for CPU runs
  grand-engine models check --manifest grand          resolve every checkpoint without loading it
"""


def parse_vars(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` → ``{"a": "1", "b": "x=y"}``; an item without ``=`` is a ``ConfigError``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--var expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out
