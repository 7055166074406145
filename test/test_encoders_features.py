"""Encoders load strictly and only safely; feature files keep provenance and refuse stale caches."""

import collections
import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from survfusion.errors import UserError
from survfusion.features.device import resolve_precision
from survfusion.features.encoders import build_architecture
from survfusion.features.h5 import FeatureCacheMismatch, cache_matches, read_features, write_features
from survfusion.features.request import REQUEST_ATTR, FeatureRequest
from survfusion.features.tile_encoder import TileEncoder
from survfusion.features.weights import init_encoder_weights
from survfusion.slides.reader import area_reduce


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "vit-tiny.safetensors"
    init_encoder_weights("vit-tiny", path, seed=0)
    return path


def test_init_is_deterministic_and_loads_through_the_strict_path(tmp_path, tiny_weights):
    again = tmp_path / "again.safetensors"
    assert (
        init_encoder_weights("vit-tiny", again, seed=0)
        == TileEncoder("vit-tiny", tiny_weights).weights_sha256
    )
    assert (
        init_encoder_weights("vit-tiny", tmp_path / "other.safetensors", seed=1)
        != TileEncoder("vit-tiny", tiny_weights).weights_sha256
    )


def test_uni_architecture_is_vit_large_with_1024_outputs():
    with torch.device("meta"):
        model = build_architecture("uni")
    assert sum(p.numel() for p in model.parameters()) == 303_350_784
    assert model(torch.zeros(2, 3, 224, 224, device="meta")).shape == (2, 1024)


def test_strict_load_names_the_missing_keys(tmp_path):
    state = build_architecture("vit-tiny").state_dict()
    del state["blocks.3.mlp.fc2.weight"], state["norm.bias"]
    state["head.extra"] = torch.zeros(1)
    path = tmp_path / "broken.bin"
    torch.save(state, path)
    with pytest.raises(UserError) as err:
        TileEncoder("vit-tiny", path)
    message = str(err.value)
    assert "blocks.3.mlp.fc2.weight" in message and "norm.bias" in message and "head.extra" in message
    assert "\n" not in message


def test_bin_and_module_prefix_load(tmp_path, tiny_weights):
    model = build_architecture("vit-tiny")
    state = collections.OrderedDict((f"module.{k}", v) for k, v in model.state_dict().items())
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    enc = TileEncoder("vit-tiny", path)
    assert enc.weights_sha256 and enc.embed_dim == 192


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"x": Evil()}, path)
    with pytest.raises(UserError, match="cannot be loaded safely"):
        TileEncoder("vit-tiny", path)


def test_precision_on_cpu_is_fp32():
    assert resolve_precision("auto", torch.device("cpu")) == (None, None)
    with pytest.raises(UserError):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize(
    "name, major, want, noted",
    [
        ("uni", 7, "fp16", False),  # the paper's encoder: as before (fp16 on a T4, bf16 from Ampere)
        ("uni", 9, "bf16", True),
        ("uni2-h", 7, "fp16", True),  # bf16 recipe on a T4: fp16 with the non-finite guard, said so
        ("uni2-h", 8, "bf16", False),
        ("phikon-v2", 7, "fp32", False),  # its reference runs fp32
        ("phikon-v2", 9, "fp32", False),
        ("virchow2", 7, "fp16", False),
    ],
)
def test_auto_precision_per_encoder_on_each_gpu(monkeypatch, name, major, want, noted):
    from survfusion.features.device import DTYPES
    from survfusion.features.encoders import encoder_spec

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 5))
    dtype, note = resolve_precision("auto", torch.device("cuda"), encoder_spec(name))
    assert dtype is DTYPES[want]
    assert (note is not None) == noted
    if name == "uni2-h" and noted:
        assert "bf16" in note and "fp16" in note and "recomputed in fp32" in note
    assert resolve_precision("fp16", torch.device("cuda"), encoder_spec(name)) == (torch.float16, None)


def test_device_side_area_resize_equals_block_mean(tiny_weights):
    enc = TileEncoder("vit-tiny", tiny_weights)
    tiles = np.random.default_rng(0).integers(0, 256, (2, 448, 448, 3), dtype=np.uint8)
    got = enc.preprocess(torch.from_numpy(tiles))
    mean = torch.tensor(enc.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(enc.spec.std).view(1, 3, 1, 1)
    expected = np.stack([area_reduce(t.astype(np.float32), 2) for t in tiles]) / 255.0
    expected = (torch.from_numpy(expected).permute(0, 3, 1, 2) - mean) / std
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_embeddings_are_deterministic_and_batch_independent(tiny_weights):
    enc = TileEncoder("vit-tiny", tiny_weights)
    tiles = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8))
    all_at_once = enc.embed(tiles)
    one_by_one = torch.cat([enc.embed(tiles[i : i + 1]) for i in range(5)])
    assert all_at_once.shape == (5, 192) and all_at_once.dtype == torch.float32
    torch.testing.assert_close(all_at_once, one_by_one, atol=1e-4, rtol=1e-4)


REQUEST = FeatureRequest(
    encoder="uni",
    weights_sha256="ab",
    precision="fp16",
    target_spacing_um=1.0,
    tile_px=224,
    min_tissue=0.25,
    tolerance=0.05,
)


def test_feature_file_round_trip_and_cache(tmp_path):
    path = tmp_path / "c.h5"
    feats = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    coords = np.arange(14).reshape(7, 2) * 896
    attrs = {REQUEST_ATTR: json.dumps(REQUEST.to_dict()), "encoder": "uni", "tile_lv0": 896, "level": 1}
    write_features(path, feats, coords, attrs)
    f = read_features(path)
    np.testing.assert_array_equal(f.features, feats)
    np.testing.assert_array_equal(f.coords, coords)
    assert f.attrs["encoder"] == "uni" and f.attrs["coords.patch_size_level0"] == 896
    assert FeatureRequest.from_attrs(f.attrs) == REQUEST
    assert cache_matches(path, REQUEST) is True
    assert cache_matches(tmp_path / "none.h5", REQUEST) is False
    for change, needle in [
        ({"min_tissue": 0.5}, r"min_tissue: 0.25 != 0.5"),
        ({"weights_sha256": "cd"}, "weights_sha256"),
        ({"precision": "bf16"}, r"precision: 'fp16' != 'bf16'"),
        ({"spacing_override_um": 0.5}, r"spacing_override_um: None != 0.5"),
        ({"tolerance": 0.1}, "tolerance"),
        ({"max_tiles": 100}, "max_tiles"),
    ]:
        with pytest.raises(FeatureCacheMismatch, match=needle):
            cache_matches(path, dataclasses.replace(REQUEST, **change))


def test_a_file_without_a_request_is_not_reused(tmp_path):
    path = tmp_path / "old.h5"
    write_features(path, np.zeros((1, 4), np.float32), np.zeros((1, 2)), {"encoder": "uni"})
    with pytest.raises(FeatureCacheMismatch, match="records no feature request"):
        cache_matches(path, REQUEST)


def test_feature_request_round_trips_and_refuses_auto_precision():
    assert FeatureRequest.from_dict(json.loads(json.dumps(REQUEST.to_dict()))) == REQUEST
    with pytest.raises(UserError, match="precision"):
        dataclasses.replace(REQUEST, precision="auto")
    with pytest.raises(UserError, match="unknown field"):
        FeatureRequest.from_dict({**REQUEST.to_dict(), "colour": "blue"})


@pytest.mark.parametrize("leading_one", [False, True])
def test_reads_clam_and_trident_files(tmp_path, leading_one):
    path = tmp_path / "clam.h5"
    feats = np.ones((3, 1024), np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats[None] if leading_one else feats)
        c = f.create_dataset("coords", data=np.array([[0, 0], [512, 0], [0, 512]]))
        c.attrs["patch_size"] = 512
        c.attrs["patch_level"] = 0
    got = read_features(path)
    assert got.features.shape == (3, 1024)
    assert got.attrs["coords.patch_size"] == 512


def test_not_a_feature_file_is_one_clear_line(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"nope")
    with pytest.raises(UserError, match="not readable HDF5"):
        read_features(path)


def test_a_bundle_whose_width_is_not_its_encoders_is_refused(tmp_path, tiny_weights):
    """A bundle trained on 192-d (vit-tiny) features whose request names uni2-h (1536-d): load_model
    and package refuse it in one line naming both widths."""
    from fixtures import write_untrained_model

    from survfusion.errors import BundleError
    from survfusion.serving.bundle_io import load_bundle
    from survfusion.serving.modeldir import check_width

    model = write_untrained_model(tmp_path / "model", tiny_weights)
    bundle = load_bundle(model / "bundle")
    check_width(bundle, bundle.request, model)  # its own encoder: fine
    other = dataclasses.replace(bundle.request, encoder="uni2-h")
    with pytest.raises(BundleError, match=r"192-d tile features.*'uni2-h', which embeds to 1536-d"):
        check_width(bundle, other, model)


def test_features_whose_width_is_not_their_encoders_are_refused(tmp_path):
    from survfusion.synth.cohort import write_cohort
    from survfusion.synth.features import write_synthetic_features
    from survfusion.training.dataset import load_cohort

    write_cohort(tmp_path / "c", patients=3, seed=0, slide_px=896, workers=1)
    write_synthetic_features(tmp_path / "c", tmp_path / "f", encoder="vit-tiny", tiles=4)
    load_cohort(tmp_path / "c", tmp_path / "f")
    for h5 in (tmp_path / "f").glob("*.h5"):
        f = read_features(h5)
        write_features(h5, np.zeros((4, 1024), np.float32), f.coords, f.attrs)
    with pytest.raises(UserError, match=r"1024-d tiles, but the files say 'vit-tiny', which embeds to 192-d"):
        load_cohort(tmp_path / "c", tmp_path / "f")


def test_gigapath_crops_the_centre_and_conch_resizes(tmp_path):
    """fit=crop: a 256-px tile's centre 224 px, untouched (Prov-GigaPath); fit=resize: area."""
    path = tmp_path / "g.safetensors"
    init_encoder_weights("gigapath@1", path, seed=0)
    enc = TileEncoder("gigapath@1", path, device="cpu")
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8))
    x = enc.preprocess(tiles)
    centre = tiles[:, 16:240, 16:240].permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (enc.spec.mean, enc.spec.std))
    torch.testing.assert_close(x, (centre - mean) / std)
