"""Tissue masks: read any resolution and value coding, align by physical extent, tile coverage.

A mask covers the same physical extent as its slide, whatever its pixel size: mask pixel ``(u, v)``
lies over level-0 pixels ``(u / scale_x, v / scale_y)`` with ``scale = mask size / slide size``.
Any non-zero value is tissue (0/1, 0/255, boolean). Coverage of every tile comes from one integral
image, O(1) per tile. Without a usable mask, tissue is found by Otsu's threshold on the saturation of
a thumbnail, and the reason is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from survfusion.limits import MASK_POOL_PIXELS, MAX_MASK_READ_PIXELS, MAX_SIDE_PX
from survfusion.slides.reader import Slide
from survfusion.slides.tiffheader import check_tiff_limits

MIN_SATURATION = 20  # 0-255: below this, a thumbnail is background however Otsu splits it
ALL_TISSUE = 0.98  # a mask covering at least this much of the slide is checked against Otsu
MOSTLY_BACKGROUND = 0.5  # ... and doubted when Otsu finds less tissue than this


@dataclass(frozen=True)
class TissueMask:
    """Boolean tissue map over the slide and its scale relative to level 0."""

    mask: np.ndarray
    scale_x: float
    scale_y: float
    source: str  # "mask" or "otsu"

    def coverage(self, xy_lv0: np.ndarray, tile_lv0: int) -> np.ndarray:
        """Tissue fraction in [0, 1] of each square tile ``(x, y, tile_lv0)`` (level-0 pixels)."""
        return tile_coverage(self.mask, xy_lv0, tile_lv0, self.scale_x, self.scale_y)


def integral_image(mask: np.ndarray) -> np.ndarray:
    """``ii[y, x] = mask[:y, :x].sum()``, shape ``(h + 1, w + 1)``, int64."""
    ii = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=ii[1:, 1:])
    return ii


def tile_boxes(xy_lv0: np.ndarray, tile_lv0: int, scale_x: float, scale_y: float, shape) -> tuple:
    """Each tile's box in mask pixels: rounded edges, at least one pixel, clipped to the mask."""
    xy = np.asarray(xy_lv0, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    x0 = np.clip(np.rint(xy[:, 0] * scale_x), 0, w - 1).astype(np.int64)
    y0 = np.clip(np.rint(xy[:, 1] * scale_y), 0, h - 1).astype(np.int64)
    x1 = np.clip(np.rint((xy[:, 0] + tile_lv0) * scale_x), x0 + 1, w).astype(np.int64)
    y1 = np.clip(np.rint((xy[:, 1] + tile_lv0) * scale_y), y0 + 1, h).astype(np.int64)
    return x0, y0, x1, y1


def tile_coverage(mask, xy_lv0, tile_lv0, scale_x, scale_y) -> np.ndarray:
    ii = integral_image(np.asarray(mask, dtype=bool))
    x0, y0, x1, y1 = tile_boxes(xy_lv0, tile_lv0, scale_x, scale_y, mask.shape)
    inside = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    return inside / ((x1 - x0) * (y1 - y0))


def read_mask(
    path: str | os.PathLike, *, max_pixels: int = MASK_POOL_PIXELS, notes: list[str] | None = None
) -> np.ndarray:
    """A boolean tissue map from a .tif (any pyramid level, any value coding) or .mha/.mhd/.nrrd.

    Sizes are checked from the header first (``survfusion.limits``); the first level of at most
    ``max_pixels`` is read, else the smallest level is streamed and max-pooled (at most
    ``MAX_MASK_READ_PIXELS``). Non-zero is tissue; NaN is not. A colour (multi-channel) mask counts
    any non-zero channel and adds a line to ``notes``. Raises ``OSError``/``ValueError`` (with the
    reason) when the file cannot be read or is over a limit."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        check_tiff_limits(path, f"tissue mask {path.name}")
        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            small = [lvl for lvl in levels if np.prod(lvl.shape[:2]) <= max_pixels]
            if small:
                data = small[0].asarray()
            elif np.prod(levels[-1].shape[:2], dtype=np.float64) <= MAX_MASK_READ_PIXELS:
                data = _max_pooled(levels[-1].keyframe, max_pixels)
            else:
                raise ValueError(
                    f"its smallest level has more than {MAX_MASK_READ_PIXELS:,} pixels (the reading limit)"
                )
    else:
        data = _read_itk(path)
    data = np.squeeze(np.asarray(data))
    if data.ndim == 3:  # colour mask: tissue where any channel is non-zero
        if notes is not None:
            notes.append(
                f"tissue mask {path.name} has {data.shape[-1]} colour channels (a binary mask has one); "
                "tissue taken where any channel is non-zero"
            )
        data = np.asarray(_tissue_values(data).any(axis=-1))
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {data.shape}")
    return _tissue_values(data)


def _tissue_values(data: np.ndarray) -> np.ndarray:
    """Non-zero and, for floating-point masks, finite: a NaN background is not tissue."""
    if np.issubdtype(data.dtype, np.floating):
        return np.isfinite(data) & (data != 0)
    return data != 0


def _read_itk(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    if max(size) > MAX_SIDE_PX or np.prod(size, dtype=np.float64) > MAX_MASK_READ_PIXELS:
        raise ValueError(f"size {' x '.join(map(str, size))} exceeds the limits for a mask")
    return sitk.GetArrayFromImage(reader.Execute())


def _max_pooled(page, max_pixels: int) -> np.ndarray:
    """Stream a huge mask page segment by segment, any()-pooling by a power of two."""
    h, w = page.imagelength, page.imagewidth
    seg_h = page.tilelength if page.is_tiled else (page.rowsperstrip or h)
    seg_w = page.tilewidth if page.is_tiled else w
    f = 1
    while (h // f) * (w // f) > max_pixels and seg_h % (2 * f) == 0 and seg_w % (2 * f) == 0:
        f *= 2
    out = np.zeros((-(-h // f), -(-w // f)), dtype=bool)
    for seg, index, _ in page.segments():
        if seg is None:
            continue
        seg = np.squeeze(seg, axis=0)[..., 0] if seg.ndim == 4 else seg
        y, x = index[2], index[3]
        seg = seg[: h - y, : w - x] != 0
        sh, sw = -(-seg.shape[0] // f), -(-seg.shape[1] // f)
        pad = np.zeros((sh * f, sw * f), bool)
        pad[: seg.shape[0], : seg.shape[1]] = seg
        out[y // f : y // f + sh, x // f : x // f + sw] |= pad.reshape(sh, f, sw, f).any(axis=(1, 3))
    return out


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values: the split that maximises the between-class variance."""
    hist = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    return float(np.nanargmax(np.nan_to_num(between, nan=-1.0)))


def otsu_tissue(slide: Slide, max_px: int = 2048) -> TissueMask:
    """Tissue = saturation above Otsu's threshold (and above ``MIN_SATURATION``) on a thumbnail."""
    thumb, _ = slide.thumbnail(max_px)
    rgb = thumb.astype(np.int16)
    saturation = (rgb.max(axis=-1) - rgb.min(axis=-1)).astype(np.uint8)
    threshold = max(otsu_threshold(saturation), MIN_SATURATION)
    mask = saturation > threshold
    w0, h0 = slide.dimensions
    return TissueMask(mask, mask.shape[1] / w0, mask.shape[0] / h0, "otsu")


def find_tissue(slide: Slide, mask_path: str | os.PathLike | None) -> tuple[TissueMask, list[str]]:
    """The slide's tissue from its mask file, or from Otsu with a warning that says why.

    A mask problem never drops the slide: an unreadable, oversized or empty mask falls back to Otsu.
    A mask that calls (almost) everything tissue where the slide is mostly background, or a colour
    mask, is kept with a warning: it may be the wrong file."""
    w0, h0 = slide.dimensions
    if mask_path is None:
        reason = "no tissue mask given"
    elif not Path(mask_path).is_file():
        reason = f"tissue mask {Path(mask_path).name} not found"
    else:
        notes: list[str] = []
        try:
            mask = read_mask(mask_path, notes=notes)
        except (OSError, ValueError, RuntimeError, KeyError, IndexError, MemoryError) as err:
            # Reading the mask is CPU-only work on the input's bytes: every failure is the mask's, and a
            # mask problem never drops the slide (Otsu stands in).
            reason = f"tissue mask {Path(mask_path).name} unreadable ({type(err).__name__}: {err})"
        else:
            if mask.any():
                doubts = _mask_doubts(slide, mask, Path(mask_path).name)
                return TissueMask(mask, mask.shape[1] / w0, mask.shape[0] / h0, "mask"), [*notes, *doubts]
            reason = f"tissue mask {Path(mask_path).name} is empty (no non-zero pixel)"
    return otsu_tissue(slide), [f"{reason}; using Otsu tissue detection on a thumbnail instead"]


def _mask_doubts(slide: Slide, mask: np.ndarray, name: str) -> list[str]:
    w0, h0 = slide.dimensions
    doubts = []
    aspect_mask, aspect_slide = mask.shape[1] / mask.shape[0], w0 / h0
    if abs(aspect_mask / aspect_slide - 1) > 0.05:
        doubts.append(
            f"tissue mask {name}: aspect ratio {aspect_mask:.3f} differs from the slide's "
            f"{aspect_slide:.3f}; aligned by physical extent anyway"
        )
    covered = float(mask.mean())
    if covered >= ALL_TISSUE:
        seen = float(otsu_tissue(slide).mask.mean())
        if seen < MOSTLY_BACKGROUND:
            doubts.append(
                f"tissue mask {name} marks {covered:.0%} of the slide as tissue while the slide looks "
                f"{1 - seen:.0%} background (Otsu); is it the tissue mask? used as given"
            )
    return doubts
