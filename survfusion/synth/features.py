"""Synthetic tile features of any registered encoder's width, for a synthetic cohort, without
running the encoder: what lets a team try training, packaging and the bundle checks at UNI2-h's
1536 or Virchow2's 2560 dimensions in seconds on a laptop.

Each tile of a patient gets a tissue class drawn from the patient's planted mix (``oracle.csv``
of ``survfusion.synth.cohort``), and its embedding is that class's prototype plus noise:
``x = P[class] + 0.5 z + 0.3 [cohort 3B] s`` with ``P`` and ``s`` fixed random directions of the
encoder's width (seeded by ``seed``) and ``z`` standard normal. So the planted tissue signal
(tumour and lymphocyte fractions) is in the bags, as it is in the slides' real embeddings.

The files are feature files like any other (``survfusion.features.h5``): a ``FeatureRequest``
naming the encoder, the sha256 of the weights file given (so ``package`` accepts those weights),
the encoder's default tiling, and ``synthetic`` saying how they were made, plus each tile's planted
class (the ``tile_class`` labels of ``survfusion.features.h5``, for ``explain``'s enrichment). A
model trained on them is for testing the pipeline: a real slide's embeddings are not these.
"""

from __future__ import annotations

import csv
import os
import zlib
from pathlib import Path

import numpy as np

import survfusion
from survfusion.errors import UserError
from survfusion.features.encoders import encoder_spec
from survfusion.features.h5 import feature_path, write_features
from survfusion.features.request import REQUEST_ATTR, ExtractConfig, FeatureRequest
from survfusion.fileio import canonical_json, sha256_file
from survfusion.synth.cohort import CLASSES
from survfusion.training.cohort import ORACLE_FILE

NOT_WEIGHTS = "0" * 64  # the weights_sha256 of features made without a weights file
HOW = "synthetic: class prototype + N(0, 0.5^2) per tile from the planted tissue mix; not an encoder's output"


def read_mixes(cohort: Path) -> dict[str, np.ndarray]:
    """case id -> planted tissue-class fractions, from a synthetic cohort's oracle.csv."""
    path = cohort / ORACLE_FILE
    if not path.is_file():
        raise UserError(
            f"synth-features: {path} not found; give a cohort written by 'python -m survfusion synth'"
        )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # a cohort written before the budding class (needle world) existed has no column for it: 0
    return {r["case_id"]: np.array([float(r.get(f"frac_{c}") or 0.0) for c in CLASSES]) for r in rows}


def write_synthetic_features(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    *,
    encoder: str,
    weights: str | os.PathLike | None = None,
    tiles: int = 64,
    seed: int = 0,
) -> int:
    """One ``<case_id>.h5`` per patient of ``cohort`` in ``out``; returns the feature width."""
    spec = encoder_spec(encoder)
    request = FeatureRequest(
        encoder=spec.name,
        weights_sha256=sha256_file(weights) if weights else NOT_WEIGHTS,
        precision="fp32",
        **ExtractConfig(target_spacing_um=spec.spacing_um, tile_px=spec.tile_px).tiling(),
    )
    side = int(np.ceil(np.sqrt(max(tiles, 1))))
    coords = np.array([(i % side, i // side) for i in range(tiles)], np.int64) * spec.tile_px * 2
    for case_id, x, classes in synthetic_bags(Path(cohort), spec.embed_dim, tiles, seed):
        attrs = {
            REQUEST_ATTR: canonical_json(request.to_dict()).decode(),
            "encoder": spec.name,
            "weights_sha256": request.weights_sha256,
            "precision": "fp32",
            "embed_dim": spec.embed_dim,
            "target_spacing_um": spec.spacing_um,
            "tile_px": spec.tile_px,
            "tile_lv0": spec.tile_px * 2,
            "synthetic": HOW,
            "survfusion_version": survfusion.__version__,
        }
        write_features(feature_path(out, case_id), x, coords, attrs, tile_class=(list(CLASSES), classes))
    return spec.embed_dim


def synthetic_bags(cohort: Path, width: int, tiles: int, seed: int):
    """``(case_id, (tiles, width) float32, (tiles,) planted class)`` for every patient of
    ``cohort``, as the module says."""
    if not 1 <= tiles <= 100_000:
        raise UserError(f"synth-features: --tiles must be 1..100000, got {tiles}")
    mixes = read_mixes(cohort)
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(4, width)) / np.sqrt(width) * 4.0
    shift = rng.normal(size=width) / np.sqrt(width) * 4.0
    # the budding class (needle world) last, so the other classes' prototypes are what they were
    prototypes = np.concatenate([prototypes, rng.normal(size=(1, width)) / np.sqrt(width) * 4.0])
    for case_id, mix in mixes.items():
        # a stream per case: the whole id hashed (its first four bytes alone are shared by most ids)
        case_rng = np.random.default_rng([seed, zlib.crc32(case_id.encode())])
        classes = case_rng.choice(len(CLASSES), size=tiles, p=mix / mix.sum())
        x = prototypes[classes] + 0.5 * case_rng.normal(size=(tiles, width))
        if case_id.startswith("3B"):
            x += 0.3 * shift
        yield case_id, x.astype(np.float32), classes


def write_release_features(release: str | os.PathLike, *, width: int, tiles: int = 64, seed: int = 0) -> None:
    """The organisers' feature format for a synthetic release: ``features/features/<pid>_HE.pt``
    (a plain ``(N, width)`` float32 tensor, ``torch.save``) and ``features/coordinates/<pid>_HE.npy``
    (a structured array with fields ``x, y, tile_size_resized, tile_level, resize_factor,
    tile_size_lv0, target_spacing``; x/y level-0 pixels on a grid of ``tile_size_lv0``)."""
    import torch

    from survfusion.synth.release import (
        RELEASE_COORDS_DTYPE,
        RELEASE_SLIDE_SPACING_UM,
        RELEASE_SPACING_UM,
        RELEASE_TILE_PX,
    )
    from survfusion.training import release as r

    release = Path(release)
    lv0 = round(RELEASE_TILE_PX * RELEASE_SPACING_UM / RELEASE_SLIDE_SPACING_UM)
    side = int(np.ceil(np.sqrt(tiles)))
    for d in (r.FEATURES_DIR, r.COORDS_DIR):
        (release / d).mkdir(parents=True, exist_ok=True)
    for case_id, x, _ in synthetic_bags(release, width, tiles, seed):
        coords = np.zeros(tiles, dtype=RELEASE_COORDS_DTYPE)
        coords["x"] = [(i % side) * lv0 for i in range(tiles)]
        coords["y"] = [(i // side) * lv0 for i in range(tiles)]
        coords["tile_size_resized"] = RELEASE_TILE_PX
        coords["tile_level"] = 0
        coords["resize_factor"] = lv0 / RELEASE_TILE_PX
        coords["tile_size_lv0"] = lv0
        coords["target_spacing"] = RELEASE_SPACING_UM
        torch.save(torch.from_numpy(x), release / r.FEATURES_DIR / f"{case_id}_HE.pt")
        np.save(release / r.COORDS_DIR / f"{case_id}_HE.npy", coords, allow_pickle=False)
