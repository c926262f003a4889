"""Reading the public RefCOCOg refs pickle without running code from it.

``pickle.load`` executes whatever a pickle asks for: a ``GLOBAL``/``STACK_GLOBAL`` opcode names any importable
callable (``os.system``) and ``REDUCE`` calls it. The refs file (``refs(umd).p``) is a Python 2 pickle of plain
data — a list of dicts of strings, numbers and lists — which needs no global at all. :class:`RestrictedUnpickler`
therefore refuses every global (:class:`UnsafePickleError` names it), so only the opcodes that build plain
containers, strings, bytes, numbers, booleans and ``None`` can produce anything. Python 2 ``str`` objects are
decoded as Latin-1 (every byte maps to one character; the refs' text is ASCII). The result is checked to be plain
data throughout before it is returned.

The same loaders read a JSON copy (a JSON list) or a Parquet copy (one row per ref) of the refs: :func:`load_refs`
picks the reader from the file's first bytes, not from its name.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

PICKLE_MAGIC = b"\x80"
"""First byte of a protocol-2+ pickle (the refs file is protocol 2)."""

ALLOWED_TYPES = (dict, list, tuple, str, bytes, int, float, bool, type(None))
"""What a refs file may contain, at any depth."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global (a class or function): refused, nothing was called."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only: every ``find_class`` is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(
            f"the pickle asks for the global {module}.{name}; only plain containers, strings and numbers are "
            "accepted (convert the file to JSON with a trusted tool if it really needs classes)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("the pickle uses persistent ids; only plain data is accepted")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; the result is checked to be plain data throughout."""
    value = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    _check_plain(value, "pickle")
    return value


def _check_plain(value: Any, where: str) -> None:
    """Raise :class:`UnsafePickleError` unless ``value`` is plain data throughout. Each container is visited once
    (a pickle can share one list many times, or make it contain itself, cheaply)."""
    stack = [(value, where)]
    seen: set[int] = set()
    while stack:
        item, path = stack.pop()
        if not isinstance(item, ALLOWED_TYPES):
            raise UnsafePickleError(f"{path}: a {type(item).__name__}, not plain data")
        if isinstance(item, (dict, list, tuple)):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, dict):
            stack.extend((v, f"{path}[{k!r}]") for k, v in item.items())
            stack.extend((k, f"{path} key") for k in item)
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """The refs of a RefCOCOg refs file: the pickle (restricted), a JSON list or a Parquet table of refs.

    Raises :class:`UnsafePickleError` for a pickle that needs code, ``ValueError`` naming the file for anything
    that is not a list of ref dicts.
    """
    path = Path(path)
    data = path.read_bytes()
    head = data[:4]
    if head.startswith(PICKLE_MAGIC) or head[:1] in (b"(", b"]", b"}"):
        refs = safe_loads(data)
    elif head == b"PAR1":
        import pyarrow.parquet as pq  # deferred: only Parquet copies need it

        refs = pq.read_table(path).to_pylist()
    else:
        try:
            refs = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: neither a pickle, a Parquet file nor JSON ({exc})") from None
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{path}: expected a list of refs (dicts), got {type(refs).__name__}")
    return refs
