"""A large synthetic JPEG pyramid for the benchmarks, written tile by tile (never held in memory).

40,000 x 32,000 px at 0.25 µm/px, 512-px JPEG tiles, levels as reduced-resolution pages, tissue
blobs of H&E-like texture on white; plus a binary mask at 1/32 resolution. Cached under
``bench/.data`` (gitignored); about a minute to write the first time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from survfusion.slides.tiffwrite import write_mask, write_pyramid

WIDTH, HEIGHT, SPACING_UM, TILE = 40_000, 32_000, 0.25, 512
DATA = Path(__file__).resolve().parent / ".data"


def _tissue(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Tissue where a few smooth blobs overlap (level-0 coordinates)."""
    blobs = [(0.35, 0.3, 0.22, 0.18), (0.6, 0.65, 0.25, 0.2), (0.3, 0.75, 0.15, 0.12)]
    inside = np.zeros(np.broadcast(y, x).shape, bool)
    for cy, cx, ry, rx in blobs:
        inside |= ((y / HEIGHT - cy) / ry) ** 2 + ((x / WIDTH - cx) / rx) ** 2 < 1
    return inside


def _textures(n: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    out = []
    for _ in range(n):
        base = rng.uniform([150, 60, 120], [220, 140, 200])
        fx, fy = rng.uniform(3, 12, 2)
        tex = rng.normal(0, 20, (TILE, TILE, 1)) + 30 * (np.sin(xx / fx) * np.cos(yy / fy))[..., None]
        out.append((base + tex).clip(0, 255).astype(np.uint8))
    return out


def ensure_big_slide() -> tuple[Path, Path]:
    DATA.mkdir(exist_ok=True)
    slide, mask = DATA / "big.tif", DATA / "big_mask.tif"
    if slide.exists() and mask.exists():
        return slide, mask
    textures = _textures()

    def region(ds, y, x, h, w):
        yy, xx = np.mgrid[y : y + h, x : x + w] * ds
        out = np.full((h, w, 3), 244, np.uint8)
        inside = _tissue(yy, xx)
        if inside.any():
            tex = textures[(y // TILE * 7 + x // TILE * 3 + ds) % len(textures)][:h, :w]
            out[inside] = tex[inside]
        return out

    t0 = time.perf_counter()
    write_pyramid(slide, region, size_px=(WIDTH, HEIGHT), spacing_um=SPACING_UM, tile_px=TILE, quality=85)
    my, mx = np.mgrid[0 : HEIGHT // 32, 0 : WIDTH // 32] * 32 + 16
    write_mask(mask, _tissue(my, mx), spacing_um=SPACING_UM * 32)
    print(f"wrote {slide} ({slide.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    return slide, mask
