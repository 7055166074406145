"""Pure geometry: which pyramid level to read for a physical spacing, and the tile grid.

Frames are named in every identifier: ``*_lv0`` is level-0 pixels, ``*_lv`` pixels of the level
read, ``tile_px`` pixels of the output tile (at the target spacing), ``*_um`` micrometres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from survfusion.errors import UserError

DEFAULT_TARGET_SPACING_UM = 1.0  # 10x, the paper
DEFAULT_TILE_PX = 224
DEFAULT_TOLERANCE = 0.05  # a level within 5 % of the target spacing is used as it is


@dataclass(frozen=True)
class ReadPlan:
    """How tiles of ``tile_px`` at ``target_spacing_um`` are read from a slide.

    Attributes:
        level: pyramid level read.
        level_spacing_um: spacing of that level (µm/px).
        target_spacing_um: the requested spacing.
        read_px: side of the square read at ``level`` for one tile.
        scale: ``read_px / tile_px`` (>= 1; 1 means the level is used as it is, > 1 means the read
            is area-downsampled to ``tile_px``). Never < 1: nothing is ever upsampled.
        tile_px: side of the output tile.
        tile_lv0: side of one tile in level-0 pixels, which is also the grid step.
        spacing_um: the spacing the tiles end up with, ``level_spacing_um * scale``.
    """

    level: int
    level_spacing_um: float
    target_spacing_um: float
    read_px: int
    scale: float
    tile_px: int
    tile_lv0: int

    @property
    def spacing_um(self) -> float:
        return self.level_spacing_um * self.scale

    def to_dict(self) -> dict:
        return {**asdict(self), "spacing_um": self.spacing_um}


def plan_read(
    *,
    spacing_um: float,
    downsamples: Sequence[float],
    target_spacing_um: float = DEFAULT_TARGET_SPACING_UM,
    tile_px: int = DEFAULT_TILE_PX,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ReadPlan:
    """Choose the level by physical spacing (never by index).

    A level whose spacing is within ``tolerance`` (relative) of the target is read as it is (the
    closest such level). Otherwise the coarsest level *finer* than the target is read over a larger
    square and area-downsampled. A target finer than level 0 (beyond the tolerance) would need
    upsampling and is refused.
    """
    if not (spacing_um > 0 and np.isfinite(spacing_um)):
        raise UserError(f"slide spacing must be a positive number of µm/px, got {spacing_um}")
    if not target_spacing_um > 0:
        raise UserError(f"target spacing must be positive, got {target_spacing_um}")
    level_spacing = np.asarray(downsamples, dtype=float) * spacing_um
    rel = np.abs(level_spacing / target_spacing_um - 1.0)
    if rel.min() <= tolerance:
        level = int(np.argmin(rel))
        read_px = tile_px
    else:
        finer = np.flatnonzero(level_spacing < target_spacing_um)
        if finer.size == 0:
            raise UserError(
                f"target spacing {target_spacing_um} µm/px is finer than the slide's level 0 "
                f"({spacing_um:.4g} µm/px); tiles would have to be upsampled"
            )
        level = int(finer[np.argmax(level_spacing[finer])])
        read_px = round(tile_px * target_spacing_um / level_spacing[level])
    return ReadPlan(
        level=level,
        level_spacing_um=float(level_spacing[level]),
        target_spacing_um=float(target_spacing_um),
        read_px=int(read_px),
        scale=read_px / tile_px,
        tile_px=int(tile_px),
        tile_lv0=round(read_px * float(downsamples[level])),
    )


def tile_grid(*, width_lv0: int, height_lv0: int, tile_lv0: int) -> np.ndarray:
    """Top-left corners ``(x, y)`` in level-0 pixels of the non-overlapping tiles that fit entirely
    inside the slide, row by row. Shape ``(N, 2)``, int64."""
    xs = np.arange(0, width_lv0 - tile_lv0 + 1, tile_lv0, dtype=np.int64)
    ys = np.arange(0, height_lv0 - tile_lv0 + 1, tile_lv0, dtype=np.int64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def uniform_subset(*, xy_lv0: np.ndarray, tile_lv0: int, max_tiles: int) -> np.ndarray:
    """Indices (ascending) of at most ``max_tiles`` tiles spread evenly over the tissue.

    The tiles are ordered along a Z-order (Morton) curve of their grid positions, which keeps
    neighbours in the plane near each other on the curve, and every ``n / max_tiles``-th tile of that
    order is kept. So each region of the tissue keeps about the same share of its tiles, unlike a
    prefix of the row-major grid (the top of the slide) or a random draw (clumps and holes).
    Deterministic: the same tiles every time.
    """
    n = len(xy_lv0)
    if max_tiles < 1:
        raise UserError(f"max_tiles must be at least 1, got {max_tiles}")
    if n <= max_tiles:
        return np.arange(n)
    grid = (np.asarray(xy_lv0, dtype=np.int64) // max(int(tile_lv0), 1)).astype(np.uint64)
    order = np.argsort(_morton(grid[:, 0], grid[:, 1]), kind="stable")
    picks = np.floor((np.arange(max_tiles) + 0.5) * n / max_tiles).astype(np.int64)
    return np.sort(order[picks])


def _morton(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Interleave the bits of ``x`` and ``y`` (each < 2^31): the Z-order key."""

    def spread(v: np.ndarray) -> np.ndarray:
        v = v & np.uint64(0x7FFFFFFF)
        for shift, magic in (
            (16, 0x0000FFFF0000FFFF),
            (8, 0x00FF00FF00FF00FF),
            (4, 0x0F0F0F0F0F0F0F0F),
            (2, 0x3333333333333333),
            (1, 0x5555555555555555),
        ):
            v = (v | (v << np.uint64(shift))) & np.uint64(magic)
        return v

    return spread(x) | (spread(y) << np.uint64(1))
