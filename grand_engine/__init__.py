"""grand-engine: the GranD grounded vision-language annotation pipeline as a resumable data engine.

The public API, importable from the package itself (each name is imported on first use, so ``import grand_engine``
stays cheap):

* running: :func:`run` (the driver behind ``grand-engine run``), :class:`RunObserver`, :func:`load_manifest`;
* writing a stage: :class:`Stage`, :class:`LLMStage`, :class:`Resources`, :class:`ErrorRecord`,
  :class:`StageResult`, :class:`UnitInput`, :func:`collaborator`; testing it: :mod:`grand_engine.testing`;
* plugins: the registries :data:`STAGES`, :data:`MODEL_FAMILIES`, :data:`EXPORT_FORMATS` and :data:`INPUT_KINDS`,
  filled by the entry-point groups ``grand_engine.stages``, ``grand_engine.model_families``, ``grand_engine.exports``
  and ``grand_engine.inputs``; the base classes :class:`Adapter`, :class:`ExportFormat` and :class:`InputKind`.
  ``docs/plugins.md`` walks through a plugin package.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "run": "grand_engine.runtime.run",
    "RunObserver": "grand_engine.runtime.run",
    "RunSummary": "grand_engine.runtime.run",
    "load_manifest": "grand_engine.config",
    "Stage": "grand_engine.runtime.stage",
    "Resources": "grand_engine.runtime.stage",
    "ErrorRecord": "grand_engine.runtime.stage",
    "StageResult": "grand_engine.runtime.stage",
    "UnitInput": "grand_engine.runtime.stage",
    "collaborator": "grand_engine.runtime.stage",
    "STAGES": "grand_engine.runtime.stage",
    "LLMStage": "grand_engine.stages.llm_common",
    "Adapter": "grand_engine.models.base",
    "MODEL_FAMILIES": "grand_engine.models.base",
    "ExportFormat": "grand_engine.grandf.formats",
    "EXPORT_FORMATS": "grand_engine.grandf.formats",
    "InputKind": "grand_engine.io.inputs",
    "INPUT_KINDS": "grand_engine.io.inputs",
    "Registry": "grand_engine.registry",
    "PluginError": "grand_engine.registry",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'grand_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
