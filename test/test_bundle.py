"""The bundle: identical predictions after a round trip; any corruption refused in one clear line."""

import json
import pickle

import numpy as np
import pytest
import torch

from survfusion import bundle as bundle_mod
from survfusion.bundle import Bundle, load_bundle, save_bundle
from survfusion.calibration import RiskToTime
from survfusion.errors import BundleError
from survfusion.fileio import sha256_file
from survfusion.models import build_model
from survfusion.preprocess import ClinicalEncoder, RnaVectorizer

FILES = ["manifest.json", "weights.safetensors", "clinical.json", "genes.json", "calibration.json"]


def make_bundle(small_dims, *, rank=None, seed=0) -> Bundle:
    torch.manual_seed(seed)
    dims = dict(small_dims, **({"rank": rank} if rank else {}))
    model = build_model("ABMIL_Surv_PG", **dims)
    genes = [f"G{i:03d}" for i in range(dims["rna_dim"])]
    clinical = ClinicalEncoder.fit([{"age": 60, "no_instillations": 10}, {"age": 80, "no_instillations": 30}])
    rng = np.random.default_rng(seed)
    cal = RiskToTime().fit(rng.normal(size=30), rng.integers(1, 100, 30), rng.random(30) < 0.4)
    return Bundle(
        "ABMIL_Surv_PG",
        model,
        clinical,
        RnaVectorizer(genes, log1p=True),
        cal,
        config={"lr": 2e-4, "batch_size": 2},
        metrics={"val_c_index": 0.71},
    )


def inputs(small_dims, b=4, n=12):
    """Bags of different sizes (n, n - 1, ...), clinical and RNA rows."""
    g = torch.Generator().manual_seed(1)
    return (
        [torch.randn(n - i, small_dims["feat_dim"], generator=g) for i in range(b)],
        torch.randn(b, 27, generator=g),
        torch.rand(b, small_dims["rna_dim"], generator=g),
    )


@pytest.fixture
def saved(tmp_path, small_dims):
    b = make_bundle(small_dims)
    return b, save_bundle(b, tmp_path / "bundle")


def test_round_trip_gives_identical_predictions(saved, small_dims):
    original, path = saved
    loaded = load_bundle(path)
    x = inputs(small_dims)
    np.testing.assert_array_equal(loaded.risks(*x), original.risks(*x))
    r = original.risks(*x)
    np.testing.assert_array_equal(loaded.months(r), original.months(r))
    assert loaded.rna.log1p is True
    assert loaded.config == {"lr": 2e-4, "batch_size": 2}
    assert loaded.metrics == {"val_c_index": 0.71}
    assert not loaded.model.training


def test_manifest_records_everything(saved):
    _, path = saved
    m = json.loads((path / "manifest.json").read_text())
    assert m["model"]["name"] == "ABMIL_Surv_PG"
    assert m["model"]["dims"]["rank"] == 8
    assert m["preprocessing"]["rna_log1p"] is True
    assert len(m["preprocessing"]["clinical_features"]) == 27
    assert m["calibration"]["mode"] == "monotone"
    assert {"torch", "python", "survfusion"} <= set(m["software"])
    for name in FILES[1:]:
        assert m["files"][name] == sha256_file(path / name)
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("where", [0.0, 0.37, 0.5, 0.93, 1.0])
def test_a_flipped_byte_anywhere_is_refused_naming_the_file(saved, name, where):
    _, path = saved
    target = path / name
    data = bytearray(target.read_bytes())
    pos = min(int(where * len(data)), len(data) - 1)
    data[pos] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    message = str(err.value)
    assert name in message
    assert "\n" not in message


@pytest.mark.parametrize("bit", range(8))
def test_a_single_flipped_bit_in_the_manifest_is_refused(saved, bit):
    _, path = saved
    target = path / "manifest.json"
    data = bytearray(target.read_bytes())
    rng = np.random.default_rng(bit)
    for pos in rng.integers(0, len(data), 5):
        copy = bytearray(data)
        copy[pos] ^= 1 << bit
        target.write_bytes(bytes(copy))
        with pytest.raises(BundleError, match=r"manifest\.json"):
            load_bundle(path)


def test_missing_file_and_missing_bundle(saved, tmp_path):
    _, path = saved
    (path / "genes.json").unlink()
    with pytest.raises(BundleError, match=r"genes\.json: missing"):
        load_bundle(path)
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nowhere")


def _resign(path):
    """Recompute the checksums, as a careless hand edit with a helper script would."""
    m = json.loads((path / "manifest.json").read_text())
    m["files"] = {name: sha256_file(path / name) for name in m["files"]}
    m["manifest_sha256"] = bundle_mod._manifest_digest(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_weights_that_do_not_fit_the_dims_are_refused(tmp_path, small_dims):
    a = save_bundle(make_bundle(small_dims), tmp_path / "a")
    b = save_bundle(make_bundle(small_dims, rank=4), tmp_path / "b")
    (a / "weights.safetensors").write_bytes((b / "weights.safetensors").read_bytes())
    _resign(a)
    with pytest.raises(BundleError, match=r"weights\.safetensors: weights do not fit"):
        load_bundle(a)


def test_gene_count_that_disagrees_with_the_model_is_refused(saved):
    _, path = saved
    genes = json.loads((path / "genes.json").read_text())
    genes["genes"] = genes["genes"][:-1]
    (path / "genes.json").write_text(json.dumps(genes))
    _resign(path)
    with pytest.raises(BundleError, match=r"genes\.json: lists 39 genes"):
        load_bundle(path)


def test_loading_never_unpickles(saved, monkeypatch):
    _, path = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    load_bundle(path)


def test_saving_again_replaces_the_whole_directory(saved, small_dims):
    _, path = saved
    (path / "stray.txt").write_text("left over")
    save_bundle(make_bundle(small_dims, seed=3), path)
    assert not (path / "stray.txt").exists()
    load_bundle(path)


def test_bundle_is_readable_by_other_users(saved):
    """The container runs as a non-root user: a 0700/0600 bundle would fail on grand-challenge."""
    _, path = saved
    assert path.stat().st_mode & 0o005 == 0o005
    for f in path.iterdir():
        assert f.stat().st_mode & 0o004, f.name


def test_round_trip_keeps_the_preprocessing_identical(saved):
    original, path = saved
    loaded = load_bundle(path)
    rec = {"age": "71", "sex": "Female", "smoking": "Yes", "stage": "T1HG", "BRS": "BRS3", "LVI": "-1"}
    np.testing.assert_array_equal(
        loaded.clinical.transform(rec).values, original.clinical.transform(rec).values
    )
    expr = {g: float(i) for i, g in enumerate(original.rna.genes)}
    np.testing.assert_array_equal(loaded.rna.transform(expr).values, original.rna.transform(expr).values)
