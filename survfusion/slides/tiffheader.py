"""Read a TIFF's image sizes from its header alone and refuse any over the limits, before tifffile
parses the file (which reads every page's tile-offset arrays) or anything is decoded.

Only the directory entries are read (classic TIFF and BigTIFF, either byte order): image width and
length, tile or strip size, samples and bits per sample, the number of stored segments, and the
SubIFDs of each page. A header claiming 10^6 x 10^6 pixels or one 65,536^2 RGBA tile (17 GB
decoded, a few MB on disk) is refused here in microseconds. Limits: ``survfusion.limits``.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

from survfusion.errors import UserError
from survfusion.limits import MAX_IFD_ENTRIES, MAX_PAGES, MAX_SEGMENT_BYTES, MAX_SEGMENTS, MAX_SIDE_PX

_TYPE_SIZE = {
    1: 1,
    2: 1,
    3: 2,
    4: 4,
    5: 8,
    6: 1,
    7: 1,
    8: 2,
    9: 4,
    10: 8,
    11: 4,
    12: 8,
    13: 4,
    16: 8,
    17: 8,
    18: 8,
}
_TYPE_FMT = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
_WIDTH, _LENGTH, _BITS, _SAMPLES, _ROWS = 256, 257, 258, 277, 278
_STRIP_OFFSETS, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _SUBIFDS = 273, 322, 323, 324, 330


class ImageLimitError(UserError):
    """An image whose header asks for more than the documented limits (or is not a TIFF header)."""


@dataclass(frozen=True)
class PageHeader:
    width: int
    length: int
    segment_width: int
    segment_length: int
    samples: int
    bits: int
    segments: int  # entries of the offsets array

    @property
    def segment_bytes(self) -> int:
        return self.segment_width * self.segment_length * self.samples * math.ceil(self.bits / 8)


class _Reader:
    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        head = os.pread(fd, 16, 0)
        if head[:2] not in (b"II", b"MM"):
            raise ImageLimitError("not a readable TIFF (no II/MM byte-order mark)")
        self.bo = "<" if head[:2] == b"II" else ">"
        magic = struct.unpack(self.bo + "H", head[2:4])[0]
        if magic == 42:
            self.big, self.first = False, struct.unpack(self.bo + "I", head[4:8])[0]
        elif magic == 43:
            self.big, self.first = True, struct.unpack(self.bo + "Q", head[8:16])[0]
        else:
            raise ImageLimitError(f"not a readable TIFF (magic number {magic})")

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self.size:
            raise ImageLimitError("a TIFF directory points outside the file")
        return os.pread(self.fd, n, offset)

    def entries(self, offset: int) -> tuple[dict[int, tuple[int, int, bytes]], int]:
        """tag -> (type, count, inline value or offset bytes) of the IFD at ``offset``, and the next IFD."""
        count_fmt, entry_size, inline = ("Q", 20, 8) if self.big else ("H", 12, 4)
        width = 8 if self.big else 2
        (n,) = struct.unpack(self.bo + count_fmt, self.read(offset, width))
        if n > MAX_IFD_ENTRIES:
            raise ImageLimitError(f"a TIFF directory with {n} entries")
        raw = self.read(offset + width, n * entry_size + (8 if self.big else 4))
        tags = {}
        for i in range(n):
            e = raw[i * entry_size : (i + 1) * entry_size]
            tag, typ = struct.unpack(self.bo + "HH", e[:4])
            cnt = struct.unpack(self.bo + ("Q" if self.big else "I"), e[4 : 4 + (8 if self.big else 4)])[0]
            tags[tag] = (typ, cnt, e[entry_size - inline :])
        (nxt,) = struct.unpack(self.bo + ("Q" if self.big else "I"), raw[n * entry_size :])
        return tags, nxt

    def values(self, entry: tuple[int, int, bytes], limit: int = 64) -> list[int]:
        """The first ``limit`` integer values of an entry (inline or at its offset)."""
        typ, cnt, field = entry
        if typ not in _TYPE_FMT:
            raise ImageLimitError(f"a TIFF size tag of type {typ}")
        size, n = _TYPE_SIZE[typ], min(cnt, limit)
        inline = 8 if self.big else 4
        if cnt * size <= inline:
            data = field[: n * size]
        else:
            (off,) = struct.unpack(self.bo + ("Q" if self.big else "I"), field)
            data = self.read(off, n * size)
        return list(struct.unpack(self.bo + _TYPE_FMT[typ] * n, data))


def _page(r: _Reader, tags: dict) -> PageHeader | None:
    if _WIDTH not in tags or _LENGTH not in tags:
        return None
    width, length = r.values(tags[_WIDTH], 1)[0], r.values(tags[_LENGTH], 1)[0]
    samples = r.values(tags[_SAMPLES], 1)[0] if _SAMPLES in tags else 1
    bits = max(r.values(tags[_BITS], 8)) if _BITS in tags else 1
    if _TILE_WIDTH in tags and _TILE_LENGTH in tags:
        seg_w, seg_l = r.values(tags[_TILE_WIDTH], 1)[0], r.values(tags[_TILE_LENGTH], 1)[0]
        offsets = tags.get(_TILE_OFFSETS)
    else:
        rows = r.values(tags[_ROWS], 1)[0] if _ROWS in tags else length
        seg_w, seg_l = width, min(max(rows, 1), max(length, 1))
        offsets = tags.get(_STRIP_OFFSETS)
    return PageHeader(width, length, seg_w, seg_l, samples, bits, offsets[1] if offsets else 0)


def read_pages(path: str | os.PathLike) -> list[PageHeader]:
    """The headers of every image page (IFD chain and SubIFDs), at most ``MAX_PAGES``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        r = _Reader(fd, os.fstat(fd).st_size)
        seen: set[int] = set()
        pages, todo = [], [r.first]
        while todo:
            offset = todo.pop(0)
            if offset == 0 or offset in seen:
                continue
            if len(seen) >= MAX_PAGES:
                raise ImageLimitError(f"more than {MAX_PAGES} image pages")
            seen.add(offset)
            tags, nxt = r.entries(offset)
            if (page := _page(r, tags)) is not None:
                pages.append(page)
            if _SUBIFDS in tags:
                todo.extend(r.values(tags[_SUBIFDS], MAX_PAGES))
            todo.append(nxt)
        return pages
    except struct.error:
        raise ImageLimitError("a truncated TIFF directory") from None
    finally:
        os.close(fd)


def check_tiff_limits(path: str | os.PathLike, what: str) -> list[PageHeader]:
    """``read_pages`` and every limit; raises ``ImageLimitError`` naming ``what`` and the limit."""
    try:
        pages = read_pages(path)
    except ImageLimitError as err:
        raise ImageLimitError(f"{what}: {err}") from None
    if not pages:
        raise ImageLimitError(f"{what}: no image page in the TIFF")
    for p in pages:
        if max(p.width, p.length) > MAX_SIDE_PX:
            raise ImageLimitError(
                f"{what}: {p.width:,} x {p.length:,} px exceeds the limit of {MAX_SIDE_PX:,} px a side"
            )
        if p.segment_bytes > MAX_SEGMENT_BYTES:
            raise ImageLimitError(
                f"{what}: a stored {p.segment_width:,} x {p.segment_length:,} tile of {p.samples} samples "
                f"decodes to {p.segment_bytes / 2**20:,.0f} MiB (limit {MAX_SEGMENT_BYTES / 2**20:.0f} MiB)"
            )
        if p.segments > MAX_SEGMENTS:
            raise ImageLimitError(f"{what}: {p.segments:,} stored tiles in one page (limit {MAX_SEGMENTS:,})")
    return pages


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG stream's start-of-frame marker, or None if it has none.

    A TIFF's tile size says nothing about the JPEG inside it: a 5 kB tile whose frame header claims
    60,000 x 60,000 px makes the decoder allocate 10 GiB before it finds the data missing. Walking
    the marker segments to the frame header costs microseconds."""
    i, n = 2, len(data)
    if data[:2] != b"\xff\xd8":
        return None
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF_MARKERS and i + 9 <= n:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            return None
        i += 2 + length
    return None
