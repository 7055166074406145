"""The bundle: identical predictions after a round trip; any corruption refused in one clear line."""

import json
import pickle

import numpy as np
import pytest
import torch

import survfusion.serving.bundle_io as bundle_mod
from survfusion.errors import BundleError
from survfusion.fileio import sha256_file
from survfusion.nets.calibration import RiskToTime
from survfusion.nets.models import build_model
from survfusion.serving.bundle import Bundle, Member
from survfusion.serving.bundle_io import load_bundle, save_bundle
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer

MEMBER = ["member_00/weights.safetensors", "member_00/clinical.json", "member_00/genes.json"]
FILES = ["manifest.json", "calibration.json", *MEMBER]


def make_member(small_dims, *, rank=None, seed=0, scale=(0.0, 1.0), means=False) -> Member:
    torch.manual_seed(seed)
    dims = dict(small_dims, **({"rank": rank} if rank else {}))
    model = build_model("ABMIL_Surv_PG", **dims)
    genes = [f"G{i:03d}" for i in range(dims["rna_dim"])]
    rng = np.random.default_rng(seed)
    ages = rng.uniform(40, 90, 2).tolist()  # each member fits its clinical encoder on its own patients
    clinical = ClinicalEncoder.fit(
        [{"age": ages[0], "no_instillations": 10}, {"age": ages[1], "no_instillations": 30}]
    )
    emb = (
        {"hist": rng.normal(size=512), "rna": rng.random(128), "clinical": rng.random(27)} if means else None
    )
    return Member(model, clinical, RnaVectorizer(genes, log1p=True), emb, *scale)


def make_bundle(small_dims, *, rank=None, seed=0, members=1) -> Bundle:
    rng = np.random.default_rng(seed)
    cal = RiskToTime().fit(rng.normal(size=30), rng.integers(1, 100, 30), rng.random(30) < 0.4)
    parts = [
        make_member(small_dims, rank=rank, seed=seed + k, scale=(0.0, 1.0) if k == 0 else (0.3 * k, 1.0 + k))
        for k in range(members)
    ]
    config = {"lr": 2e-4, "batch_size": 2}
    return Bundle("ABMIL_Surv_PG", parts, cal, config=config, metrics={"val_c_index": 0.71})


def inputs(small_dims, b=4, n=12):
    """Bags of different sizes (n, n - 1, ...), raw clinical records and RNA objects."""
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    genes = [f"G{i:03d}" for i in range(small_dims["rna_dim"])]
    return (
        [torch.randn(n - i, small_dims["feat_dim"], generator=g) for i in range(b)],
        [{"age": float(a), "sex": "Male", "no_instillations": 12} for a in rng.uniform(50, 85, b)],
        [
            {gene: float(v) for gene, v in zip(genes, rng.gamma(2.0, 50.0, len(genes)), strict=True)}
            for _ in range(b)
        ],
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
    assert loaded.members[0].rna.log1p is True
    assert loaded.config == {"lr": 2e-4, "batch_size": 2}
    assert loaded.metrics == {"val_c_index": 0.71}
    assert not loaded.members[0].model.training


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
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert on_disk == sorted(FILES)
    assert [e["dir"] for e in m["members"]] == ["member_00"]


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
    (path / "member_00" / "genes.json").unlink()
    with pytest.raises(BundleError, match=r"member_00/genes\.json: missing"):
        load_bundle(path)
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nowhere")


def _resign(path):
    """Recompute the checksums, as a careless hand edit with a helper script would."""
    m = json.loads((path / "manifest.json").read_text())
    m["files"] = {
        p.relative_to(path).as_posix(): sha256_file(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    m["manifest_sha256"] = bundle_mod._manifest_digest(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_weights_that_do_not_fit_the_dims_are_refused(tmp_path, small_dims):
    a = save_bundle(make_bundle(small_dims), tmp_path / "a")
    b = save_bundle(make_bundle(small_dims, rank=4), tmp_path / "b")
    (a / MEMBER[0]).write_bytes((b / MEMBER[0]).read_bytes())
    _resign(a)
    with pytest.raises(BundleError, match=r"weights\.safetensors: weights do not fit"):
        load_bundle(a)


def test_gene_count_that_disagrees_with_the_model_is_refused(saved):
    _, path = saved
    genes = json.loads((path / MEMBER[2]).read_text())
    genes["genes"] = genes["genes"][:-1]
    (path / MEMBER[2]).write_text(json.dumps(genes))
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
    for f in path.rglob("*"):
        assert f.stat().st_mode & (0o005 if f.is_dir() else 0o004), f.name


def test_round_trip_keeps_the_preprocessing_identical(saved):
    original, path = saved
    loaded = load_bundle(path)
    rec = {"age": "71", "sex": "Female", "smoking": "Yes", "stage": "T1HG", "BRS": "BRS3", "LVI": "-1"}
    a, b = loaded.members[0], original.members[0]
    np.testing.assert_array_equal(a.clinical.transform(rec).values, b.clinical.transform(rec).values)
    expr = {g: float(i) for i, g in enumerate(b.rna.genes)}
    np.testing.assert_array_equal(a.rna.transform(expr).values, b.rna.transform(expr).values)
