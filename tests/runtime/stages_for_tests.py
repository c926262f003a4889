"""Small stages used only by the runtime tests: they record every execution in a log file."""

from __future__ import annotations

import logging
import os
import signal
import warnings
from dataclasses import dataclass

import pyarrow as pa

from grand_engine.runtime.stage import ErrorRecord, Stage, StageResult, UnitInput
from grand_engine.schema import table_schema

logger = logging.getLogger(__name__)


def _log(path: str, name: str, unit_id: str) -> None:
    if path:
        with open(path, "a") as fh:
            fh.write(f"{name} {unit_id}\n")


def executions(path: str) -> list[tuple[str, str]]:
    """The (stage, unit) pairs a log file recorded, in order."""
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [tuple(line.split()) for line in fh if line.strip()]


@dataclass
class AreaStage(Stage):
    """t_area: the image area from the images table, times ``scale``."""

    name = "t_area"
    requires = ("images",)
    level = 1
    schema = table_schema(("area", pa.int64()))

    scale: int = 1
    log: str = ""
    fail_image: str = ""  # an image id that raises (per-image error)
    warn: str = ""  # a warning every worker logs once in setup (what the console shows of workers' logs)
    chatter: str = ""  # printed, written to file descriptor 2 and warned in setup, as libraries do

    def setup(self) -> None:
        if self.warn:
            logger.warning(self.warn)
        if self.chatter:
            print(self.chatter, flush=True)
            os.write(2, f"{self.chatter} (fd 2)\n".encode())
            warnings.warn(f"{self.chatter} (warnings)", UserWarning, stacklevel=1)

    def process_unit(self, unit: UnitInput) -> StageResult:
        _log(self.log, self.name, unit.unit_id)
        return super().process_unit(unit)

    def process_image(self, unit: UnitInput, image_id: str) -> dict:
        if image_id == self.fail_image:
            raise ValueError(f"refusing {image_id}")
        r = unit.image_row(image_id)
        return {"image_id": image_id, "area": r["width"] * r["height"] * self.scale}


@dataclass
class DoubleStage(Stage):
    """t_double: twice the upstream area."""

    name = "t_double"
    requires = ("t_area",)
    level = 2
    schema = table_schema(("double", pa.int64()))

    log: str = ""
    fail_unit: str = ""  # a unit id on which the whole stage raises after doing some work
    kill_unit: str = ""  # a unit id on which the worker process dies (SIGKILL) every time: Ray backend only

    def process_unit(self, unit: UnitInput) -> StageResult:
        _log(self.log, self.name, unit.unit_id)
        if unit.unit_id == self.kill_unit:
            os.kill(os.getpid(), signal.SIGKILL)
        rows = [{"image_id": i, "double": 2 * unit.input_row("t_area", i)["area"]} for i in unit.image_ids]
        if unit.unit_id == self.fail_unit:
            raise RuntimeError(f"injected failure on {unit.unit_id}")
        return StageResult(self.to_table(rows))


@dataclass
class PixelStage(Stage):
    """t_pixels: mean of the decoded pixels plus the upstream double (needs pixels and two inputs)."""

    name = "t_pixels"
    requires = ("images", "t_double")
    level = 3
    needs_pixels = True
    schema = table_schema(("mean", pa.float64()), ("double", pa.int64()), ("shape", pa.list_(pa.int32())))

    log: str = ""

    def process_unit(self, unit: UnitInput) -> StageResult:
        _log(self.log, self.name, unit.unit_id)
        return super().process_unit(unit)

    def process_image(self, unit: UnitInput, image_id: str) -> dict:
        px = unit.pixels(image_id)
        return {
            "image_id": image_id,
            "mean": float(px.mean()),
            "double": unit.input_row("t_double", image_id)["double"],
            "shape": list(px.shape),
        }


__all__ = ["AreaStage", "DoubleStage", "PixelStage", "ErrorRecord", "executions"]
