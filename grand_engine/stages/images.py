"""The ``images`` root stage: a unit's shard entries → its table of readable images.

Every other stage reads this table to know which images exist and where their bytes are (shard path,
byte offset and length), so pixels and SA-1B JSON are read on demand by seeking into the shard —
never extracted to disk. An entry that cannot be used (missing pair, unsafe or duplicate name,
truncated or empty shard, not an image, corrupt data, decompression bomb, a member larger than
``max_image_bytes``, an image with a side below ``min_side``) becomes an error row here, once, and the image is
absent from every downstream table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grand_engine.io.images import MAX_PIXELS_DEFAULT, MIN_SIDE_DEFAULT, ImageError, decode_image, probe_image
from grand_engine.io.sa1b import Member, read_locator
from grand_engine.runtime.stage import ErrorRecord, Stage, StageResult, UnitInput
from grand_engine.schema import IMAGES_SCHEMA

MAX_IMAGE_BYTES_DEFAULT = 512 << 20
"""Largest image member read (512 MiB). SA-1B images are ~0.5 MB; an image at the ``max_pixels`` limit
decodes to 300 MB, so a bigger file is not a plausible input and reading it whole could exhaust memory."""


WARNING_TYPES = frozenset({"DuplicateMember"})
"""Entry problems that leave the image processed: a repeated id is reported, and its first copy is used."""


@dataclass
class ImagesStage(Stage):
    """Probe every image of the unit and record where its bytes live."""

    name = "images"
    requires = ()
    level = None
    version = "1"
    schema = IMAGES_SCHEMA

    max_pixels: int = MAX_PIXELS_DEFAULT  # decompression-bomb guard: larger headers are rejected before decoding
    max_image_bytes: int = MAX_IMAGE_BYTES_DEFAULT  # larger members are refused before they are read into memory
    # Smaller widths/heights are refused (ImageTooSmall): model image processors take an array 1, 3 or 4 pixels
    # tall for channels-first and crash or read it transposed; 8 clears that (SA-1B images are ~1500 px).
    min_side: int = MIN_SIDE_DEFAULT
    verify_decode: bool = True  # decode each image once here so corrupt data fails in one place, not per stage

    def process_unit(self, unit: UnitInput) -> StageResult:
        rows: list[dict[str, Any]] = []
        errors: list[ErrorRecord] = []
        for member in unit.members:
            try:
                rows.append(self._row(member))
            except Exception as exc:  # noqa: BLE001 - one bad entry never stops the unit
                kind = _error_type(exc)
                severity = "warning" if kind in WARNING_TYPES else "error"
                errors.append(ErrorRecord(member.image_id, kind, str(exc) or repr(exc), severity))
        return StageResult(self.to_table(rows), errors)

    def _row(self, member: Member) -> dict[str, Any]:
        if member.error_type:
            raise _ShardEntryError(member.error_type, member.error or member.error_type)
        if member.image is None:
            raise _ShardEntryError("MissingImage", f"{member.file_name}: no image data")
        if member.image.size > self.max_image_bytes:
            raise ImageError(
                f"{member.file_name}: {member.image.size} bytes, more than max_image_bytes = {self.max_image_bytes} "
                "(refused unread; raise max_image_bytes to accept it)"
            )
        data = read_locator(member.image)
        info = probe_image(data, max_pixels=self.max_pixels, min_side=self.min_side)
        if self.verify_decode:
            decode_image(data, max_pixels=self.max_pixels)
        ann = member.annotation
        return {
            "image_id": member.image_id,
            "file_name": member.file_name,
            "width": info.width,
            "height": info.height,
            "format": info.format,
            "orientation": info.orientation,
            "source": member.image.source,
            "offset": member.image.offset,
            "size": member.image.size,
            "ann_source": ann.source if ann else None,
            "ann_offset": ann.offset if ann else None,
            "ann_size": ann.size if ann else None,
        }


class _ShardEntryError(Exception):
    """Carries the shard index's own error type through to the error row."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _error_type(exc: BaseException) -> str:
    return exc.error_type if isinstance(exc, _ShardEntryError) else type(exc).__name__
