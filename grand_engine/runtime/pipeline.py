"""A resolved pipeline: configured stage instances in topological order, with their fingerprints.

A stage's fingerprint hashes its name, code version, parameters, models (id, revision, dtype, backend,
options and, for local checkpoints, a digest of the files), the contents of the prompt files it reads and
the fingerprints of its inputs. Changing
a threshold or a model therefore changes the fingerprint of that stage and of everything downstream,
and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import grand_engine
from grand_engine.config import ConfigError, ModelSpec, PipelineManifest
from grand_engine.io.inputs import InputKind, get_input_kind
from grand_engine.registry import PluginError
from grand_engine.resources import resource_dir
from grand_engine.runtime.stage import Stage, get_stage_class, topological_order

ROOT_STAGE = "images"
"""The root stage of the default input kind (``images``)."""
_SAMPLE = 256 * 1024


def parse_levels(text: str) -> list[int]:
    """``"1-4"`` → [1, 2, 3, 4]; ``"2"`` → [2]; ``"1,3"`` → [1, 3]."""
    levels: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                levels.update(range(lo, hi + 1))
            elif part:
                levels.add(int(part))
    except ValueError:
        raise ConfigError(f"--levels expects a level or a range such as 1-4, got {text!r}") from None
    bad = sorted(x for x in levels if not 1 <= x <= 4)
    if bad or not levels:
        raise ConfigError(f"--levels must name levels between 1 and 4, got {text!r}")
    return sorted(levels)


def _file_digest(path: Path) -> str:
    """Size plus the first and last 256 KiB: cheap on multi-GB checkpoints, changes when weights change."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            fh.seek(size - _SAMPLE)
            h.update(fh.read(_SAMPLE))
    return h.hexdigest()[:16]


def checkpoint_digest(spec: ModelSpec) -> str | None:
    """A digest of a local checkpoint's files; ``None`` for Hub ids (their revision identifies them)."""
    raw = spec.id
    for prefix in ("local-dir:", "hf-hub:"):
        raw = raw.removeprefix(prefix)
    path = Path(raw).expanduser()
    if not (raw.startswith(("/", ".", "~")) or path.exists()):
        return None
    if path.is_file():
        return _file_digest(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if spec.file and file.suffix == ".gguf" and rel != spec.file:
            continue
        h.update(rel.encode())
        h.update(_file_digest(file).encode())
    return h.hexdigest()[:16]


def _model_identity(spec: ModelSpec) -> dict[str, Any]:
    ident = spec.model_dump()
    ident["digest"] = checkpoint_digest(spec)
    return ident


@dataclass
class Pipeline:
    """Configured stages of one run, ordered, with fingerprints and the selection to run."""

    manifest: PipelineManifest
    stages: dict[str, Stage]  # every stage of the DAG that the selection needs, topological order
    fingerprints: dict[str, str] = field(default_factory=dict)
    input_kind: InputKind = field(default_factory=lambda: get_input_kind("images"))

    @property
    def root(self) -> str:
        """The root stage: it turns a unit's shard members into the table every other stage reads."""
        return self.input_kind.root_stage

    @property
    def order(self) -> list[str]:
        return list(self.stages)

    def inputs(self, name: str) -> tuple[str, ...]:
        return self.stages[name].inputs()

    def descendants(self, name: str) -> list[str]:
        """``name`` and every stage downstream of it, in topological order."""
        hit = {name}
        for stage in self.order:
            if any(req in hit for req in self.inputs(stage)):
                hit.add(stage)
        return [s for s in self.order if s in hit]

    def describe(self) -> dict[str, Any]:
        """The resolved configuration, for ``run.json``."""
        return {
            name: {
                "class": f"{type(stage).__module__}.{type(stage).__qualname__}",
                "version": stage.version,
                "inputs": list(stage.inputs()),
                "params": _jsonable(stage.params()),
                "models": {slot: spec.model_dump() for slot, spec in stage.models.items()},
                "resources": stage.resources.__dict__,
                "fingerprint": self.fingerprints[name],
            }
            for name, stage in self.stages.items()
        }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def build_pipeline(
    manifest: PipelineManifest,
    levels: list[int] | None = None,
    stages: list[str] | None = None,
) -> Pipeline:
    """Configure the manifest's enabled stages and select what to run.

    ``levels`` selects the stages of those levels plus all their ancestors; ``stages`` selects stages
    by name (plus ancestors). With neither, every enabled stage is selected.
    """
    configured = _configure_stages(manifest)
    input_kind = _input_kind(manifest, configured)
    graph = {name: stage.inputs() for name, stage in configured.items()}
    order = _checked_order(manifest, graph)
    selected = _with_ancestors(_selection(manifest, configured, order, levels, stages), graph)
    ordered = {name: configured[name] for name in order if name in selected}
    pipeline = Pipeline(manifest=manifest, stages=ordered, input_kind=input_kind)
    pipeline.fingerprints = compute_fingerprints(ordered)
    return pipeline


def _configure_stages(manifest: PipelineManifest) -> dict[str, Stage]:
    """A configured instance of every enabled stage of the manifest, in manifest order."""
    configured: dict[str, Stage] = {}
    for name, spec in manifest.stages.items():
        if not spec.enabled:
            continue
        try:
            cls = get_stage_class(name)
        except KeyError as exc:
            raise ConfigError(f"manifest {manifest.name!r}: {exc.args[0]}") from None
        except PluginError as exc:
            raise ConfigError(f"manifest {manifest.name!r}: {exc}") from None
        params = dict(spec.params)
        if "seed" in cls.param_names() and "seed" not in params:
            params["seed"] = manifest.seed  # one seed for the run (recorded in run.json) unless a stage sets its own
        try:
            configured[name] = cls.configure(params, dict(spec.models), spec.resources.overrides())
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"manifest {manifest.name!r}, stage {name!r}: {exc}") from None
    return configured


def _input_kind(manifest: PipelineManifest, configured: dict[str, Stage]) -> InputKind:
    """The manifest's input kind, whose root stage must be enabled."""
    try:
        input_kind = get_input_kind(manifest.input)
    except KeyError as exc:
        raise ConfigError(f"manifest {manifest.name!r}: {exc.args[0]}") from None
    if input_kind.root_stage not in configured:
        raise ConfigError(
            f"manifest {manifest.name!r} must enable the {input_kind.root_stage!r} stage "
            f"(the reader of input kind {input_kind.name!r})"
        )
    return input_kind


def _checked_order(manifest: PipelineManifest, graph: dict[str, tuple[str, ...]]) -> list[str]:
    """The stages in topological order, once every stage's inputs are enabled."""
    for name, reqs in graph.items():
        missing = [r for r in reqs if r not in graph]
        if missing:
            raise ConfigError(
                f"stage {name!r} requires {', '.join(map(repr, missing))}, which manifest {manifest.name!r} "
                "does not enable"
            )
    try:
        return topological_order(graph)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _selection(
    manifest: PipelineManifest,
    configured: dict[str, Stage],
    order: list[str],
    levels: list[int] | None,
    stages: list[str] | None,
) -> set[str]:
    """The stages named by ``stages``, else those of ``levels``, else all (ancestors not added yet)."""
    if stages:
        unknown = [s for s in stages if s not in configured]
        if unknown:
            raise ConfigError(
                f"--stages names {', '.join(map(repr, unknown))}, not enabled in manifest {manifest.name!r}; "
                f"enabled: {', '.join(order)}"
            )
        return set(stages)
    if levels:
        selected = {name for name, st in configured.items() if st.level in levels}
        if not selected:
            raise ConfigError(f"manifest {manifest.name!r} has no stage of level(s) {levels}")
        return selected
    return set(order)


def _with_ancestors(selected: set[str], graph: dict[str, tuple[str, ...]]) -> set[str]:
    """``selected`` closed over the inputs of its stages."""
    selected = set(selected)
    frontier = list(selected)
    while frontier:
        for req in graph[frontier.pop()]:
            if req not in selected:
                selected.add(req)
                frontier.append(req)
    return selected


def compute_fingerprints(stages: dict[str, Stage]) -> dict[str, str]:
    """Fingerprint every stage (``stages`` must be in topological order)."""
    fps: dict[str, str] = {}
    for name, stage in stages.items():
        payload = {
            "name": name,
            "class": f"{type(stage).__module__}.{type(stage).__qualname__}",
            "version": stage.version,
            "params": _jsonable(stage.params()),
            "models": {slot: _model_identity(spec) for slot, spec in sorted(stage.models.items())},
            "prompts": {f: _file_digest(resource_dir("prompts") / f) for f in stage.prompt_files()},
            "inputs": {req: fps[req] for req in stage.inputs()},
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        fps[name] = digest[:20]
    return fps


def engine_versions() -> dict[str, str]:
    """Versions of the engine and the packages that decide its outputs."""
    out = {"grand_engine": grand_engine.__version__, "python": os.sys.version.split()[0]}
    for pkg in (
        "torch",
        "torchvision",
        "transformers",
        "ray",
        "pyarrow",
        "pycocotools",
        "spacy",
        "sentence-transformers",
        "open_clip_torch",
        "segment-anything",
        "vllm",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out
