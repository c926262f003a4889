"""Named registries of what a package can add to grand-engine: stages, model families, export formats, inputs.

A :class:`Registry` maps a name to an object. Objects arrive two ways:

* **in code** — a stage class registers itself when it is defined (``Stage.__init_subclass__``), an adapter class
  likewise, and anything can call :meth:`Registry.register`;
* **from entry points** — a distribution declares ``[project.entry-points."<group>"]`` in its ``pyproject.toml``
  (``name = "package.module:Object"``). The registry loads an entry point only when a name it does not hold is
  looked up, or when the full list is asked for, so start-up imports nothing it does not use. grand-engine declares
  its own stages, model families and export formats this way, so a plugin package is written exactly like the
  built-ins (``docs/plugins.md`` has a worked example).

This module is the lowest floor of the package: it imports nothing from grand-engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

T = TypeVar("T")

STAGE_GROUP = "grand_engine.stages"
MODEL_FAMILY_GROUP = "grand_engine.model_families"
EXPORT_FORMAT_GROUP = "grand_engine.exports"
INPUT_KIND_GROUP = "grand_engine.inputs"


class PluginError(RuntimeError):
    """An entry point could not be loaded, or loaded something of the wrong kind."""


class Registry(Generic[T]):
    """Objects of one kind by name, filled in code and lazily from the entry-point group ``group``.

    ``check`` validates what an entry point loads (raise ``TypeError`` with a reason); ``kind`` names the objects
    in messages ("stage", "model family", …).
    """

    def __init__(self, kind: str, group: str, check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._check = check
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None
        self._lock = threading.RLock()

    # -- filling ---------------------------------------------------------------------------------------------
    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name`` (a later registration of the same name replaces the earlier one)."""
        if not name:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        with self._lock:
            self._items[name] = obj
        return obj

    def _declared(self) -> dict[str, metadata.EntryPoint]:
        """The entry points of this registry's group, by name (read once per process)."""
        if self._entry_points is None:
            found: dict[str, metadata.EntryPoint] = {}
            for ep in metadata.entry_points(group=self.group):
                found.setdefault(ep.name, ep)  # the first distribution on sys.path wins, as for imports
            self._entry_points = found
        return self._entry_points

    def _load(self, name: str) -> T | None:
        ep = self._declared().get(name)
        if ep is None:
            return None
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported the same way
            dist = getattr(ep.dist, "name", "?")
            raise PluginError(
                f"{self.kind} {name!r} is declared by the package {dist!r} as {ep.value!r}, but loading it failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if self._check is not None:
            try:
                self._check(name, obj)
            except TypeError as exc:
                raise PluginError(
                    f"entry point {ep.value!r} ({self.group}) is not a valid {self.kind}: {exc}"
                ) from exc
        with self._lock:
            # Loading the module may already have registered the object (a stage class registers itself).
            return self._items.setdefault(name, obj)

    # -- lookups ---------------------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The object registered as ``name``, loading its entry point if needed; ``KeyError`` lists the names."""
        with self._lock:
            if name in self._items:
                return self._items[name]
            obj = self._load(name)
        if obj is None:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}")
        return obj

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._items or name in self._declared())

    def names(self) -> list[str]:
        """Every name, registered or declared, without loading anything."""
        return sorted(set(self._items) | set(self._declared()))

    def all(self) -> dict[str, T]:
        """Every object by name (loads every declared entry point)."""
        for name in self._declared():
            if name not in self._items:
                self._load(name)
        return dict(sorted(self._items.items()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def forget(self, name: str) -> None:
        """Remove ``name`` (tests that register temporary objects clean up with this)."""
        with self._lock:
            self._items.pop(name, None)
