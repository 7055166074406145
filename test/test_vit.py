"""Our ViT (survfusion.features.vit) against timm: same parameter names and shapes, same embeddings."""

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from survfusion.features.encoders import ENCODERS, build_architecture, build_timm_reference
from survfusion.features.tile_encoder import TileEncoder
from survfusion.nets.calibration import _cdf_knots
from survfusion.slides.geometry import uniform_subset


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_same_state_dict_layout_as_timm(name):
    with torch.device("meta"):
        ours, ref = build_architecture(name), build_timm_reference(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_same_embeddings_as_timm_from_the_same_weights():
    """vit-tiny in full, and UNI's block (LayerScale, 16 heads, 1024-d) at two blocks deep."""
    from survfusion.features.vit import VisionTransformer

    torch.manual_seed(0)
    for name, depth in (("vit-tiny", None), ("uni", 2)):
        spec = ENCODERS[name]
        ref = timm.create_model(
            spec.timm_name, pretrained=False, **{**spec.timm_kwargs, **({"depth": depth} if depth else {})}
        )
        ours = VisionTransformer(**{**spec.vit_kwargs, **({"depth": depth} if depth else {})})
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(3, 3, 224, 224)
        with torch.no_grad():
            torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5)


def test_meta_build_assigns_the_loaded_weights(tmp_path):
    from survfusion.features.weights import init_encoder_weights

    path = tmp_path / "w.safetensors"
    init_encoder_weights("vit-tiny", path, seed=3)
    enc = TileEncoder("vit-tiny", path, device="cpu")
    assert not any(p.is_meta for p in enc.model.parameters())
    torch.manual_seed(3)
    ref = build_timm_reference("vit-tiny").eval()
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8))
    with torch.no_grad():
        torch.testing.assert_close(enc.embed(tiles), ref(enc.preprocess(tiles)), rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=40))
def test_mid_rank_knots_equal_scipy(values):
    from scipy.stats import rankdata

    risk = np.asarray(values, dtype=float)
    x, c = _cdf_knots(risk)
    first = np.unique(risk, return_index=True)[1]
    np.testing.assert_array_equal(x, np.unique(risk))
    np.testing.assert_allclose(c, rankdata(risk, method="average")[first] / (risk.size + 1.0))


def test_uniform_subset_spreads_over_the_tissue():
    """A 40 x 40 grid cut to 100 tiles: each 8 x 8 block of the grid keeps 4 +- 1, not a prefix."""
    yy, xx = np.mgrid[0:40, 0:40]
    xy = np.stack([xx.ravel(), yy.ravel()], 1) * 896
    keep = uniform_subset(xy_lv0=xy, tile_lv0=896, max_tiles=100)
    assert len(keep) == 100 and len(set(keep.tolist())) == 100 and np.all(np.diff(keep) > 0)
    kept = xy[keep] // 896
    counts = np.zeros((5, 5), int)
    np.add.at(counts, (kept[:, 1] // 8, kept[:, 0] // 8), 1)
    assert counts.min() >= 3 and counts.max() <= 5, counts
    assert np.array_equal(uniform_subset(xy_lv0=xy, tile_lv0=896, max_tiles=5000), np.arange(1600))
