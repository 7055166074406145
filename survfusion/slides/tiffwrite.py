"""Write pyramidal TIFFs the way slide scanners and ASAP do (used by the synthetic cohort, tests and
benchmarks). Tiles are produced lazily, so a 40,000-pixel pyramid never sits in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tifffile

from survfusion.slides.reader import area_reduce

# region(level_downsample, y, x, h, w) -> (h, w, C) uint8 at that level
RegionFn = Callable[[int, int, int, int, int], np.ndarray]


def _page_options(spacing_um, tile_px, compression, quality, colorspace, resolution_unit, channels) -> dict:
    """tifffile's ``write`` arguments shared by every level: tiling, codec, colour, resolution."""
    per_um = {"CENTIMETER": 1e4, "INCH": 25400.0, "MILLIMETER": 1e3, "MICROMETER": 1.0, "NONE": 1e4}
    res = per_um[resolution_unit] / spacing_um
    kwargs = {
        "tile": (tile_px, tile_px),
        "compression": None if compression == "none" else compression,
        "photometric": "rgb",
        "resolution": (res, res),
        "resolutionunit": {"MICROMETER": 5, "MILLIMETER": 4}.get(resolution_unit, resolution_unit),
        "metadata": None,
    }
    if channels == 4:
        kwargs["extrasamples"] = ("unassalpha",)
    if compression == "jpeg":
        kwargs["compressionargs"] = {"level": quality}
        if colorspace == "rgb":
            kwargs["compressionargs"]["outcolorspace"] = "RGB"
            kwargs["subsampling"] = (1, 1)
    return kwargs


def write_pyramid(
    path: str | os.PathLike,
    source: np.ndarray | RegionFn,
    *,
    spacing_um: float,
    size_px: tuple[int, int] | None = None,
    n_levels: int | None = None,
    tile_px: int = 512,
    compression: str = "jpeg",
    quality: int = 90,
    layout: str = "pages",
    colorspace: str = "ycbcr",
    resolution_unit: str = "CENTIMETER",
) -> None:
    """Write ``source`` as a tiled pyramid with levels downsampled by 2 each.

    Args:
        source: an RGB(A) ``(H, W, C)`` array, or a function giving any region of any level.
        spacing_um: level-0 spacing, stored in XResolution/YResolution with ``resolution_unit``
            (``"CENTIMETER"``, ``"INCH"``, ``"MILLIMETER"``, ``"MICROMETER"`` or ``"NONE"``).
        size_px: ``(width, height)`` of level 0; required for a function source.
        n_levels: levels to write (default: until the long side is under 2 tiles).
        compression: ``"jpeg"``, ``"lzw"``, ``"deflate"`` or ``"none"``.
        layout: ``"pages"`` (reduced-resolution pages, like ASAP) or ``"subifds"``.
        colorspace: for JPEG, ``"ycbcr"`` (usual) or ``"rgb"`` (as Aperio stores it).
    """
    if isinstance(source, np.ndarray):
        levels = _array_levels(source)
        width, height = source.shape[1], source.shape[0]
        channels = source.shape[2]

        def region(ds, y, x, h, w):
            return levels[int(np.log2(ds))][y : y + h, x : x + w]
    else:
        if size_px is None:
            raise ValueError("write_pyramid: size_px is required when the source is a function")
        width, height = size_px
        region, channels = source, 3
    if n_levels is None:
        n_levels = 1
        while max(width, height) >> n_levels >= 2 * tile_px:
            n_levels += 1
    if isinstance(source, np.ndarray):
        n_levels = min(n_levels, len(levels))
    # tifffile writes whole tiles; a level smaller than one tile is still one (padded) tile.
    kwargs = _page_options(spacing_um, tile_px, compression, quality, colorspace, resolution_unit, channels)
    big = width * height * channels > 2**31
    with tifffile.TiffWriter(path, bigtiff=big) as tif:
        for lv in range(n_levels):
            ds = 2**lv
            w, h = -(-width // ds), -(-height // ds)
            extra: dict[str, Any] = {}
            if layout == "subifds" and lv == 0 and n_levels > 1:
                extra["subifds"] = n_levels - 1
            tif.write(
                _tiles(region, ds, w, h, tile_px, channels),
                shape=(h, w, channels),
                dtype=np.uint8,
                subfiletype=0 if lv == 0 else 1,
                **extra,
                **kwargs,
            )


def _array_levels(image: np.ndarray) -> list[np.ndarray]:
    levels = [image]
    while min(levels[-1].shape[:2]) >= 2:
        levels.append(area_reduce(levels[-1], 2))
    return levels


def _tiles(region: RegionFn, ds: int, w: int, h: int, tile: int, channels: int) -> Iterator[np.ndarray]:
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            th, tw = min(tile, h - y), min(tile, w - x)
            block = region(ds, y, x, th, tw)
            if block.shape[:2] != (tile, tile):
                full = np.full((tile, tile, channels), 255, dtype=np.uint8)
                full[:th, :tw] = block
                block = full
            yield block


def write_mask(path: str | os.PathLike, mask: np.ndarray, *, spacing_um: float, value: int = 255) -> None:
    """A single-level binary tissue mask (uint8, 0 and ``value``), tiled and deflate-compressed."""
    data = (np.asarray(mask) > 0).astype(np.uint8) * np.uint8(value)
    res = 1e4 / spacing_um
    tile = (128, 128) if min(data.shape) >= 128 else None
    tifffile.imwrite(
        path,
        data,
        tile=tile,
        compression="deflate",
        photometric="minisblack",
        resolution=(res, res),
        resolutionunit="CENTIMETER",
        metadata=None,
    )
