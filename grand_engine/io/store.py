"""The output store: every file the engine writes goes through here.

``OutputStore`` wraps a local folder or an object-store URI (``s3://bucket/prefix``, via pyarrow
filesystems). Writes are atomic: on a local disk the data goes to a temporary name in the same folder,
is flushed and fsynced, then renamed over the final name; an object store has no rename, so the final
key is written with one PUT of the complete, already serialised bytes (readers never see a partial
object; above pyarrow's part size, 10 MB, a multipart upload that is published only when it completes).
A crash therefore leaves either the complete file or none, plus at worst an orphan temporary file that
:meth:`remove_orphans` deletes at the next start (object stores have none).

Object-store URIs go to ``pyarrow.fs.FileSystem.from_uri``: credentials and endpoint come from the usual
AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for S3-compatible servers) or from query options
(``s3://bucket/prefix?endpoint_override=host:port&scheme=http``).
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARKER = ".tmp-"
ROW_GROUP_SIZE = 256
"""Rows per Parquet row group. A unit file holds at most ``unit_size`` rows (128 by default), so one
unit is one row group; set explicitly because tiny default row groups make reads many times slower."""


class StoreError(OSError):
    """An output file could not be written or read; the message names the path."""


class OutputStore:
    """Atomic reads and writes of relative paths under one output root (local or ``s3://``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        text = str(root)
        self.uri = text
        if "://" in text and not text.startswith("file://"):
            import pyarrow.fs as pafs

            self._fs, base = pafs.FileSystem.from_uri(_object_store_uri(text))
            self._base = base.rstrip("/")
            self.local_root: Path | None = None
        else:
            self._fs = None
            self.local_root = Path(text.removeprefix("file://")).expanduser().resolve()
            self._base = str(self.local_root)

    # -- paths ----------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.local_root is not None

    def full(self, rel: str) -> str:
        return f"{self._base}/{rel}" if rel else self._base

    def __repr__(self) -> str:
        return f"OutputStore({self.uri!r})"

    # -- writes ---------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically, creating parent folders."""
        target = self.full(rel)
        try:
            if self._fs is None:
                parent = os.path.dirname(target)
                os.makedirs(parent, exist_ok=True)
                tmp = f"{target}{TMP_MARKER}{uuid.uuid4().hex}"
                try:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            else:
                # `data` is complete before the stream opens, and with delayed open a small object is sent
                # as a single PutObject when the stream closes: the key appears whole or not at all.
                with self._fs.open_output_stream(target) as out:
                    out.write(data)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from exc

    def write_table(self, rel: str, table: pa.Table) -> int:
        """Write ``table`` as Parquet (zstd, explicit row-group size) atomically; return its size in bytes."""
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=ROW_GROUP_SIZE, compression="zstd")
        data = buf.getvalue()
        self.write_bytes(rel, data)
        return len(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    # -- reads ----------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        target = self.full(rel)
        try:
            if self._fs is None:
                with open(target, "rb") as fh:
                    return fh.read()
            with self._fs.open_input_stream(target) as src:
                return src.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if self._fs is not None and _is_missing(exc):
                raise FileNotFoundError(target) from exc
            raise StoreError(f"cannot read {target}: {exc}") from exc

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def read_table(self, rel: str) -> pa.Table:
        return pq.read_table(pa.BufferReader(self.read_bytes(rel)))

    def exists(self, rel: str) -> bool:
        if self._fs is None:
            return os.path.exists(self.full(rel))
        import pyarrow.fs as pafs

        return self._fs.get_file_info(self.full(rel)).type != pafs.FileType.NotFound

    def delete(self, rel: str) -> bool:
        """Delete one file; return whether it existed."""
        target = self.full(rel)
        if self._fs is None:
            try:
                os.unlink(target)
                return True
            except FileNotFoundError:
                return False
        if not self.exists(rel):
            return False
        self._fs.delete_file(target)
        return True

    def list_files(self, rel_dir: str, suffix: str = "") -> Iterator[str]:
        """Relative paths of every file below ``rel_dir`` ending in ``suffix`` (recursive, sorted)."""
        base = self.full(rel_dir)
        if self._fs is None:
            if not os.path.isdir(base):
                return iter(())
            found = []
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if name.endswith(suffix):
                        found.append(os.path.relpath(os.path.join(dirpath, name), self._base))
            return iter(sorted(found))
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        infos = self._fs.get_file_info(selector)
        prefix = self._base + "/"
        return iter(
            sorted(i.path[len(prefix) :] for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))
        )

    def list_sizes(self, rel_dir: str) -> dict[str, int]:
        """Every file below ``rel_dir`` (recursive) with its size in bytes, keyed by relative path."""
        return dict(zip(*self.listing(rel_dir), strict=True))

    def listing(
        self, rel_dir: str, read_size: Callable[[str, int], bool] | None = None
    ) -> tuple[list[str], list[int]]:
        """The relative paths of every file below ``rel_dir`` (recursive) and their sizes: one directory walk on a
        local disk, one paginated listing on an object store (never one request per file).

        An object store's listing carries the sizes. A local disk needs one ``stat`` per file for them, so there
        ``read_size(folder, folder_mtime_ns)`` may decline a folder's sizes (reported as -1): the planner declines
        folders unchanged since their records were compacted, as any file created, renamed or deleted in a folder
        changes its modification time."""
        base = self.full(rel_dir)
        cut = len(self._base) + 1
        paths: list[str] = []
        sizes: list[int] = []
        if self._fs is None:
            stack = [base]
            while stack:
                folder = stack.pop()
                try:
                    entries = list(os.scandir(folder))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                with_size = True
                if read_size is not None:
                    try:
                        with_size = read_size(folder[cut:], os.stat(folder).st_mtime_ns)
                    except FileNotFoundError:
                        continue
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif TMP_MARKER not in entry.name:
                        paths.append(entry.path[cut:])
                        sizes.append(entry.stat(follow_symlinks=False).st_size if with_size else -1)
            return paths, sizes
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        files = [info for info in self._fs.get_file_info(selector) if info.is_file]  # `is_file`: no enum per entry
        return [info.path[cut:] for info in files], [info.size for info in files]

    def subfolders(self, rel_dir: str) -> dict[str, int] | None:
        """The folders directly below ``rel_dir`` with their modification times (ns), on a local disk (one
        ``scandir``); ``None`` on an object store, which has no folders of its own."""
        if self._fs is not None:
            return None
        try:
            with os.scandir(self.full(rel_dir)) as entries:
                return {e.name: e.stat(follow_symlinks=False).st_mtime_ns for e in entries if e.is_dir()}
        except (FileNotFoundError, NotADirectoryError):
            return {}

    def mtime_ns(self, rel: str) -> int | None:
        """A file's modification time (local disks; ``None`` on object stores or when it does not exist)."""
        if self._fs is not None:
            return None
        try:
            return os.stat(self.full(rel)).st_mtime_ns
        except FileNotFoundError:
            return None

    def set_mtime_ns(self, rel: str, mtime_ns: int) -> None:
        """Give a local file the modification time ``mtime_ns`` (nothing on object stores)."""
        if self._fs is None:
            os.utime(self.full(rel), ns=(mtime_ns, mtime_ns))

    def delete_tree(self, rel_dir: str) -> None:
        """Delete ``rel_dir`` and everything below it (nothing when it does not exist)."""
        target = self.full(rel_dir)
        if self._fs is None:
            shutil.rmtree(target, ignore_errors=True)
            return
        import pyarrow.fs as pafs

        if self._fs.get_file_info(target).type == pafs.FileType.Directory:
            self._fs.delete_dir(target)

    def remove_orphans(self) -> int:
        """Delete temporary files left by a crash mid-write (local stores only); return how many."""
        if self._fs is not None or not os.path.isdir(self._base):
            return 0
        removed = 0
        for dirpath, _dirs, files in os.walk(self._base):
            for name in files:
                if TMP_MARKER in name:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
        return removed

    def check_writable(self) -> None:
        """Fail early, naming the path, when the output root cannot be written."""
        probe = f"_probe{TMP_MARKER}{uuid.uuid4().hex}"
        self.write_bytes(probe, b"")
        self.delete(probe)


def _object_store_uri(uri: str) -> str:
    """``uri`` with S3 delayed open switched on (unless the user set it): pyarrow then writes an object
    below its part size with one PutObject instead of a three-request multipart upload."""
    if not uri.startswith("s3://") or "allow_delayed_open=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}allow_delayed_open=true"


def _is_missing(exc: OSError) -> bool:
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text or "nosuchkey" in text
