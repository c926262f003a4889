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


def test_every_stage_class_is_declared_as_an_entry_point():
    """A stage class the package defines but does not declare in pyproject.toml cannot be named by a manifest."""
    import tomllib

    from grand_engine.runtime.stage import STAGES

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["grand_engine.stages"]
    for module in _all_stage_modules():
        importlib.import_module(f"grand_engine.stages.{module}")
    defined = {
        name: f"{cls.__module__}:{cls.__qualname__}"
        for name, cls in STAGES.all().items()
        if cls.__module__.startswith("grand_engine.stages.")
    }
    assert declared == defined


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


# -- references to docs/reference.md ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
REFERENCE_DOC = REPO / "docs" / "reference.md"
SCANNED = ("grand_engine", "tests", "benchmarks", "docs", "prompts", "manifests", "README.md")
"""Where references to the reference pipeline may appear."""
SCANNED_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".json", ".toml", ".html", ".js"}

SECTION_SIGN = "\N{SECTION SIGN}"
_SECTION = re.compile(SECTION_SIGN + r"\s?(\d+[a-z]?(?:\.\d+)?)")
_SLASH_TAIL = re.compile(r"(?:/\d+)+")  # "<s>14.34/35/39" → defects 34, 35, 39
_ITEM_TAIL = re.compile(r"\s+items?\s+(\d+(?:\s*(?:,\s*and|,|and)\s*\d+)*)")  # "<s>14 items 17, 38 and 39"
_FILE_BEFORE = re.compile(r"([\w./-]+\.md)`?\s*\(?$")  # "models.md <s>8": a section of another file
_STEP = re.compile(r"\b(?:spec|GranD)\s+steps?\s+(\d+[ab]?)(?:\.\d+)?((?:\s*(?:–|-|,|and)\s*\d+[ab]?)*)")
_OUTSIDE_NOTES = re.compile(r"\b(?:models\.md|platform_notes(?:\.md)?|DESIGN\.md|grand_reference\.md)\b")
"""Notes that are not in this repository: the code must state the fact itself or cite docs/reference.md."""


def section_refs(line: str) -> list[tuple[str, str | None]]:
    """The "§" references of one line as (section, other file or None); a range "§4.2–§4.3" gives both ends."""
    refs: list[tuple[str, str | None]] = []
    for match in _SECTION.finditer(line):
        section = match.group(1)
        before = _FILE_BEFORE.search(line[: match.start()])
        other = before.group(1) if before and Path(before.group(1)).name != REFERENCE_DOC.name else None
        refs.append((section, other))
        tail = line[match.end() :]
        major = section.split(".")[0]
        if "." in section and (slash := _SLASH_TAIL.match(tail)):
            refs += [(f"{major}.{n}", other) for n in slash.group(0).strip("/").split("/")]
        elif "." not in section and (items := _ITEM_TAIL.match(tail)):
            refs += [(f"{major}.{n}", other) for n in re.findall(r"\d+", items.group(1))]
    return refs


def step_refs(line: str) -> list[str]:
    """The reference steps a line cites as "spec step N" / "GranD steps N–M" (sub-items like "10b.2" → "10b")."""
    steps: list[str] = []
    for match in _STEP.finditer(line):
        steps.append(match.group(1))
        steps += re.findall(r"\d+[ab]?", match.group(2))
    return steps


def reference_headings() -> tuple[set[str], set[str]]:
    """(section numbers, step numbers) of the headings of docs/reference.md."""
    sections: set[str] = set()
    steps: set[str] = set()
    for line in REFERENCE_DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            continue
        title = line.lstrip("#").strip()
        if number := re.match(r"(\d+[a-z]?(?:\.\d+)?)(?:\.|\s)", title):
            sections.add(number.group(1))
        steps.update(re.findall(r"\bSteps?\s+(\d+[ab]?)\b", title))
    return sections, steps


def _scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = REPO / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [
            p
            for p in candidates
            if p.suffix in SCANNED_SUFFIXES and "__pycache__" not in p.parts and p != Path(__file__).resolve()
        ]
    return files


def test_reference_parsers_read_every_citation_form():
    assert section_refs("spec §4.1 step 2: nd < 0.1") == [("4.1", None)]
    assert section_refs("(spec §4.2–§4.3)") == [("4.2", None), ("4.3", None)]
    assert section_refs("(spec §8 end, §14.34/35/39/41)") == [
        ("8", None),
        ("14.34", None),
        ("14.35", None),
        ("14.39", None),
        ("14.41", None),
    ]
    assert section_refs("(GranD steps 21–22, §7; §14 items 17, 38, 39 fixed)") == [
        ("7", None),
        ("14", None),
        ("14.17", None),
        ("14.38", None),
        ("14.39", None),
    ]
    assert section_refs("§13a, §14 item 41") == [("13a", None), ("14", None), ("14.41", None)]
    assert section_refs("either serves (models.md §8).") == [("8", "models.md")]
    assert section_refs("Sources (`platform_notes.md` §4):") == [("4", "platform_notes.md")]
    assert section_refs("see docs/reference.md §0.3") == [("0.3", None)]
    assert step_refs("(spec steps 10a and 10b), GranD steps 14b–17, spec step 10b.2; step 3") == [
        "10a",
        "10b",
        "14b",
        "17",
        "10b",
    ]


def test_every_reference_resolves_to_a_heading_of_docs_reference_md():
    """Every "§N" and "spec/GranD step N" in the repository names a heading of docs/reference.md, and nothing
    cites notes that are not in the repository."""
    sections, steps = reference_headings()
    assert {"0.3", "4.1", "13a", "14", "14.1", "14.53"} <= sections and {"1", "10b", "20a", "23"} <= steps
    files = _scanned_files()
    names = {p.name for p in files} | {p.name for p in REPO.iterdir()}
    unresolved: list[str] = []
    found = 0
    for path in files:
        rel = path.relative_to(REPO)
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            for section, other in section_refs(line):
                found += 1
                if other is not None:
                    unresolved.append(f"{rel}:{number}: §{section} of {other}, a file outside docs/reference.md")
                elif section not in sections:
                    unresolved.append(f"{rel}:{number}: §{section} is not a heading of docs/reference.md")
            for step in step_refs(line):
                found += 1
                if step not in steps and f"{step}a" not in steps:
                    unresolved.append(f"{rel}:{number}: step {step} has no heading in docs/reference.md")
            if outside := _OUTSIDE_NOTES.search(line):
                if outside.group(0) not in names:
                    unresolved.append(f"{rel}:{number}: cites {outside.group(0)}, which is not in the repository")
    assert found > 0, "no reference found: the scan itself is broken"
    assert not unresolved, "unresolved references:\n" + "\n".join(unresolved)
