"""Slide -> tiles -> encoder -> feature file; the same code serves the cohort CLI and the container.

The pipeline per slide:

1. ``plan_tiles``: open the slide, choose the level by spacing (``geometry.plan_read``), lay the
   grid at level 0, keep tiles whose tissue fraction is at least ``min_tissue`` (``tissue``).
2. ``BatchReader``: a background thread reads batches of tiles (each stored TIFF tile decoded once
   per batch, decoding spread over threads) into pinned uint8 tensors, ``prefetch`` batches ahead,
   so the encoder never waits for the disk.
3. ``TileEncoder.embed`` on the device; results gathered on the CPU.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import survfusion
from survfusion.encoders import TileEncoder
from survfusion.features import write_features
from survfusion.geometry import (
    DEFAULT_TARGET_SPACING_UM,
    DEFAULT_TILE_PX,
    DEFAULT_TOLERANCE,
    ReadPlan,
    plan_read,
    tile_grid,
)
from survfusion.slide import Slide, open_slide
from survfusion.tissue import find_tissue

DEFAULT_MIN_TISSUE = 0.25


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one extraction (saved as feature-file attributes)."""

    target_spacing_um: float = DEFAULT_TARGET_SPACING_UM
    tile_px: int = DEFAULT_TILE_PX
    min_tissue: float = DEFAULT_MIN_TISSUE  # keep tiles with at least this tissue fraction
    tolerance: float = DEFAULT_TOLERANCE
    batch_size: int = 64
    read_threads: int = 4
    prefetch: int = 2
    spacing_um: float | None = None  # override the slide's own spacing


@dataclass(frozen=True)
class TilePlan:
    read: ReadPlan
    coords_lv0: np.ndarray
    coverage: np.ndarray
    tissue_source: str
    warnings: list[str] = field(default_factory=list)


def plan_tiles(slide: Slide, mask_path: str | os.PathLike | None, cfg: ExtractConfig) -> TilePlan:
    read = plan_read(
        spacing_um=slide.spacing_um,
        downsamples=slide.downsamples,
        target_spacing_um=cfg.target_spacing_um,
        tile_px=cfg.tile_px,
        tolerance=cfg.tolerance,
    )
    tissue, warnings = find_tissue(slide, mask_path)
    w0, h0 = slide.dimensions
    grid = tile_grid(width_lv0=w0, height_lv0=h0, tile_lv0=read.tile_lv0)
    coverage = tissue.coverage(grid, read.tile_lv0) if len(grid) else np.zeros(0)
    keep = coverage >= cfg.min_tissue if cfg.min_tissue > 0 else coverage > 0
    if not keep.any():
        warnings = [
            *warnings,
            f"slide {slide.path}: no tissue tile (of {len(grid)} grid tiles, none has "
            f">= {cfg.min_tissue:.0%} tissue by the {tissue.source}); 0 tiles",
        ]
    return TilePlan(read, grid[keep], coverage[keep], tissue.source, warnings)


class BatchReader:
    """Reads tile batches in a background thread, ``prefetch`` batches ahead, into uint8 tensors
    ``(B, read_px, read_px, 3)`` (pinned when ``pin`` so the copy to the GPU is asynchronous)."""

    def __init__(
        self, slide: Slide, plan: TilePlan, batch_size: int, *, prefetch: int = 2, pin: bool = False
    ):
        self.slide, self.plan, self.batch_size, self.pin = slide, plan, batch_size, pin
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _batches(self) -> Iterator[np.ndarray]:
        ds = self.slide.levels[self.plan.read.level].downsample
        xy_lv = np.rint(self.plan.coords_lv0 / ds).astype(np.int64)
        size = (self.plan.read.read_px, self.plan.read.read_px)
        for start in range(0, len(xy_lv), self.batch_size):
            yield self.slide.read_regions(self.plan.read.level, xy_lv[start : start + self.batch_size], size)

    def _put(self, item) -> bool:
        """Queue ``item`` unless the consumer has stopped; False once it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for batch in self._batches():
                tensor = torch.from_numpy(batch)
                if not self._put(tensor.pin_memory() if self.pin else tensor):
                    return
            self._put(None)
        except BaseException as err:  # handed to the consumer, raised there
            self._put(err)

    def __iter__(self) -> Iterator[torch.Tensor]:
        self._thread.start()
        try:
            while (item := self._queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()
            self._thread.join()


@dataclass
class SlideFeatures:
    features: np.ndarray
    coords_lv0: np.ndarray
    attrs: dict
    warnings: list[str]
    seconds: dict


def embed_slide(
    slide_path: str | os.PathLike,
    mask_path: str | os.PathLike | None,
    encoder: TileEncoder,
    cfg: ExtractConfig = ExtractConfig(),
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> SlideFeatures:
    """Tile and embed one slide. ``on_batch(n_done, n_total)`` is called after each batch (progress)."""
    t0 = time.perf_counter()
    with open_slide(slide_path, spacing_um=cfg.spacing_um, threads=cfg.read_threads) as slide:
        t_open = time.perf_counter()
        plan = plan_tiles(slide, mask_path, cfg)
        t_plan = time.perf_counter()
        chunks = []
        if len(plan.coords_lv0):
            reader = BatchReader(
                slide, plan, cfg.batch_size, prefetch=cfg.prefetch, pin=encoder.device.type == "cuda"
            )
            for batch in reader:
                chunks.append(encoder.embed(batch).numpy())
                if on_batch:
                    on_batch(len(batch), len(plan.coords_lv0))
        features = np.concatenate(chunks) if chunks else np.zeros((0, encoder.embed_dim), np.float32)
        w0, h0 = slide.dimensions
        slide_spacing = slide.spacing_um
    t_end = time.perf_counter()
    attrs = {
        "encoder": encoder.name,
        "weights_sha256": encoder.weights_sha256,
        "precision": encoder.precision,
        "target_spacing_um": cfg.target_spacing_um,
        "spacing_um": plan.read.spacing_um,
        "tile_px": cfg.tile_px,
        "tile_lv0": plan.read.tile_lv0,
        "level": plan.read.level,
        "level_spacing_um": plan.read.level_spacing_um,
        "read_px": plan.read.read_px,
        "scale": plan.read.scale,
        "slide_width_lv0": w0,
        "slide_height_lv0": h0,
        "slide_spacing_um": slide_spacing,
        "min_tissue": cfg.min_tissue,
        "tissue_source": plan.tissue_source,
        "slide_name": Path(slide_path).name,
        "survfusion_version": survfusion.__version__,
    }
    seconds = {"open": t_open - t0, "tissue": t_plan - t_open, "embed": t_end - t_plan}
    return SlideFeatures(features, plan.coords_lv0, attrs, plan.warnings, seconds)


def request_attrs(encoder: TileEncoder, cfg: ExtractConfig) -> dict:
    """The attributes a cached feature file must match (``features.REQUEST_KEYS``)."""
    return {
        "encoder": encoder.name,
        "weights_sha256": encoder.weights_sha256,
        "target_spacing_um": cfg.target_spacing_um,
        "tile_px": cfg.tile_px,
        "min_tissue": cfg.min_tissue,
    }


def extract_slide(
    slide_path,
    mask_path,
    out_path,
    encoder: TileEncoder,
    cfg: ExtractConfig = ExtractConfig(),
    *,
    on_batch=None,
) -> SlideFeatures:
    """``embed_slide`` then write the feature file atomically."""
    result = embed_slide(slide_path, mask_path, encoder, cfg, on_batch=on_batch)
    write_features(out_path, result.features, result.coords_lv0, result.attrs)
    return result
