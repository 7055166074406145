"""Shared fixtures: small model dimensions so the suite stays fast on 2 cores."""

import numpy as np
import pytest
import torch

SMALL = {"feat_dim": 16, "rna_dim": 40, "clinical_dim": 27, "rank": 8}


@pytest.fixture
def small_dims() -> dict:
    return dict(SMALL)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
