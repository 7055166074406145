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

from survfusion.slide import Slide

MAX_MASK_PIXELS = 1 << 26  # masks larger than this (at their coarsest level) are max-pooled while read
MIN_SATURATION = 20  # 0-255: below this, a thumbnail is background however Otsu splits it


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


def read_mask(path: str | os.PathLike, *, max_pixels: int = MAX_MASK_PIXELS) -> np.ndarray:
    """A boolean tissue map from a .tif (any pyramid level, any value coding) or .mha/.mhd/.nrrd.

    Raises ``OSError``/``ValueError`` (with the reason) when the file cannot be read."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            small = [lvl for lvl in levels if np.prod(lvl.shape[:2]) <= max_pixels]
            data = small[0].asarray() if small else _max_pooled(levels[-1].keyframe, max_pixels)
    else:
        import SimpleITK as sitk

        data = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    data = np.squeeze(np.asarray(data))
    if data.ndim == 3:  # colour mask: tissue where any channel is non-zero
        data = data.any(axis=-1)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {data.shape}")
    return data != 0


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
    """The slide's tissue from its mask file, or from Otsu with a warning that says why."""
    w0, h0 = slide.dimensions
    if mask_path is None:
        reason = "no tissue mask given"
    elif not Path(mask_path).is_file():
        reason = f"tissue mask {mask_path} not found"
    else:
        try:
            mask = read_mask(mask_path)
        except (OSError, ValueError, RuntimeError, KeyError, IndexError, MemoryError) as err:
            # Reading the mask is CPU-only work on the input's bytes: every failure is the mask's, and a
            # mask problem never drops the slide (Otsu stands in).
            reason = f"tissue mask {mask_path} unreadable ({type(err).__name__}: {err})"
        else:
            if mask.any():
                warnings = []
                aspect_mask, aspect_slide = mask.shape[1] / mask.shape[0], w0 / h0
                if abs(aspect_mask / aspect_slide - 1) > 0.05:
                    warnings.append(
                        f"tissue mask {mask_path}: aspect ratio {aspect_mask:.3f} differs from the "
                        f"slide's {aspect_slide:.3f}; aligned by physical extent anyway"
                    )
                return TissueMask(mask, mask.shape[1] / w0, mask.shape[0] / h0, "mask"), warnings
            reason = f"tissue mask {mask_path} is empty (no non-zero pixel)"
    return otsu_tissue(slide), [f"{reason}; using Otsu tissue detection on a thumbnail instead"]
