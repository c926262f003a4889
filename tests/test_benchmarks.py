"""The benchmarks are not run by the test suite (they print measurements), so their imports of the package are
checked here instead: every ``grand_engine`` module and name a benchmark imports, at the top or deferred inside a
function, must exist. A module that moved would otherwise surface only when someone runs the benchmark."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))


def package_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` of every import of ``grand_engine`` in ``path`` (``name`` None for ``import m``)."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "grand_engine"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "grand_engine"
        ):
            found += [(node.lineno, node.module, a.name) for a in node.names]
    return found


def test_package_imports_are_found_in_a_file(tmp_path: Path) -> None:
    sample = tmp_path / "bench_x.py"
    sample.write_text(
        "import json\nimport grand_engine.cost\nfrom grand_engine.cost import DEFAULT_MFU\n"
        "def f():\n    from grand_engine.ovss import windows\n    from . import local\n"
    )
    assert package_imports(sample) == [
        (2, "grand_engine.cost", None),
        (3, "grand_engine.cost", "DEFAULT_MFU"),
        (5, "grand_engine.ovss", "windows"),
    ]


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_package_import_of_a_benchmark_exists(path: Path) -> None:
    missing = []
    for line, module, name in package_imports(path):
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing.append(f"{path.name}:{line}: {module} ({exc})")
            continue
        if name is not None and not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{path.name}:{line}: {module} has no {name}")
    assert not missing, missing
