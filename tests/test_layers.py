"""No upward imports: every module imports only from its own floor of the package or below.

The floors (docs/architecture.md, "Registries, plugins and input kinds") keep the lower parts of the engine usable
without the higher ones: the runtime finds stages through the registry instead of importing them, exports know no
stage class, and only the command line sits on top. Function-local imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "grand_engine"

FLOORS = (
    ("registry", "resources", "progress"),
    ("config", "schema", "io", "sources", "geometry", "labels", "validate"),
    ("models", "ovss", "phrases"),
    ("runtime",),
    ("grandf",),
    ("stages", "testing"),
    ("explore", "quality", "cost", "demo", "demo_video", "demo_sources"),
    ("cli",),
)


def floor_of(module: str) -> int | None:
    """The floor of a ``grand_engine`` module (``None`` for other packages and the package root)."""
    parts = module.split(".")
    if parts[0] != "grand_engine" or len(parts) == 1:
        return None  # the root's public names are imported lazily by the root itself
    for level, names in enumerate(FLOORS):
        if parts[1] in names:
            return level
    raise AssertionError(f"{module} belongs to no floor: add its top-level name to FLOORS")


def imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute import of ``path`` with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


def test_no_module_imports_a_higher_floor():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        own = floor_of(module)
        if own is None:
            continue
        for target, line in imports(path):
            level = floor_of(target)
            if level is not None and level > own:
                upward.append(f"{rel}.py:{line}: {module} (floor {own}) imports {target} (floor {level})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_floor_rule_catches_an_upward_import(tmp_path):
    assert floor_of("grand_engine.runtime.plan") < floor_of("grand_engine.stages.depth")
    assert floor_of("grand_engine") is None and floor_of("numpy") is None
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from grand_engine.stages import depth\n")
    assert imports(module) == [("grand_engine.stages", 2)]
