"""Whole-slide images: open, levels, spacing, batched region reads.

Two readers behind one interface (``Slide``):

- ``TiffSlide`` for pyramidal TIFF (levels as reduced-resolution pages, as ASAP and grand-challenge
  write them, or as SubIFDs; JPEG, LZW, deflate, ...; RGB, YCbCr or RGBA). A batch of regions is
  served by decoding each stored TIFF tile (or strip) it touches exactly once, with the decoding
  (imagecodecs, which releases the GIL) spread over a thread pool, then copying the pixels out.
  Decoded tiles stay in a small LRU cache because consecutive batches of a row-major grid share
  stored tiles (without it a 512-px stored tile is decoded two to three times). The cache holds two
  rows of stored tiles of the level being read: enough for row-major reuse, small enough that the
  memory of evicted tiles is recycled rather than freshly faulted in.
- ``OpenSlideSlide`` for SVS, NDPI, MRXS and the other vendor formats, through openslide.

Coordinates: regions are given in pixels of the level read (``xy_lv``); ``Level.downsample``
converts level-0 pixels to those of a level.
"""

from __future__ import annotations

import os
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from survfusion.errors import UserError
from survfusion.limits import MAX_SIDE_PX, THUMBNAIL_BAND_BYTES
from survfusion.slides.tiffheader import ImageLimitError, check_tiff_limits, jpeg_size

# TIFF ResolutionUnit -> micrometres per unit (4 and 5 are common non-standard extensions).
_UM_PER_UNIT = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
TIFF_SUFFIXES = (".tif", ".tiff")  # read by our TIFF reader; the rest of SLIDE_SUFFIXES by openslide
SLIDE_SUFFIXES = (*TIFF_SUFFIXES, ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".bif")
MASK_SUFFIXES = (*TIFF_SUFFIXES, ".mha", ".mhd")  # .mha/.mhd through SimpleITK


class SlideError(UserError):
    """A slide that cannot be opened or read as asked."""


@dataclass(frozen=True)
class Level:
    width: int
    height: int
    downsample: float  # level-0 pixels per pixel of this level


class Slide(ABC):
    """A pyramidal image with a physical spacing (µm/px at level 0)."""

    path: Path
    levels: list[Level]
    spacing_um: float

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.levels[0].width, self.levels[0].height

    @property
    def downsamples(self) -> list[float]:
        return [lv.downsample for lv in self.levels]

    def read_region(self, level: int, xy_lv: tuple[int, int], size_px: tuple[int, int]) -> np.ndarray:
        """RGB uint8 ``(h, w, 3)`` of the ``size_px = (w, h)`` region at ``xy_lv`` of ``level``."""
        return self.read_regions(level, np.asarray([xy_lv]), size_px)[0]

    @abstractmethod
    def read_regions(self, level: int, xy_lv: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
        """RGB uint8 ``(N, h, w, 3)`` for the regions with top-left corners ``xy_lv (N, 2)``.

        Pixels outside the image are white."""

    def thumbnail(self, max_px: int = 2048) -> tuple[np.ndarray, float]:
        """The coarsest level whose long side is >= ``max_px`` (or level 0), area-reduced to at most
        ``max_px``; returns the RGB image and its downsample relative to level 0.

        The level is read in bands of whole ``factor``-row blocks, each reduced before the next is read,
        so a slide stored as one huge page costs ``THUMBNAIL_BAND_BYTES``, not the whole level."""
        candidates = [i for i, lv in enumerate(self.levels) if max(lv.width, lv.height) >= max_px]
        level = candidates[-1] if candidates else 0
        lv = self.levels[level]
        factor = max(1, int(np.ceil(max(lv.width, lv.height) / max_px)))
        band = factor * max(1, THUMBNAIL_BAND_BYTES // (lv.width * 3 * factor))
        parts = [
            area_reduce(self.read_region(level, (0, y), (lv.width, min(band, lv.height - y))), factor)
            for y in range(0, lv.height, band)
        ]
        return np.concatenate(parts, axis=0), lv.downsample * factor

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        pass

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def area_reduce(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks (the trailing partial block averages what it has)."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    if image.dtype == np.uint8 and h % factor == 0 and w % factor == 0 and factor <= 16:
        # Exact blocks: add the factor x factor strided views as integers (no float copy of a large
        # level, and much faster than a reduction over reshaped axes), rounded half up.
        n = factor * factor
        sums = np.full(image[::factor, ::factor].shape, n // 2, dtype=np.uint16)
        for dy in range(factor):
            for dx in range(factor):
                sums += image[dy::factor, dx::factor]
        return (sums // n).astype(np.uint8)
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    pad = ((0, hp - h), (0, wp - w)) + ((0, 0),) * (image.ndim - 2)
    data = np.pad(image.astype(np.float32), pad)
    ones = np.pad(np.ones((h, w), np.float32), pad[:2])
    shape = (hp // factor, factor, wp // factor, factor)
    sums = data.reshape(shape + image.shape[2:]).sum(axis=(1, 3))
    counts = ones.reshape(shape).sum(axis=(1, 3))
    out = sums / (counts[..., None] if image.ndim == 3 else counts)
    return np.floor(out + 0.5).astype(image.dtype) if image.dtype == np.uint8 else out.astype(image.dtype)


class TiffSlide(Slide):
    """Pyramidal TIFF read tile by tile with tifffile + imagecodecs."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        spacing_um: float | None = None,
        threads: int | None = None,
        cache_rows: int = 2,
    ):
        self.path = Path(path)
        try:
            check_tiff_limits(self.path, f"slide {self.path.name}")  # before tifffile reads any offsets
        except (ImageLimitError, OSError) as err:
            raise SlideError(
                str(err) if isinstance(err, ImageLimitError) else f"slide {self.path}: {err}"
            ) from None
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
            self._pages = [lvl.keyframe for lvl in series.levels]
        except (tifffile.TiffFileError, OSError, IndexError, ValueError, KeyError, TypeError) as err:
            # The type only: tifffile's messages can quote the file's first bytes.
            raise SlideError(f"slide {self.path.name}: not a readable TIFF ({type(err).__name__})") from None
        for page in self._pages:
            _check_page(self.path, page)
        w0 = self._pages[0].imagewidth
        self.levels = [Level(p.imagewidth, p.imagelength, w0 / p.imagewidth) for p in self._pages]
        self.spacing_um = spacing_um if spacing_um is not None else _tiff_spacing(self.path, self._pages[0])
        self._fd: int | None = os.open(self.path, os.O_RDONLY)
        self._pool = ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1))
        self._cache: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._cache_rows = cache_rows
        self._lock = threading.Lock()

    def close(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None
            self._pool.shutdown(wait=True)
            self._tif.close()

    def _segment(self, page, index: int) -> np.ndarray | None:
        count = page.databytecounts[index]
        if count == 0:
            return None
        try:
            if self._fd is None:
                raise SlideError(f"slide {self.path}: read after close")
            data = os.pread(self._fd, count, page.dataoffsets[index])
            if page.compression in (6, 7):  # JPEG: its own header sizes the decoder's output
                self._check_jpeg(data, page, index)
            arr, _, _ = page.decode(data, index, jpegtables=page.jpegtables, _fullsize=True)
            return arr.reshape(arr.shape[-3:])[..., :3]  # (th, tw, 3): drop alpha
        except SlideError:
            raise
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError, OSError) as err:
            # Decoding one stored tile's bytes on the CPU: any failure is the file's (imagecodecs'
            # codec errors are RuntimeErrors). Device faults cannot arise here.
            raise SlideError(
                f"slide {self.path.name}: stored tile {index} of a level cannot be decoded "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from None

    def _check_jpeg(self, data: bytes, page, index: int) -> None:
        size = jpeg_size(data)
        tw, th = _segment_shape(page)
        if size is not None and (size[0] > tw or size[1] > th):
            raise SlideError(
                f"slide {self.path.name}: stored tile {index} claims {size[0]:,} x {size[1]:,} px in its "
                f"JPEG header, more than the TIFF's {tw} x {th} tile; not decoded"
            )

    def _decoded(self, level: int, indices: list[int]) -> dict[int, np.ndarray | None]:
        """Segments of ``level`` by index: from the LRU cache, the rest decoded in parallel."""
        page = self._pages[level]
        with self._lock:
            found = {i: self._cache[(level, i)] for i in indices if (level, i) in self._cache}
            for i in found:
                self._cache.move_to_end((level, i))
        missing = [i for i in indices if i not in found]
        decode = self._pool.map if self._pool._max_workers > 1 else map
        fresh = dict(zip(missing, decode(lambda i: self._segment(page, i), missing), strict=True))
        tw, _ = _segment_shape(page)
        capacity = max(len(indices), self._cache_rows * -(-page.imagewidth // tw))
        with self._lock:
            self._cache.update(((level, i), seg) for i, seg in fresh.items())
            while len(self._cache) > capacity:
                self._cache.popitem(last=False)
        return {**found, **fresh}

    def read_regions(self, level: int, xy_lv: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
        page = self._pages[level]
        tw, th = _segment_shape(page)
        across = -(-page.imagewidth // tw)
        w, h = int(size_px[0]), int(size_px[1])
        xy_lv = np.asarray(xy_lv, dtype=np.int64).reshape(-1, 2)
        touching = [
            _segments_touching(x, y, w, h, tw, th, page.imagewidth, page.imagelength) for x, y in xy_lv
        ]
        decoded = self._decoded(level, sorted({ty * across + tx for segs in touching for ty, tx in segs}))
        inside = np.all((xy_lv >= 0) & (xy_lv + np.array([w, h]) <= [page.imagewidth, page.imagelength]))
        # White where a region reaches outside the image or onto an empty stored tile; otherwise every
        # pixel is overwritten below, so the buffer need not be filled first.
        if inside and all(seg is not None for seg in decoded.values()):
            out = np.empty((len(xy_lv), h, w, 3), np.uint8)
        else:
            out = np.full((len(xy_lv), h, w, 3), 255, np.uint8)
        for k, (x, y) in enumerate(xy_lv):
            for ty, tx in touching[k]:
                seg = decoded[ty * across + tx]
                if seg is None:
                    continue
                sx0, sy0 = tx * tw, ty * th
                x0, x1 = max(x, sx0), min(x + w, sx0 + tw, page.imagewidth)
                y0, y1 = max(y, sy0), min(y + h, sy0 + th, page.imagelength)
                out[k, y0 - y : y1 - y, x0 - x : x1 - x] = seg[y0 - sy0 : y1 - sy0, x0 - sx0 : x1 - sx0]
        return out


def _segment_shape(page) -> tuple[int, int]:
    """(width, height) of the stored segments: tiles, or strips of ``rowsperstrip`` rows."""
    if page.is_tiled:
        return page.tilewidth, page.tilelength
    return page.imagewidth, min(page.rowsperstrip or page.imagelength, page.imagelength)


def _segments_touching(x, y, w, h, tw, th, width, height):
    """(row, col) of the segments that overlap the region, clipped to the image."""
    x0, y0 = max(int(x), 0), max(int(y), 0)
    x1, y1 = min(int(x) + w, width), min(int(y) + h, height)
    if x1 <= x0 or y1 <= y0:
        return []
    return [
        (ty, tx) for ty in range(y0 // th, (y1 - 1) // th + 1) for tx in range(x0 // tw, (x1 - 1) // tw + 1)
    ]


def _check_page(path: Path, page) -> None:
    if page.planarconfig != 1 and page.samplesperpixel > 1:
        raise SlideError(f"slide {path}: planar (separate) colour planes are not supported")
    if page.samplesperpixel not in (3, 4) or page.dtype != np.uint8:
        raise SlideError(
            f"slide {path}: expected 8-bit RGB(A), got {page.samplesperpixel} samples of {page.dtype}"
        )


def _tiff_spacing(path: Path, page) -> float:
    """µm/px from XResolution + ResolutionUnit, else an Aperio 'MPP = ' description; else an error."""
    tags = page.tags
    xres = tags.get("XResolution")
    unit = tags.get("ResolutionUnit")
    unit_code = int(unit.value) if unit is not None else 2  # TIFF default unit: inch
    if xres is not None and unit_code in _UM_PER_UNIT:
        num, den = xres.value
        if num > 0 and den > 0:
            return _UM_PER_UNIT[unit_code] * den / num
    match = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    if match and float(match.group(1)) > 0:
        return float(match.group(1))
    raise SlideError(
        f"slide {path}: no spacing in the TIFF (XResolution/ResolutionUnit or MPP); "
        "pass the spacing explicitly (--spacing-um)"
    )


class OpenSlideSlide(Slide):
    """Vendor formats through openslide (pixels composited onto white, like a viewer shows them)."""

    def __init__(self, path: str | os.PathLike, *, spacing_um: float | None = None):
        import openslide

        self.path = Path(path)
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as err:
            raise SlideError(f"slide {self.path}: openslide cannot open it ({err})") from None
        self.levels = [
            Level(w, h, float(d))
            for (w, h), d in zip(self._osr.level_dimensions, self._osr.level_downsamples, strict=True)
        ]
        if max(self.levels[0].width, self.levels[0].height) > MAX_SIDE_PX:
            self._osr.close()
            raise SlideError(
                f"slide {self.path.name}: {self.levels[0].width:,} x {self.levels[0].height:,} px exceeds "
                f"the limit of {MAX_SIDE_PX:,} px a side"
            )
        self.spacing_um = spacing_um if spacing_um is not None else self._spacing()

    def _spacing(self) -> float:
        props = self._osr.properties
        try:
            value = float(props.get("openslide.mpp-x", "nan"))
        except ValueError:
            value = float("nan")
        if not value > 0:
            raise SlideError(
                f"slide {self.path}: no spacing (openslide.mpp-x); pass the spacing explicitly (--spacing-um)"
            )
        return value

    def read_regions(self, level: int, xy_lv: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
        ds = self.levels[level].downsample
        out = []
        import openslide

        for x, y in np.asarray(xy_lv).reshape(-1, 2):
            try:
                region = self._osr.read_region(
                    (round(x * ds), round(y * ds)), level, (int(size_px[0]), int(size_px[1]))
                )
            except openslide.OpenSlideError as err:
                raise SlideError(f"slide {self.path}: openslide cannot read a region ({err})") from None
            out.append(composite_on_white(np.asarray(region)))
        return np.stack(out)

    def close(self) -> None:
        self._osr.close()


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def open_slide(
    path: str | os.PathLike,
    *,
    spacing_um: float | None = None,
    reader: str = "auto",
    threads: int | None = None,
) -> Slide:
    """Open a slide. ``reader``: ``"auto"`` (TIFF reader for .tif/.tiff, openslide otherwise),
    ``"tiff"`` or ``"openslide"``. ``spacing_um`` overrides the file's spacing."""
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"slide {path}: no such file")
    if spacing_um is not None and not spacing_um > 0:
        raise SlideError(f"slide {path}: spacing override must be positive, got {spacing_um}")
    if reader not in ("auto", "tiff", "openslide"):
        raise ValueError(f"reader: expected auto, tiff or openslide, got {reader!r}")
    use_tiff = reader == "tiff" or (reader == "auto" and path.suffix.lower() in TIFF_SUFFIXES)
    if use_tiff:
        return TiffSlide(path, spacing_um=spacing_um, threads=threads)
    return OpenSlideSlide(path, spacing_um=spacing_um)
