"""The docs stay true to the code: every stage table's columns are documented in docs/schema.md."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from grand_engine.runtime.stage import registered_stages

SCHEMA_DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^### `([a-z0-9_]+)`", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _all_stage_modules() -> list[str]:
    import grand_engine.stages

    return sorted(m.name for m in pkgutil.iter_modules(grand_engine.stages.__path__))


def test_the_stages_package_registers_every_stage_module():
    """`grand_engine.stages` must import every stage module, or a manifest cannot name its stages."""
    import grand_engine.stages

    source = Path(grand_engine.stages.__file__).read_text()
    imported = set(re.findall(r"\b([a-z0-9_]+)\b", source.split("import", 2)[-1]))
    helpers = {"llm_common"}  # shared code, no stage of its own
    assert [m for m in _all_stage_modules() if m not in imported and m not in helpers] == []


def test_every_stage_column_is_documented():
    for module in _all_stage_modules():
        importlib.import_module(f"grand_engine.stages.{module}")
    sections = _sections(SCHEMA_DOC.read_text())
    missing = []
    for name, cls in sorted(registered_stages().items()):
        if cls.__module__.startswith("tests."):
            continue
        if name not in sections:
            missing.append(f"section for stage {name!r}")
            continue
        documented = set(re.findall(r"^\| `([a-z_]+)` \|", sections[name], flags=re.M))
        missing += [f"{name}.{col}" for col in cls.schema.names if col not in documented]
    assert not missing, f"undocumented in docs/schema.md: {missing}"
