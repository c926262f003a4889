"""``grand-engine models check``: resolve every checkpoint a manifest needs, without loading weights.

Every model slot of every enabled stage is resolved with :func:`grand_engine.models.base.check_checkpoint`
(a local path must exist, a Hub id must be in the local Hugging Face cache, a spaCy package must be
installed). A found checkpoint is reported with its size on disk and the license named in its model card
(or package metadata); problems are reported per slot with the path or id tried and how to provide it;
nothing raises for a missing checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grand_engine.config import ModelSpec, PipelineManifest
from grand_engine.models.base import CheckResult, check_checkpoint, looks_local, strip_scheme


@dataclass(frozen=True)
class SlotCheck:
    """The resolution of one model slot of one stage."""

    stage: str
    slot: str
    spec: ModelSpec
    result: CheckResult

    @property
    def found(self) -> bool:
        return self.result.found


def _hint(spec: ModelSpec) -> str:
    """How to provide a missing checkpoint that ``check_checkpoint``'s message does not already explain."""
    raw = strip_scheme(spec.id)
    if not (spec.id.startswith("local-dir:") or looks_local(raw)):
        return ""  # Hub ids and spaCy packages: the message already says how
    if "tiny" in raw:
        return "build the tiny checkpoints with `grand-engine models tiny` (or set GRAND_TINY_DIR)"
    if spec.family == "sam":
        return "download Meta's segment-anything checkpoint (e.g. sam_vit_h_4b8939.pth) to that path"
    return "copy the checkpoint to that path or change the slot's `id` in the manifest"


def check_manifest(manifest: PipelineManifest) -> list[SlotCheck]:
    """One :class:`SlotCheck` per model slot of every enabled stage, in manifest order."""
    checks = []
    for stage_name, stage in manifest.stages.items():
        if not stage.enabled:
            continue
        for slot, spec in stage.models.items():
            try:
                result = check_checkpoint(spec)
            except Exception as exc:  # noqa: BLE001 - a check never raises; the reason goes into the report
                result = CheckResult(False, spec.id, f"could not be checked: {type(exc).__name__}: {exc}")
            if not result.found:
                hint = _hint(spec)
                if hint:
                    result = CheckResult(False, result.where, f"{result.message}; {hint}")
            checks.append(SlotCheck(stage_name, slot, spec, result))
    return checks


def missing(checks: Sequence[SlotCheck]) -> list[SlotCheck]:
    return [c for c in checks if not c.found]


def format_size(n: int | None) -> str:
    """``1.47 GB`` / ``471.4 kB`` style; ``-`` when unknown."""
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def format_checks(checks: Sequence[SlotCheck]) -> str:
    """One line per slot and a total. A found slot shows its size on disk and the license its model card names
    (``no license stated`` when there is no card or no ``license`` field); a missing one what was tried and the
    hint."""
    if not checks:
        return "no model slots in the enabled stages"
    width = max(len(f"{c.stage}.{c.slot}") for c in checks)
    lines = []
    for c in checks:
        name = f"{c.stage}.{c.slot}".ljust(width)
        if c.found:
            license = c.result.license or "no license stated"
            size = format_size(c.result.bytes)
            lines.append(f"{name}  found    {c.spec.family:14s} {size:>10s}  {license:24s} {c.result.where}")
        else:
            lines.append(f"{name}  missing  {c.spec.family:14s} {c.result.where}: {c.result.message}")
    n_missing = len(missing(checks))
    total = sum(c.result.bytes or 0 for c in checks if c.found)
    lines.append(
        f"{len(checks) - n_missing} of {len(checks)} checkpoints found ({format_size(total)}), {n_missing} missing"
    )
    return "\n".join(lines)
