"""Tile reading on one core: our batched TIFF reader vs openslide read_region per tile, and the ceiling.

Same slide, same level, same tile list, same process, interleaved repeats; medians reported.

- openslide: ``OpenSlide.read_region(xy_lv0, level, (224, 224))`` then RGBA -> RGB, one call per tile
  (what CLAM and TRIDENT do);
- ours: ``TiffSlide.read_regions`` in batches of 64 with one decoding thread (each stored 512-px JPEG
  tile decoded once per batch);
- ceiling: decoding every stored tile of the level exactly once (imagecodecs), expressed as 224-px
  tiles per second: no reader of the whole level can beat it.

    python bench/reading.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openslide

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigslide import ensure_big_slide

from survfusion.slides.geometry import plan_read, tile_grid
from survfusion.slides.reader import TiffSlide


def bench_openslide(path, level, xy_lv0, size) -> float:
    osr = openslide.OpenSlide(str(path))
    t0 = time.perf_counter()
    for x, y in xy_lv0:
        np.asarray(osr.read_region((int(x), int(y)), level, (size, size)).convert("RGB"))
    dt = time.perf_counter() - t0
    osr.close()
    return len(xy_lv0) / dt


def bench_ours(path, level, xy_lv, size, batch=64) -> float:
    with TiffSlide(path, threads=1) as slide:
        t0 = time.perf_counter()
        for i in range(0, len(xy_lv), batch):
            slide.read_regions(level, xy_lv[i : i + batch], (size, size))
        dt = time.perf_counter() - t0
    return len(xy_lv) / dt


def bench_ceiling(path, level, n_tiles) -> float:
    with TiffSlide(path, threads=1) as slide:
        page = slide._pages[level]
        t0 = time.perf_counter()
        for i in range(len(page.dataoffsets)):
            slide._segment(page, i)
        dt = time.perf_counter() - t0
    return n_tiles / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for every contender
    path, _ = ensure_big_slide()
    with TiffSlide(path) as slide:
        plan = plan_read(spacing_um=slide.spacing_um, downsamples=slide.downsamples)
        w0, h0 = slide.dimensions
        lv = slide.levels[plan.level]
    xy_lv0 = tile_grid(width_lv0=w0, height_lv0=h0, tile_lv0=plan.tile_lv0)
    xy_lv = (xy_lv0 // plan.tile_lv0) * plan.read_px
    print(
        f"slide {w0} x {h0} px at 0.25 µm/px; level {plan.level} ({lv.width} x {lv.height}, "
        f"{plan.level_spacing_um} µm/px); {len(xy_lv0)} tiles of {plan.read_px} px; 1 core; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus visible"
    )
    rates = {"openslide": [], "ours": [], "ceiling": []}
    for _ in range(args.repeats):
        rates["openslide"].append(bench_openslide(path, plan.level, xy_lv0, plan.read_px))
        rates["ceiling"].append(bench_ceiling(path, plan.level, len(xy_lv0)))
        rates["ours"].append(bench_ours(path, plan.level, xy_lv, plan.read_px))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(f"{k:>10}: median {med[k]:8.1f} tiles/s  (runs: {', '.join(f'{r:.1f}' for r in v)})")
    print(
        f"ours / openslide = {med['ours'] / med['openslide']:.2f}x;  ours / ceiling = "
        f"{100 * med['ours'] / med['ceiling']:.0f}%"
    )


if __name__ == "__main__":
    main()
