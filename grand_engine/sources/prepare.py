"""``grand-engine sources prepare``: read an open dataset and write its record shards, reporting what was left out.

:func:`prepare` streams a reader's records into :func:`~grand_engine.sources.shards.write_record_shards` and counts,
per source, the usable records, the error records by type (they are written too, and become error rows of the
run) and the dropped phrases by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from grand_engine.sources.records import SourceRecord
from grand_engine.sources.shards import RECORDS_PER_SHARD, write_record_shards


@dataclass
class PrepareReport:
    """What one ``prepare`` read and wrote."""

    source: str
    records: int = 0  # every record written (usable and error records)
    usable: int = 0
    errors: Counter = field(default_factory=Counter)  # error records by error_type
    dropped: Counter = field(default_factory=Counter)  # dropped phrases / relations by reason
    splits: Counter = field(default_factory=Counter)  # usable records by split
    shards: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.source}: {self.records} records ({self.usable} usable) in {len(self.shards)} shard(s)"
            + (f" under {self.shards[0].parent}" if self.shards else "")
        ]
        if self.splits:
            lines.append("  usable by split: " + ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items())))
        if self.errors:
            lines.append("  error records: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())))
        if self.dropped:
            lines.append("  dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())))
        return "\n".join(lines)


def _counted(records: Iterable[SourceRecord], report: PrepareReport) -> Iterator[SourceRecord]:
    for record in records:
        report.records += 1
        report.dropped.update(d["reason"] for d in record.dropped)
        if record.error_type:
            report.errors[record.error_type] += 1
        else:
            report.usable += 1
            report.splits[record.split] += 1
        yield record


def prepare(
    source: str, records: Iterable[SourceRecord], dest: str | Path, records_per_shard: int = RECORDS_PER_SHARD
) -> PrepareReport:
    """Write ``records`` as ``dest/<source>-<n>.jsonl`` shards and count them."""
    report = PrepareReport(source)
    report.shards = write_record_shards(_counted(records, report), dest, source, records_per_shard)
    return report
