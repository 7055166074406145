"""Test fixtures that are not part of the package: a complete model directory around an untrained
model, for the container's tests and the benchmarks (``bench/`` puts ``test/`` on its path)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from survfusion.serving.preprocess import reference_genes
from survfusion.synth.cohort import make_patients


def write_untrained_model(
    out: str | os.PathLike,
    encoder_weights: str | os.PathLike,
    *,
    encoder: str = "vit-tiny",
    precision: str = "fp32",
    n_genes: int = 512,
    seed: int = 0,
    members: int = 1,
) -> Path:
    """A complete model directory around an *untrained* ABMIL_Surv_PG (seeded weights, ``n_genes``
    genes, calibration on synthetic outcomes) for ``encoder``'s features: every part a real one has,
    for tests and benchmarks of the container's path; ``members`` > 1 makes it an ensemble of
    differently seeded members. Never a model to submit."""
    import torch

    from survfusion.features.encoders import encoder_spec
    from survfusion.features.request import ExtractConfig, FeatureRequest
    from survfusion.fileio import sha256_file
    from survfusion.nets.calibration import RiskToTime
    from survfusion.nets.models import build_model
    from survfusion.serving.bundle import Bundle, Member
    from survfusion.serving.bundle_io import save_bundle
    from survfusion.serving.modeldir import write_model_dir
    from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer

    out = Path(out)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    patients = make_patients(40, seed=seed + 5)
    request = FeatureRequest(
        encoder=encoder,
        weights_sha256=sha256_file(encoder_weights),
        precision=precision,
        **ExtractConfig().tiling(),
    )
    genes = reference_genes()[:n_genes]
    times, events = [p.time_months for p in patients], [p.event for p in patients]
    clinical = ClinicalEncoder.fit([p.clinical for p in patients])
    calibration = RiskToTime().fit(rng.normal(size=len(patients)), times, events)
    parts = []
    for k in range(members):  # the first member on the unit scale, the others on their own
        model = build_model("ABMIL_Surv_PG", feat_dim=encoder_spec(encoder).embed_dim, rna_dim=len(genes))
        means = {"hist": rng.normal(size=512), "rna": rng.random(128), "clinical": rng.random(27)}
        scale = (0.0, 1.0) if k == 0 else (float(rng.normal()), float(rng.uniform(0.5, 2.0)))
        parts.append(Member(model, clinical, RnaVectorizer(genes, log1p=True), means, *scale))
    bundle = Bundle("ABMIL_Surv_PG", parts, calibration, request=request)
    bundle_dir = save_bundle(bundle, out.parent / f".{out.name}-bundle")
    try:
        return write_model_dir(out, bundle_dir, encoder_weights)
    finally:
        shutil.rmtree(bundle_dir, ignore_errors=True)
