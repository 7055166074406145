"""A bundle written before the package was cut into stages (issue 20) still loads and predicts the
same: test/data holds a two-member format-3 bundle (Clin_only, small dims) written by that code, with
the risk and months it gave then."""

import json
from pathlib import Path

import pytest
import torch

from survfusion.features.request import FeatureRequest
from survfusion.serving.bundle_io import load_bundle

DATA = Path(__file__).resolve().parent / "data"


def test_a_bundle_written_before_issue_20_loads_and_predicts_the_same():
    expected = json.loads((DATA / "bundle-v3-before-issue20.expected.json").read_text())
    bundle = load_bundle(DATA / "bundle-v3-before-issue20")
    assert len(bundle.members) == 2 and bundle.model_name == "Clin_only"
    assert FeatureRequest.from_dict(bundle.config["features"]).to_dict() == expected["features"]
    risk = bundle.risks([torch.zeros(0, 16)], [expected["clinical"]], [expected["rna"]], replace=("hist",))
    # the same float32 forward and float64 combination as when it was written: equal up to the
    # kernels' rounding of a 27-term dot product (~1e-7 relative)
    assert float(risk[0]) == pytest.approx(expected["risk"], rel=1e-5)
    assert float(bundle.months(risk)[0]) == pytest.approx(expected["months"], rel=1e-5)
