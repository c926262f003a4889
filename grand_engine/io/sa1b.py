"""SA-1B input: list shards, index their members, read bytes by locator. Nothing is ever extracted.

A shard is either an SA-1B tar file (``sa_000000.tar`` holding ``sa_<n>.jpg`` + ``sa_<n>.json``
pairs) or a folder of images (each optionally with a same-stem ``.json``). :func:`index_shard`
scans tar headers only, seeking past the data, and records for each image where its bytes and its
annotation's bytes lie (:class:`Locator`); stages later read them with :func:`read_locator`.
Member names are only used as keys: no path from inside a tar is ever opened or created on disk.

Bad members are normal input. They become :class:`Member` entries with ``error_type`` set:

``MissingAnnotation``  image without its ``.json`` (tar shards only; in a folder the JSON is optional)
``MissingImage``       ``.json`` without its image (tar shards only; stray JSON in a folder is ignored)
``UnsafeMemberName``   absolute name, a ``..`` component, a name longer than 4096 characters, or a
                       long-name/pax header block over 1 MiB (skipped unread, see below)
``DuplicateMember``    second and later image (or JSON) with an already seen id
``NotARegularFile``    symlink, hard link, device or sparse member with an image/JSON name (never followed)
``TruncatedShard``     member data past the end of the file, a header cut off at the end, or no end-of-archive
                       marker (the file ends after a complete member: a cut at a member boundary); the
                       row names the shard and how many members were read before the end
``CorruptShard``       a garbled header: scanning stops there, earlier members stay usable
``UnreadableShard``    the file is empty or not an (uncompressed) tar at all
``EmptyShard``         a valid tar without a single image or annotation member (said once, by one row)

Unrelated members (README, ``.txt``, directories, other extensions) are ignored silently.

Hostile headers cannot make indexing expensive: :mod:`tarfile` reads a GNU long-name/long-link or pax
header block whole into memory, so before each member the chain of such blocks is measured from the raw
header bytes, and a member whose block declares more than :data:`MAX_META_HEADER_BYTES` is skipped
without reading the block (an ``UnsafeMemberName`` entry with id ``<shard>@<byte offset>``); scanning
goes on after it. Names that are merely long (up to that limit) are clipped in ids and messages.
"""

from __future__ import annotations

import glob as globlib
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "ANNOTATION_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "Locator",
    "LocatorReader",
    "Member",
    "ShardIndex",
    "ShardReadError",
    "index_shard",
    "list_shards",
    "read_locator",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
MAX_META_HEADER_BYTES = 1 << 20
"""Largest GNU long-name/long-link or pax header block that is read (1 MiB; SA-1B names are ~15 bytes)."""
INDEX_FORMAT = 2
"""Version of the indexing rules, stored in :meth:`ShardIndex.to_json`. A cached index written under other
rules (version 1 had no end-of-archive and empty-shard rows) is refused by :meth:`ShardIndex.from_json`, so a
cache of it is rebuilt instead of trusted."""
MAX_NAME_CHARS = 4096
"""Longest accepted member name (Linux ``PATH_MAX``); longer names become ``UnsafeMemberName`` entries."""
_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, b"X")
ANNOTATION_EXTENSIONS = (".json",)
_COMPRESSED_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))


class ShardReadError(OSError):
    """A locator points outside its file (the file shrank or was truncated)."""


@dataclass(frozen=True)
class Locator:
    """Where a member's bytes are: ``size`` bytes at ``offset`` of ``source``."""

    source: str  # path of the tar file or of the plain image/json file
    offset: int  # byte offset of the data inside `source` (0 for plain files)
    size: int  # byte length


@dataclass(frozen=True)
class Member:
    """One image of a shard (or one entry that cannot be processed, with ``error_type`` set)."""

    image_id: str  # stem of the image's base name, e.g. "sa_1"
    file_name: str  # e.g. "sa_1.jpg" (base name)
    image: Locator | None
    annotation: Locator | None  # the same-stem .json
    error_type: str | None = None  # set when this entry cannot be processed
    error: str | None = None  # human message naming the member and the reason
    # Further data of the element by role, for input kinds with more than one annotation file per element (a video's
    # "auto" masklets next to its "manual" ones); empty for SA-1B.
    extra: dict[str, Locator] = field(default_factory=dict, hash=False)

    @property
    def ok(self) -> bool:
        return self.error_type is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Member:
        def loc(v: dict[str, Any] | None) -> Locator | None:
            return None if v is None else Locator(str(v["source"]), int(v["offset"]), int(v["size"]))

        return cls(
            image_id=d["image_id"],
            file_name=d["file_name"],
            image=loc(d.get("image")),
            annotation=loc(d.get("annotation")),
            error_type=d.get("error_type"),
            error=d.get("error"),
            extra={str(k): loc(v) for k, v in (d.get("extra") or {}).items()},
        )


@dataclass
class ShardIndex:
    """The members of one shard in tar order (folders: sorted file names)."""

    shard: str  # shard name: tar file stem ("sa_000000") or folder name
    path: str  # absolute path
    kind: str  # "tar" | "folder"
    size: int  # identity of the source, for caching/fingerprints
    mtime_ns: int
    members: list[Member] = field(default_factory=list)

    @property
    def good(self) -> list[Member]:
        """Members without an error."""
        return [m for m in self.members if m.error_type is None]

    @property
    def errors(self) -> list[Member]:
        """Members with an error."""
        return [m for m in self.members if m.error_type is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "shard": self.shard,
            "path": self.path,
            "kind": self.kind,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "members": [m.to_json() for m in self.members],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ShardIndex:
        """The index written by :meth:`to_json`; ``ValueError`` when it was made under other indexing rules."""
        if d.get("format") != INDEX_FORMAT:
            raise ValueError(f"shard index format {d.get('format')!r}, expected {INDEX_FORMAT}: index the shard again")
        return cls(
            shard=d["shard"],
            path=d["path"],
            kind=d["kind"],
            size=int(d["size"]),
            mtime_ns=int(d["mtime_ns"]),
            members=[Member.from_json(m) for m in d["members"]],
        )


# -- listing ---------------------------------------------------------------------------------------
def _has_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _expand_dir(folder: Path, is_member: Callable[[str], bool] = _is_image_name) -> list[Path]:
    tars = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(".tar"))
    if tars:
        return tars
    if any(p.is_file() and is_member(p.name) for p in folder.iterdir()):
        return [folder]
    return []


def list_shards(
    specs: Sequence[str | Path], is_member: Callable[[str], bool] = _is_image_name, what: str = "image"
) -> list[Path]:
    """Resolve shard specs to absolute shard paths, sorted and deduplicated.

    A spec is a ``.tar`` file, a folder holding ``*.tar`` files (those tars), a folder of images
    (the folder itself is one shard), or a glob of any of these. A spec that matches nothing raises
    :class:`FileNotFoundError` naming it; a plain file that is not a ``.tar`` raises ``ValueError``.
    ``is_member`` tells the file names that make a folder a shard (another input kind's, e.g. videos) and
    ``what`` names them in messages.
    """
    if isinstance(specs, (str, Path)):
        specs = [specs]
    found: set[Path] = set()
    for spec in specs:
        text = os.path.expanduser(str(spec))
        if _has_glob(text):
            matches = sorted(globlib.glob(text, recursive=True))
            hits: list[Path] = []
            for m in matches:
                p = Path(m)
                if p.is_dir():
                    hits.extend(_expand_dir(p, is_member))
                elif p.is_file() and p.name.lower().endswith(".tar"):
                    hits.append(p)
            if not hits:
                raise FileNotFoundError(f"shard spec {str(spec)!r} matches no .tar file or {what} folder")
            found.update(h.resolve() for h in hits)
            continue
        p = Path(text)
        if p.is_dir():
            hits = _expand_dir(p, is_member)
            if not hits:
                raise FileNotFoundError(f"shard spec {str(spec)!r}: the folder holds no .tar files and no {what}s")
            found.update(h.resolve() for h in hits)
        elif p.is_file():
            if not p.name.lower().endswith(".tar"):
                raise ValueError(f"shard spec {str(spec)!r} is a file but not a .tar shard")
            found.add(p.resolve())
        else:
            raise FileNotFoundError(f"shard spec {str(spec)!r} does not exist")
    return sorted(found, key=str)


# -- indexing --------------------------------------------------------------------------------------
def index_shard(path: str | Path) -> ShardIndex:
    """Index a tar shard (headers only) or an image folder; see the module docstring for errors."""
    p = Path(path)
    if p.is_dir():
        return _index_folder(p.resolve())
    if not p.is_file():
        raise FileNotFoundError(f"shard {str(path)!r} does not exist")
    return _index_tar(p.resolve())


def _split_name(name: str) -> tuple[str, str, str] | None:
    """(base name, stem, kind) of a member name, kind "image" | "json"; None for unrelated names."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    lower = base.lower()
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        return None
    if lower.endswith(IMAGE_EXTENSIONS):
        return base, stem, "image"
    if lower.endswith(ANNOTATION_EXTENSIONS):
        return base, stem, "json"
    return None


def _normalise(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _is_unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


@dataclass
class _Entry:
    name: str  # normalised member name
    base: str
    stem: str
    kind: str  # "image" | "json"
    loc: Locator | None
    problem: tuple[str, str] | None = None  # (error_type, message) found while scanning


SplitName = Callable[[str], "tuple[str, str, str] | None"]
"""``(base name, stem, kind)`` of a member name, or None for an unrelated member (see :func:`_split_name`)."""


def _index_tar(
    path: Path,
    split: SplitName | None = None,
    pair: Callable[..., list[Member]] | None = None,
    related: str = "an image or an annotation",
) -> ShardIndex:
    """Index a tar's members: ``split`` classifies member names (default: SA-1B images and JSONs) and ``pair``
    turns the classified entries into members (default: :func:`_pair`, called as ``pair(entries, shard=…,
    strict=True, tail=…)``); another input kind passes its own. ``related`` names the members it looks for in the
    ``EmptyShard`` message."""
    split = split or _split_name
    pair = pair or _pair
    stat = path.stat()
    shard = path.stem
    index = ShardIndex(shard=shard, path=str(path), kind="tar", size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    entries: list[_Entry] = []
    tail: Member | None = None
    with open(path, "rb") as f:
        head = f.read(6)
        for magic, what in _COMPRESSED_MAGIC:
            if head.startswith(magic):
                index.members.append(
                    _shard_error(
                        shard, 0, "UnreadableShard", f"{path}: {what}-compressed tar; shards must be plain tar"
                    )
                )
                return index
        start, skipped = _skip_hostile_headers(f, path, 0, stat.st_size)
        f.seek(start)
        try:
            if start >= stat.st_size and skipped:
                raise tarfile.ReadError("nothing after the skipped members")
            tf = tarfile.open(fileobj=f, mode="r:")
        except tarfile.ReadError as exc:
            if skipped:
                index.members.extend(skipped)
                if start > stat.st_size:
                    index.members.append(
                        _shard_error(shard, start, "TruncatedShard", f"{path}: the file ends inside a skipped member")
                    )
                elif start == stat.st_size:  # the last skipped member ends exactly where the file does
                    index.members.append(_no_end_marker(path, shard, stat.st_size, len(skipped)))
                return index
            if stat.st_size == 0:
                msg = f"{path}: empty file (0 bytes), not a tar"
            else:
                msg = f"{path}: not a readable tar file ({exc})"
            index.members.append(_shard_error(shard, 0, "UnreadableShard", msg))
            return index
        stopped_at: int | None = None
        read = 0  # member headers read (every member, related or not)
        while True:
            header_offset = tf.offset
            if tf.firstmember is None:  # the next call reads a header: measure its meta blocks first
                tf.offset, more = _skip_hostile_headers(f, path, tf.offset, stat.st_size)
                skipped.extend(more)
                if more and tf.offset > stat.st_size:
                    tail = _shard_error(
                        shard, header_offset, "TruncatedShard", f"{path}: the file ends inside a skipped member"
                    )
                    break
            try:
                info = tf.next()
            except (tarfile.TarError, UnicodeDecodeError, ValueError, OverflowError) as exc:
                if tf.offset > stat.st_size:
                    # The previous member's data (or its padding) runs past the end of the file.
                    last = entries[-1] if entries else None
                    if last is None or last.problem is None or last.problem[0] != "TruncatedShard":
                        tail = _shard_error(
                            shard,
                            header_offset,
                            "TruncatedShard",
                            f"{path}: the file ends inside the data of the member before byte {tf.offset}; "
                            "the shard looks cut off, members after this point are lost",
                        )
                else:
                    tail = _shard_error(
                        shard,
                        header_offset,
                        "CorruptShard",
                        f"{path}: unreadable tar header at byte {header_offset}: {exc}",
                    )
                break
            if info is None:
                stopped_at = tf.offset
                break
            read += 1
            entry = _entry_for(path, info, stat.st_size, split)
            if entry is not None:
                entries.append(entry)
            tf.members.clear()  # keep memory flat on 10k-member shards
        if tail is None and stopped_at is not None:
            if stopped_at >= stat.st_size:
                # tarfile stops quietly at the end of the file, as it does at an end-of-archive marker: a shard
                # cut right after a complete member would otherwise look whole and lose what followed unseen.
                last = entries[-1] if entries else None
                if last is None or last.problem is None or last.problem[0] != "TruncatedShard":  # not said yet
                    tail = _no_end_marker(path, shard, stat.st_size, read + len(skipped))
            else:
                tail = _check_tail(f, path, shard, stopped_at, stat.st_size)
    index.members = pair(entries, shard=shard, strict=True, tail=tail) + skipped
    if tail is not None:
        index.members.append(tail)
    elif not index.members:
        what = "no members at all" if read == 0 else f"{read} members, none of them {related}"
        index.members.append(_shard_error(shard, 0, "EmptyShard", f"{path}: a tar with {what}; nothing to process"))
    return index


def _no_end_marker(path: Path, shard: str, file_size: int, members: int) -> Member:
    """The row of a tar that ends after a complete member, without the end-of-archive marker."""
    return _shard_error(
        shard,
        file_size,
        "TruncatedShard",
        f"{path}: shard {shard!r} ends at byte {file_size} after {members} members, without the tar "
        "end-of-archive marker; the file looks cut off, members after this point are lost",
    )


def _blocks(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _skip_hostile_headers(f: BinaryIO, path: Path, offset: int, file_size: int) -> tuple[int, list[Member]]:
    """Skip, unread, each member at ``offset`` whose long-name/pax blocks exceed :data:`MAX_META_HEADER_BYTES`.

    Returns the offset of the first member that may be handed to :mod:`tarfile` and an error entry per
    skipped member. Headers that do not parse are left to :mod:`tarfile`, which reports them.
    """
    skipped: list[Member] = []
    while True:
        pos, biggest = offset, 0
        for _ in range(64):  # a chain of meta blocks (pax, long name, long link) is short
            f.seek(pos)
            buf = f.read(tarfile.BLOCKSIZE)
            if len(buf) < tarfile.BLOCKSIZE or buf.count(0) == tarfile.BLOCKSIZE:
                return offset, skipped
            try:
                size = tarfile.nti(buf[124:136])
            except (tarfile.HeaderError, ValueError):
                return offset, skipped
            if size < 0:
                return offset, skipped
            if buf[156:157] not in _META_TYPES:
                break
            biggest = max(biggest, size)
            pos += tarfile.BLOCKSIZE + _blocks(size)
            if pos >= file_size:
                break
        else:
            return offset, skipped
        if biggest <= MAX_META_HEADER_BYTES:
            return offset, skipped
        if pos < file_size:
            pos += tarfile.BLOCKSIZE + _blocks(size)  # the member's own header and data
        skipped.append(
            _shard_error(
                path.stem,
                offset,
                "UnsafeMemberName",
                f"{path}: the member at byte {offset} declares a {biggest}-byte long-name or pax header block "
                f"(more than {MAX_META_HEADER_BYTES} bytes); it is skipped unread",
            )
        )
        offset = pos
        if offset >= file_size:
            return offset, skipped


def _entry_for(
    path: Path, info: tarfile.TarInfo, file_size: int, split_name: SplitName = _split_name
) -> _Entry | None:
    name = _normalise(info.name)
    split = split_name(name)
    if split is None or info.isdir():
        return None
    base, stem, kind = split
    if len(name) > MAX_NAME_CHARS:
        key = f"{path.stem}@{info.offset}"
        message = (
            f"{path}: the member at byte {info.offset} has a name of {len(name)} characters "
            f"(more than {MAX_NAME_CHARS}), starting {name[:80]!r}"
        )
        return _Entry(
            f"{key}.{base.rpartition('.')[2][:16]}", base[:255], key, kind, None, ("UnsafeMemberName", message)
        )
    if _is_unsafe(name):
        return _Entry(
            name, base, stem, kind, None, ("UnsafeMemberName", f"{path}: member {info.name!r} has an unsafe name")
        )
    if not info.isfile() or info.issparse():
        what = (
            "a symlink"
            if info.issym()
            else "a hard link"
            if info.islnk()
            else "a sparse file"
            if info.issparse()
            else "not a regular file"
        )
        return _Entry(name, base, stem, kind, None, ("NotARegularFile", f"{path}: member {info.name!r} is {what}"))
    loc = Locator(str(path), int(info.offset_data), int(info.size))
    if loc.offset + loc.size > file_size:
        missing = loc.offset + loc.size - file_size
        return _Entry(
            name,
            base,
            stem,
            kind,
            loc,
            (
                "TruncatedShard",
                f"{path}: member {info.name!r} is cut off ({missing} of {loc.size} bytes past the end)",
            ),
        )
    return _Entry(name, base, stem, kind, loc)


def _check_tail(f: BinaryIO, path: Path, shard: str, offset: int, file_size: int) -> Member | None:
    """After tarfile stopped at ``offset``: clean end-of-archive padding, or an unreadable tail?"""
    f.seek(offset)
    first_data: int | None = None
    pos = offset
    while True:  # find the first non-zero byte without loading a huge tail into memory
        chunk = f.read(1 << 20)
        if not chunk:
            break
        stripped = chunk.lstrip(b"\0")
        if stripped:
            first_data = pos + len(chunk) - len(stripped)
            break
        pos += len(chunk)
    if first_data is None:
        return None
    if first_data - offset >= tarfile.BLOCKSIZE:
        return _shard_error(
            shard,
            offset,
            "CorruptShard",
            f"{path}: data at byte {first_data} after the end-of-archive marker at byte {offset} is not read "
            "(concatenated tar archives are read up to the first end marker only)",
        )
    if file_size - offset < tarfile.BLOCKSIZE:
        return _shard_error(
            shard,
            offset,
            "TruncatedShard",
            f"{path}: the file ends inside a tar header at byte {offset} ({file_size - offset} of "
            f"{tarfile.BLOCKSIZE} bytes); the shard looks cut off, members after this point are lost",
        )
    return _shard_error(
        shard,
        offset,
        "CorruptShard",
        f"{path}: unreadable tar header at byte {offset} ({file_size - offset} bytes up to the end are skipped)",
    )


def _shard_error(shard: str, offset: int, error_type: str, message: str) -> Member:
    return Member(f"{shard}@{offset}", "", None, None, error_type, message)


def _pair(entries: list[_Entry], *, shard: str, strict: bool, tail: Member | None) -> list[Member]:
    """Pair images and JSONs by stem; order by the image's position (JSON-only entries by theirs)."""
    first_image: dict[str, _Entry] = {}
    first_json: dict[str, _Entry] = {}
    for e in entries:
        if e.problem is not None and e.problem[0] in ("UnsafeMemberName", "NotARegularFile"):
            continue
        table = first_image if e.kind == "image" else first_json
        table.setdefault(e.stem, e)
    tail_note = f"; the shard has an unreadable tail ({tail.error})" if tail is not None else ""
    out: list[Member] = []
    for e in entries:
        if e.problem is not None and e.problem[0] in ("UnsafeMemberName", "NotARegularFile"):
            # Keyed by the full member name so it can never collide with a real image id.
            image_id = e.name.rpartition(".")[0] or e.name
            out.append(Member(image_id, e.base, None, None, e.problem[0], e.problem[1]))
            continue
        if e.kind == "image":
            if first_image[e.stem] is not e:
                first = first_image[e.stem]
                out.append(
                    Member(
                        e.stem,
                        e.base,
                        e.loc,
                        None,
                        "DuplicateMember",
                        f"{shard}: image {e.name!r} repeats the id {e.stem!r} of {first.name!r}; the first one is used",
                    )
                )
                continue
            ann = first_json.get(e.stem)
            ann_loc = ann.loc if ann is not None else None
            if e.problem is not None:
                out.append(Member(e.stem, e.base, e.loc, ann_loc, *e.problem))
            elif ann is not None and ann.problem is not None:
                out.append(
                    Member(
                        e.stem, e.base, e.loc, ann_loc, ann.problem[0], f"annotation of {e.name!r}: {ann.problem[1]}"
                    )
                )
            elif ann is None and strict:
                out.append(
                    Member(
                        e.stem,
                        e.base,
                        e.loc,
                        None,
                        "MissingAnnotation",
                        f"{shard}: image {e.name!r} has no {e.stem}.json annotation member{tail_note}",
                    )
                )
            else:
                out.append(Member(e.stem, e.base, e.loc, ann_loc))
        else:
            if e.stem in first_image:
                if first_json[e.stem] is not e:
                    out.append(
                        Member(
                            e.stem,
                            e.base,
                            None,
                            e.loc,
                            "DuplicateMember",
                            f"{shard}: annotation {e.name!r} repeats {first_json[e.stem].name!r}; the first one is used",
                        )
                    )
                continue
            if not strict:
                continue
            if first_json[e.stem] is not e:
                out.append(
                    Member(
                        e.stem,
                        e.base,
                        None,
                        e.loc,
                        "DuplicateMember",
                        f"{shard}: annotation {e.name!r} repeats {first_json[e.stem].name!r}",
                    )
                )
                continue
            error_type, message = e.problem or (
                "MissingImage",
                f"{shard}: annotation {e.name!r} has no image member with the stem {e.stem!r}{tail_note}",
            )
            out.append(Member(e.stem, e.base, None, e.loc, error_type, message))
    return out


def _index_folder(folder: Path) -> ShardIndex:
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name)
    entries: list[_Entry] = []
    total = 0
    mtime = folder.stat().st_mtime_ns
    for p in files:
        split = _split_name(p.name)
        if split is None:
            continue
        base, stem, kind = split
        st = p.stat()
        total += st.st_size
        mtime = max(mtime, st.st_mtime_ns)
        entries.append(_Entry(p.name, base, stem, kind, Locator(str(p), 0, int(st.st_size))))
    members = _pair(entries, shard=folder.name, strict=False, tail=None)
    return ShardIndex(shard=folder.name, path=str(folder), kind="folder", size=total, mtime_ns=mtime, members=members)


# -- reading ---------------------------------------------------------------------------------------
def _read_exact(f: BinaryIO, loc: Locator) -> bytes:
    f.seek(loc.offset)
    data = f.read(loc.size)
    if len(data) != loc.size:
        raise ShardReadError(
            f"short read from {loc.source} at offset {loc.offset}: wanted {loc.size} bytes, got {len(data)} "
            "(the file is truncated or changed since it was indexed)"
        )
    return data


def read_locator(loc: Locator) -> bytes:
    """Read exactly ``loc.size`` bytes at ``loc.offset`` of ``loc.source``."""
    with open(loc.source, "rb") as f:
        return _read_exact(f, loc)


class LocatorReader:
    """Reads many locators while keeping the last few source files open (use as a context manager)."""

    def __init__(self, max_open: int = 4) -> None:
        self.max_open = max(1, max_open)
        self._files: dict[str, BinaryIO] = {}

    def read(self, loc: Locator) -> bytes:
        f = self._files.pop(loc.source, None)
        if f is None:
            f = open(loc.source, "rb")  # noqa: SIM115 - kept open on purpose, closed in close()
            while len(self._files) >= self.max_open:
                oldest = next(iter(self._files))
                self._files.pop(oldest).close()
        self._files[loc.source] = f  # most recently used last
        return _read_exact(f, loc)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> LocatorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
