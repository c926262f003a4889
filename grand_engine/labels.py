"""Label spelling, vocabularies and the person / affordance tables.

Detectors report labels in their vocabulary's own spelling (``wine_glass``, ``sandal_(type_of_shoe)``,
``traffic_light``, ``Frisbee``). The reference compared these strings as they came, so the same concept
counted as different labels in voting, label assignment and affordances (spec §14.43). Here every
label is normalised **once**, by :func:`normalise_label`, when ``level1`` reads the detector tables:

* lower-case, underscores become spaces, runs of whitespace collapse to one space;
* an LVIS parenthetical qualifier is split off into its own field:
  ``sandal_(type_of_shoe)`` → ``Label("sandal", "type of shoe")``. The one LVIS name with text after
  the parenthesis (``monitor_(computer_equipment) computer_monitor``) keeps that text in the qualifier:
  ``Label("monitor", "computer equipment, computer monitor")``;
* hyphens and other punctuation are kept (``bow-tie`` stays ``bow-tie``).

Everything downstream compares the normalised ``name``.
"""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from types import MappingProxyType
from typing import NamedTuple

from grand_engine.resources import data_file

_PAREN = re.compile(r"\(([^()]*)\)")


class Label(NamedTuple):
    """A normalised label: the compared ``name`` and the LVIS ``qualifier`` (``""`` when none)."""

    name: str
    qualifier: str = ""

    @property
    def display(self) -> str:
        """``name (qualifier)``, or just the name."""
        return f"{self.name} ({self.qualifier})" if self.qualifier else self.name


def _collapse(text: str) -> str:
    return " ".join(text.split())


@lru_cache(maxsize=1 << 16)
def normalise_label(raw: str | None) -> Label:
    """Normalise a raw detector label to ``Label(name, qualifier)`` (see the module docstring).

    ``None`` and blank strings give ``Label("", "")``.
    """
    if raw is None:
        return Label("", "")
    text = str(raw).replace("_", " ").lower()
    match = _PAREN.search(text)
    if match is None:
        return Label(_collapse(text.replace("(", " ").replace(")", " ")), "")
    qualifier = _collapse(match.group(1))
    name = _collapse(text[: match.start()])
    trailing = _collapse(text[match.end() :].replace("(", " ").replace(")", " "))
    if trailing:
        if name:
            qualifier = ", ".join(part for part in (qualifier, trailing) if part)
        else:
            name = trailing
    if not name:
        return Label(qualifier, "")
    return Label(name, qualifier)


def label_name(raw: str | None) -> str:
    """Just the normalised name of a raw label."""
    return normalise_label(raw).name


def read_category_file(name: str) -> tuple[str, ...]:
    """The raw lines (vocabulary spelling) of a packaged category list, blank lines skipped."""
    with data_file(name).open(encoding="utf-8") as handle:
        return tuple(line.strip() for line in handle if line.strip())


@cache
def lvis_vocabulary() -> tuple[Label, ...]:
    """The 1,203 LVIS v1 categories, normalised, in file order (names may repeat across qualifiers)."""
    return tuple(normalise_label(raw) for raw in read_category_file("lvis_v1_categories.txt"))


@cache
def coco_vocabulary() -> tuple[Label, ...]:
    """The 80 COCO categories, normalised, in file order."""
    return tuple(normalise_label(raw) for raw in read_category_file("coco_categories.txt"))


@cache
def tag_vocabulary() -> tuple[str, ...]:
    """LVIS then COCO names, normalised and deduplicated in first-seen order (the tagging vocabulary)."""
    seen: dict[str, None] = {}
    for label in (*lvis_vocabulary(), *coco_vocabulary()):
        seen.setdefault(label.name, None)
    return tuple(seen)


# -- person words ---------------------------------------------------------------------------------

PERSON_PAIRS: tuple[tuple[str, str], ...] = (
    ("person", "persons"),
    ("person", "people"),
    ("man", "men"),
    ("woman", "women"),
    ("male", "males"),
    ("female", "females"),
    ("boy", "boys"),
    ("girl", "girls"),
    ("child", "children"),
    ("kid", "kids"),
    ("baby", "babies"),
    ("infant", "infants"),
    ("toddler", "toddlers"),
    ("teenager", "teenagers"),
    ("teen", "teens"),
    ("adolescent", "adolescents"),
    ("youth", "youths"),
    ("adult", "adults"),
    ("senior", "seniors"),
    ("elder", "elders"),
    ("gentleman", "gentlemen"),
    ("lady", "ladies"),
)
"""(singular, plural) person words. The reference's ``person_dict`` (spec step 17) had ``male`` without
``males``, ``females`` without ``female``, ``youth`` without ``youths``, ``elders`` without ``elder`` and
``teen`` without ``teens`` (§14.42); every word here comes with its other number. Its adjective
``elderly`` has no singular/plural pair and is left out."""

PERSON_WORDS: dict[str, str] = {
    **{singular: "person" for singular, _ in PERSON_PAIRS},
    **{plural: "persons" for _, plural in PERSON_PAIRS},
}
"""Person word → ``person`` (singular words) or ``persons`` (plural words); spec step 17."""

GENDER_TO_PERSON: dict[str, str] = {"man": "person", "woman": "person", "men": "person", "women": "person"}
"""The level-1 gender normalisation of object labels (spec step 10b.6): all four words become ``person``."""


def person_normalise(label: str) -> str:
    """Map a person word to ``person``/``persons`` (case and spacing ignored); other labels unchanged."""
    return PERSON_WORDS.get(_collapse(label.lower()), label)


def gender_normalise(label: str) -> str:
    """Map ``man``/``woman``/``men``/``women`` to ``person`` (case and spacing ignored); others unchanged."""
    return GENDER_TO_PERSON.get(_collapse(label.lower()), label)


# -- affordances ----------------------------------------------------------------------------------


class AffordanceCategory(NamedTuple):
    """One affordance category: its name, its description (``None`` when the table has none), its labels."""

    category: str
    description: str | None
    labels: tuple[str, ...]


@cache
def affordance_table() -> tuple[AffordanceCategory, ...]:
    """The affordance categories of ``data/affordance_labels.json``, labels normalised, in file order."""
    path = data_file("affordance_labels.json")
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of {{category, labels}} entries")
    table = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "category" not in entry or not isinstance(entry.get("labels"), list):
            raise ValueError(f"{path}: entry {i} is not a {{category, labels: [...]}} object")
        names = dict.fromkeys(normalise_label(raw).name for raw in entry["labels"])
        names.pop("", None)
        table.append(AffordanceCategory(str(entry["category"]), entry.get("description"), tuple(names)))
    return tuple(table)


@cache
def affordance_index() -> MappingProxyType[str, tuple[int, ...]]:
    """Normalised label → indices into :func:`affordance_table` of the categories that list it."""
    index: dict[str, list[int]] = {}
    for i, category in enumerate(affordance_table()):
        for name in category.labels:
            index.setdefault(name, []).append(i)
    return MappingProxyType({name: tuple(ids) for name, ids in index.items()})
