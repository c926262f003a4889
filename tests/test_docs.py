"""The docs stay true to the code: every stage table's columns are documented in docs/schema.md."""

from __future__ import annotations

import re
from pathlib import Path

from grand_engine.runtime.stage import registered_stages

SCHEMA_DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^### `([a-z0-9_]+)`", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_every_stage_column_is_documented():
    sections = _sections(SCHEMA_DOC.read_text())
    level1_cols = set(re.findall(r"^\| `([a-z_]+)` \|", sections.get("level1", ""), flags=re.M))
    missing = []
    for name, cls in sorted(registered_stages().items()):
        if cls.__module__.startswith("tests."):
            continue
        if name not in sections:
            missing.append(f"section for stage {name!r}")
            continue
        documented = set(re.findall(r"^\| `([a-z_]+)` \|", sections[name], flags=re.M))
        if name == "level2":  # documented as the level-1 columns plus its own
            documented |= level1_cols
        missing += [f"{name}.{col}" for col in cls.schema.names if col not in documented]
    assert not missing, f"undocumented in docs/schema.md: {missing}"
