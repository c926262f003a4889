"""``grand-engine models check``: resolve every checkpoint a manifest needs, without loading weights.

Every model slot of every enabled stage is resolved with :func:`grand_engine.models.base.check_checkpoint`
(a local path must exist, a Hub id must be in the local Hugging Face cache, a spaCy package must be
installed). Problems are reported per slot with the path or id tried and how to provide it; nothing
raises for a missing checkpoint.
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


def format_checks(checks: Sequence[SlotCheck]) -> str:
    """One line per slot (``found`` with where, or ``missing`` with what was tried and the hint) and a total."""
    if not checks:
        return "no model slots in the enabled stages"
    width = max(len(f"{c.stage}.{c.slot}") for c in checks)
    lines = []
    for c in checks:
        name = f"{c.stage}.{c.slot}".ljust(width)
        if c.found:
            lines.append(f"{name}  found    {c.spec.family:14s} {c.result.where}")
        else:
            lines.append(f"{name}  missing  {c.spec.family:14s} {c.result.where}: {c.result.message}")
    n_missing = len(missing(checks))
    lines.append(f"{len(checks) - n_missing} of {len(checks)} checkpoints found, {n_missing} missing")
    return "\n".join(lines)
