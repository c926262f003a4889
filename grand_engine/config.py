"""Pipeline manifests: loading, validation, overrides and resolution into configured stages.

A pipeline manifest (``manifests/*.yaml``) names the stages of a pipeline and, per stage, its
parameters, its models (one per slot) and its resources. Manifests are validated with pydantic;
unknown keys are errors that name the key and the file. ``${var}`` references are expanded from the
manifest's ``variables`` block, then from the environment (``${var:-default}`` gives a default).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    declared = {k: str(v) for k, v in (raw.get("variables") or {}).items()}
    merged_vars = {**declared, **(variables or {})}
    # Variables may refer to the environment or to each other (in declaration order).
    resolved: dict[str, str] = {}
    for key, value in merged_vars.items():
        resolved[key] = expand_variables(value, {**resolved})
    raw["variables"] = resolved
    raw["stages"] = expand_variables(raw.get("stages") or {}, resolved)
    for item in overrides or []:
        stage, param, value = parse_override(item)
        if stage not in raw["stages"]:
            raise ConfigError(f"--set {item!r}: manifest {path.name} has no stage {stage!r}")
        spec = raw["stages"][stage] = raw["stages"][stage] or {}
        if param.startswith("resources."):
            spec.setdefault("resources", {})[param.split(".", 1)[1]] = value
        else:
            spec.setdefault("params", {})[param] = value
    try:
        return PipelineManifest.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, str(path))) from None
