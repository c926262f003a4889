"""Incremental JSON writers: a record is serialised and written as soon as it is made.

Every writer writes to a temporary name next to its destination and renames it into place on
:meth:`close`, so an interrupted export leaves no half-written file under the final name; :meth:`abort`
removes the temporary file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any

TMP_MARKER = ".tmp-"


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text of ``obj``: UTF-8 as is (``ensure_ascii=False``, like the reference converters), compact."""
    if indent is None:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return json.dumps(obj, ensure_ascii=False, indent=indent, allow_nan=False)


class AtomicText:
    """A text file written under a temporary name and renamed over ``path`` on success."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f"{self.path.name}{TMP_MARKER}{uuid.uuid4().hex}")
        self.fh: IO[str] = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()/abort()
        self.bytes = 0

    def write(self, text: str) -> None:
        self.fh.write(text)

    def close(self) -> int:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)
        self.bytes = self.path.stat().st_size
        return self.bytes

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)


class JsonListWriter(AtomicText):
    """A JSON list written element by element (``[`` … ``]``), one element per line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.count = 0
        self.write("[")

    def add(self, obj: Any) -> None:
        self.write(("\n" if self.count == 0 else ",\n") + dumps(obj))
        self.count += 1

    def close(self) -> int:
        self.write("\n]\n" if self.count else "]\n")
        return super().close()


class JsonLinesWriter(AtomicText):
    """One JSON document per line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.count = 0

    def add(self, obj: Any) -> None:
        self.write(dumps(obj) + "\n")
        self.count += 1


MARKER = ".grand-engine-export"
"""A file :class:`PerImageFilesWriter` leaves in its folder: only such a folder (or an empty one) is replaced."""


class PerImageFilesWriter:
    """One ``<stem>.json`` per image in a folder (the reference converters' layout, indent 2).

    Files go into a temporary sibling folder that replaces ``path`` on :meth:`close`. An existing ``path``
    is replaced only when it is empty or was written by this writer (it holds :data:`MARKER`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and (
            not self.path.is_dir() or (any(self.path.iterdir()) and not (self.path / MARKER).exists())
        ):
            raise FileExistsError(
                f"{self.path} exists and is not an earlier per-image export; choose a new or empty folder"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.path.name}{TMP_MARKER}", dir=self.path.parent))
        (self.tmp / MARKER).write_text("per-image JSON files written by grand-engine export\n")
        self.count = 0
        self.bytes = 0

    def add(self, stem: str, obj: Any) -> None:
        if "/" in stem or stem in ("", ".", ".."):
            raise ValueError(f"unsafe per-image file name {stem!r}")
        target = self.tmp / f"{stem}.json"
        target.write_text(dumps(obj, indent=2), encoding="utf-8")
        self.bytes += target.stat().st_size
        self.count += 1

    def close(self) -> int:
        if self.path.exists():
            old = self.path.with_name(f"{self.path.name}{TMP_MARKER}old-{uuid.uuid4().hex}")
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        return self.bytes

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class CocoWriter:
    """A COCO instances file (``images``, ``annotations``, ``categories``) written without holding it in memory.

    Images and annotations are spooled to two temporary files as they arrive; categories (small) are kept in
    memory and written last; :meth:`close` assembles the final document by copying the spools.
    """

    def __init__(self, path: str | os.PathLike[str], info: dict[str, Any] | None = None) -> None:
        self.out = AtomicText(path)
        self.info = info or {}
        self._images = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._anns = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.categories: dict[str, int] = {}
        self.images = 0
        self.annotations = 0

    def category_id(self, name: str) -> int:
        """The id of category ``name`` (ids 1, 2, … in order of first appearance)."""
        cid = self.categories.get(name)
        if cid is None:
            cid = self.categories[name] = len(self.categories) + 1
        return cid

    def add_image(self, image: dict[str, Any]) -> None:
        self._images.write(("" if self.images == 0 else ",\n") + dumps(image))
        self.images += 1

    def add_annotation(self, ann: dict[str, Any]) -> None:
        self._anns.write(("" if self.annotations == 0 else ",\n") + dumps(ann))
        self.annotations += 1

    def close(self) -> int:
        out = self.out
        out.write('{"info":' + dumps(self.info) + ',\n"images":[\n')
        for spool in (self._images, self._anns):
            spool.seek(0)
            shutil.copyfileobj(spool, out.fh)
            spool.close()
            if spool is self._images:
                out.write('\n],\n"annotations":[\n')
        cats = [{"id": cid, "name": name, "supercategory": ""} for name, cid in self.categories.items()]
        out.write('\n],\n"categories":' + dumps(cats) + "}\n")
        return out.close()

    def abort(self) -> None:
        self._images.close()
        self._anns.close()
        self.out.abort()
