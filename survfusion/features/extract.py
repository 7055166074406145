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
from survfusion.features.device import auto_batch_size
from survfusion.features.h5 import write_features
from survfusion.features.request import REQUEST_ATTR, ExtractConfig, FeatureRequest
from survfusion.features.tile_encoder import TileEncoder
from survfusion.fileio import canonical_json
from survfusion.limits import MAX_GRID_TILES
from survfusion.slides.geometry import ReadPlan, plan_read, tile_grid, uniform_subset
from survfusion.slides.reader import Slide, SlideError, open_slide
from survfusion.slides.tissue import find_tissue

DEFAULT_EXTRACT = ExtractConfig()


def feature_request(encoder: TileEncoder, cfg: ExtractConfig) -> FeatureRequest:
    """What features made by ``encoder`` with ``cfg`` are: the cache key and the bundle's record."""
    return FeatureRequest(
        encoder=encoder.name,
        weights_sha256=encoder.weights_sha256,
        precision=encoder.precision,
        **cfg.tiling(),
    )


@dataclass(frozen=True)
class TilePlan:
    read: ReadPlan
    coords_lv0: np.ndarray
    coverage: np.ndarray
    tissue_source: str
    n_tissue: int  # tissue tiles before any max_tiles cap
    warnings: list[str] = field(default_factory=list)


def plan_tiles(slide: Slide, mask_path: str | os.PathLike | None, cfg: ExtractConfig) -> TilePlan:
    read = plan_read(
        spacing_um=slide.spacing_um,
        downsamples=slide.downsamples,
        target_spacing_um=cfg.target_spacing_um,
        tile_px=cfg.tile_px,
        tolerance=cfg.tolerance,
    )
    w0, h0 = slide.dimensions
    n_grid = (w0 // read.tile_lv0) * (h0 // read.tile_lv0)
    if n_grid > MAX_GRID_TILES:
        raise SlideError(
            f"slide {slide.path.name}: {n_grid:,} tiles at {cfg.target_spacing_um} µm/px exceed the limit of "
            f"{MAX_GRID_TILES:,}"
        )
    tissue, warnings = find_tissue(slide, mask_path)
    grid = tile_grid(width_lv0=w0, height_lv0=h0, tile_lv0=read.tile_lv0)
    coverage = tissue.coverage(grid, read.tile_lv0) if len(grid) else np.zeros(0)
    keep = coverage >= cfg.min_tissue if cfg.min_tissue > 0 else coverage > 0
    if not keep.any():
        warnings = [
            *warnings,
            f"slide {slide.path}: no tissue tile (of {len(grid)} grid tiles, none has "
            f">= {cfg.min_tissue:.0%} tissue by the {tissue.source}); 0 tiles",
        ]
    coords, coverage = grid[keep], coverage[keep]
    n_tissue = len(coords)
    if cfg.max_tiles is not None and n_tissue > cfg.max_tiles:
        chosen = uniform_subset(xy_lv0=coords, tile_lv0=read.tile_lv0, max_tiles=cfg.max_tiles)
        coords, coverage = coords[chosen], coverage[chosen]
    return TilePlan(read, coords, coverage, tissue.source, n_tissue, warnings)


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
    warnings: list[str]  # problems of the input (mask, tissue): a fallback, --strict fails on them
    seconds: dict
    notes: list[str] = field(default_factory=list)  # faults of the device worked around (log only)


def embed_slide(
    slide_path: str | os.PathLike,
    mask_path: str | os.PathLike | None,
    encoder: TileEncoder,
    cfg: ExtractConfig = DEFAULT_EXTRACT,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> SlideFeatures:
    """Tile and embed one slide. ``on_batch(n_done, n_total)`` is called after each batch (progress)."""
    t0 = time.perf_counter()
    encoder.take_notes(0)  # forget faults of an earlier slide that failed
    with open_slide(slide_path, spacing_um=cfg.spacing_override_um, threads=cfg.read_threads) as slide:
        t_open = time.perf_counter()
        plan = plan_tiles(slide, mask_path, cfg)
        t_plan = time.perf_counter()
        chunks = []
        if len(plan.coords_lv0):
            reader = BatchReader(
                slide,
                plan,
                cfg.batch_size or auto_batch_size(encoder.device),
                prefetch=cfg.prefetch,
                pin=encoder.device.type == "cuda",
            )
            for batch in reader:
                chunks.append(encoder.embed(batch).numpy())
                if on_batch:
                    on_batch(len(batch), len(plan.coords_lv0))
        features = np.concatenate(chunks) if chunks else np.zeros((0, encoder.embed_dim), np.float32)
        w0, h0 = slide.dimensions
        slide_spacing = slide.spacing_um
    t_end = time.perf_counter()
    request = feature_request(encoder, cfg)
    attrs = {
        REQUEST_ATTR: canonical_json(request.to_dict()).decode(),
        "encoder": encoder.name,
        "weights_sha256": encoder.weights_sha256,
        "precision": encoder.precision,
        "weights_dtype": encoder.weights_dtype,
        "precision_note": encoder.precision_note,  # auto's departure from the reference's precision
        "embed_dim": encoder.embed_dim,
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
        "max_tiles": cfg.max_tiles,
        "tissue_tiles": plan.n_tissue,
        "tissue_source": plan.tissue_source,
        "slide_name": Path(slide_path).name,
        "survfusion_version": survfusion.__version__,
    }
    seconds = {"open": t_open - t0, "tissue": t_plan - t_open, "embed": t_end - t_plan}
    notes = encoder.take_notes(len(features))
    return SlideFeatures(features, plan.coords_lv0, attrs, plan.warnings, seconds, notes)


def extract_slide(
    slide_path,
    mask_path,
    out_path,
    encoder: TileEncoder,
    cfg: ExtractConfig = DEFAULT_EXTRACT,
    *,
    on_batch=None,
) -> SlideFeatures:
    """``embed_slide`` then write the feature file atomically."""
    result = embed_slide(slide_path, mask_path, encoder, cfg, on_batch=on_batch)
    write_features(out_path, result.features, result.coords_lv0, result.attrs)
    return result
