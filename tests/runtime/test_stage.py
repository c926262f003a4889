"""The stage base: the loop it owns, collaborators, error context, invariant checks, and the registries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest

from grand_engine.config import ModelSpec
from grand_engine.registry import PluginError, Registry
from grand_engine.runtime.stage import (
    STAGES,
    ErrorRecord,
    InvariantViolation,
    Stage,
    StageResult,
    UnitInput,
    collaborator,
)
from grand_engine.schema import table_schema
from grand_engine.testing import make_unit, run_stage


@dataclass
class _PerImage(Stage):
    schema: ClassVar[pa.Schema] = table_schema(("value", pa.string()))

    def process_image(self, unit: UnitInput, image_id: str) -> dict[str, Any] | ErrorRecord:
        if image_id == "bad":
            raise ValueError("bad input")
        if image_id == "refused":
            return ErrorRecord(image_id, "Refused", "not for this stage")
        return {"image_id": image_id, "value": image_id.upper()}


@dataclass
class _Batched(Stage):
    schema: ClassVar[pa.Schema] = table_schema(("value", pa.string()))
    batching: ClassVar[str] = "batch"

    calls: list = collaborator()  # records every batch it was given

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any] | ErrorRecord]:
        self.calls.append(list(image_ids))
        if "bad" in image_ids:
            raise ValueError("bad input")
        return [ErrorRecord(i, "Nope", "no") if i == "d" else {"image_id": i, "value": i.upper()} for i in image_ids]


def test_the_per_image_loop_isolates_failures_and_keeps_error_records():
    result = run_stage(_PerImage.configure(), make_unit(["a", "bad", "refused", "c"]))
    assert result.table.column("image_id").to_pylist() == ["a", "c"]
    assert [(e.image_id, e.error_type, e.message) for e in result.errors] == [
        ("bad", "ValueError", "bad input"),  # a logic stage keeps the message as it is
        ("refused", "Refused", "not for this stage"),
    ]


def test_a_failing_batch_is_retried_image_by_image():
    calls: list[list[str]] = []
    stage = _Batched.configure(resources={"batch_size": 2}, calls=calls)
    result = run_stage(stage, make_unit(["a", "bad", "c", "d", "e"]))
    assert calls == [["a", "bad"], ["a"], ["bad"], ["c", "d"], ["e"]]
    assert result.table.column("value").to_pylist() == ["A", "C", "E"]
    assert [(e.image_id, e.error_type) for e in result.errors] == [("bad", "ValueError"), ("d", "Nope")]


def test_a_batch_that_returns_the_wrong_number_of_results_is_an_error_per_image():
    @dataclass
    class Short(_Batched):
        def process_batch(self, unit, image_ids):
            return [{"image_id": image_ids[0], "value": "x"}] if len(image_ids) > 1 else []

    result = run_stage(Short.configure(resources={"batch_size": 3}, calls=[]), make_unit(["a", "b"]))
    assert result.table.num_rows == 0
    assert [(e.image_id, e.error_type) for e in result.errors] == [("a", "RuntimeError"), ("b", "RuntimeError")]
    assert "returned 0 results for 1 images" in result.errors[0].message


def test_collaborators_are_not_parameters_and_unknown_ones_are_refused():
    assert _Batched.param_names() == [] and _Batched.collaborator_names() == ["calls"]
    with pytest.raises(ValueError, match="no collaborator 'llm'.*its collaborators: calls"):
        _Batched.configure(llm=object())


def test_a_model_stage_error_names_the_stage_the_slots_and_the_image_size():
    @dataclass
    class Model(Stage):
        name: ClassVar[str] = ""
        schema: ClassVar[pa.Schema] = table_schema(("value", pa.float32()))
        model_slots: ClassVar[tuple[str, ...]] = ("depth",)

        def process_image(self, unit, image_id):
            raise RuntimeError("output with shape [1, 1, 160, 512] doesn't match the broadcast shape")

    stage = Model.configure(models={"depth": ModelSpec(id="org/depth-model", family="depth")})
    stage.name = "depth_probe"  # an instance name keeps the class out of the registry
    (error,) = run_stage(stage, make_unit({"a": np.zeros((1, 3, 3), np.uint8)}), setup=False).errors
    assert error.error_type == "RuntimeError"
    assert error.message == (
        "output with shape [1, 1, 160, 512] doesn't match the broadcast shape "
        "[stage depth_probe, models depth=org/depth-model, image 3x1]"
    )


def test_require_valid_raises_with_every_broken_invariant():
    stage = _PerImage.configure()
    row = {"image_id": "a", "objects": None, "floating_objects": [], "width": 10, "height": 10}
    with pytest.raises(InvariantViolation, match=r"invariants broken by the  row of 'a': objects is null"):
        stage.require_valid(row, 1)


def test_run_stage_applies_the_runner_contract():
    @dataclass
    class Forgetful(_PerImage):
        def process_image(self, unit, image_id):
            return ErrorRecord(image_id, "Skip", "-") if image_id == "b" else {"image_id": image_id, "value": "v"}

    @dataclass
    class Silent(Stage):
        schema: ClassVar[pa.Schema] = table_schema(("value", pa.string()))

        def process_unit(self, unit):  # forgets image "b" entirely
            return StageResult(self.to_table([{"image_id": "a", "value": "v"}]))

    assert [e.error_type for e in run_stage(Forgetful.configure(), make_unit(["a", "b"])).errors] == ["Skip"]
    result = run_stage(Silent.configure(), make_unit(["a", "b"]))
    assert [(e.image_id, e.error_type) for e in result.errors] == [("b", "MissingOutput")]


def test_the_stage_registry_loads_built_in_stages_from_entry_points():
    assert "depth" in STAGES.names() and "level1" in STAGES.names()
    assert STAGES.get("depth").__module__ == "grand_engine.stages.depth"
    with pytest.raises(KeyError, match="unknown stage 'no_such_stage'; known: .*depth"):
        STAGES.get("no_such_stage")


def test_a_registry_checks_what_an_entry_point_loads(monkeypatch):
    from importlib import metadata

    registry: Registry[type] = Registry("thing", "grand_engine.tests_things", check=_only_ints)
    ep = metadata.EntryPoint(name="seven", value="builtins:str", group="grand_engine.tests_things")
    monkeypatch.setattr(registry, "_declared", lambda: {"seven": ep})
    with pytest.raises(PluginError, match="'builtins:str' .* is not a valid thing: not an int type"):
        registry.get("seven")


def _only_ints(name: str, obj: object) -> None:
    if obj is not int:
        raise TypeError("not an int type")
