"""Ensemble bundles: the combination formula, K members on disk, version-2 bundles, the CLI line."""

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_bundle import _resign, inputs, make_bundle, make_member

import survfusion.serving.bundle_io as bundle_mod
from survfusion.cli.main import main
from survfusion.errors import BundleError, UserError
from survfusion.nets.calibration import RiskToTime
from survfusion.nets.models import batched_risks
from survfusion.nets.survival import concordance_index
from survfusion.serving.bundle import Bundle, combine_risks
from survfusion.serving.bundle_io import load_bundle, save_bundle

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
scales = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 30), elements=finite), finite, scales)
def test_one_member_is_the_member_itself(risk, mu, sd):
    np.testing.assert_allclose(combine_risks(risk[None], [mu], [sd]), risk, rtol=1e-12, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 20)), elements=finite),
    st.lists(st.tuples(finite, scales), min_size=6, max_size=6),
    st.lists(st.tuples(st.floats(-50, 50), st.floats(0.01, 100)), min_size=6, max_size=6),
)
def test_formula_and_its_invariance_to_each_members_scale(risks, stats, moves):
    """``mean_k((r_k - mu_k) / sd_k) * mean(sd) + mean(mu)``, written out here element by element;
    moving a member's risks and its training scale together (r -> a r + c) leaves the order alone."""
    k, p = risks.shape
    mu, sd = [s[0] for s in stats[:k]], [s[1] for s in stats[:k]]
    got = combine_risks(risks, mu, sd)
    for j in range(p):
        z = sum((risks[i, j] - mu[i]) / sd[i] for i in range(k)) / k
        assert got[j] == pytest.approx(z * sum(sd) / k + sum(mu) / k, rel=1e-9, abs=1e-9)
    a = np.array([m[1] for m in moves[:k]])
    c = np.array([m[0] for m in moves[:k]])
    mu2, sd2 = (a * mu + c).tolist(), (a * sd).tolist()
    moved = combine_risks(a[:, None] * risks + c[:, None], mu2, sd2)
    np.testing.assert_allclose(
        (moved - np.mean(mu2)) / np.mean(sd2), (got - np.mean(mu)) / np.mean(sd), rtol=1e-6, atol=1e-6
    )


def test_a_member_without_spread_is_refused(small_dims):
    with pytest.raises(UserError, match="positive sd"):
        make_member(small_dims, scale=(0.0, 0.0))
    with pytest.raises(UserError, match="positive sd"):
        make_member(small_dims, scale=(np.nan, 1.0))


def test_one_member_bundle_predicts_what_the_single_model_predicts(small_dims, tmp_path):
    """A member on its own training scale (mu, sd), calibrated on its training risks: the bundle's
    risks and months equal those of the bare model and a calibration fitted on the raw risks."""
    member = make_member(small_dims, seed=4)
    bags, clinical, rna = inputs(small_dims, b=12)
    clin, genes = member.inputs(clinical, rna)
    raw = batched_risks(member.model, bags, clin, genes)  # the single model, by hand
    train, new = slice(0, 8), slice(8, 12)
    member.risk_mean, member.risk_sd = float(raw[train].mean()), float(raw[train].std())
    rng = np.random.default_rng(0)
    time, event = rng.uniform(1, 100, 8), np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
    single_cal = RiskToTime().fit(raw[train], time, event)
    bundle = Bundle("ABMIL_Surv_PG", [member], RiskToTime().fit(raw[train], time, event))
    loaded = load_bundle(save_bundle(bundle, tmp_path / "b"))
    risk = loaded.risks(bags, clinical, rna)
    np.testing.assert_allclose(risk, raw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loaded.months(risk[new]), single_cal.predict(raw[new]), rtol=1e-9)


def test_k_members_round_trip_and_average_their_standardised_risks(small_dims, tmp_path):
    original = make_bundle(small_dims, members=3)
    path = save_bundle(original, tmp_path / "ens")
    loaded = load_bundle(path)
    assert len(loaded.members) == 3
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == ["member_00", "member_01", "member_02"]
    bags, clinical, rna = inputs(small_dims, b=6)
    per_member = loaded.member_risks(bags, clinical, rna)
    np.testing.assert_array_equal(per_member, original.member_risks(bags, clinical, rna))
    for k, m in enumerate(loaded.members):  # each member through its own preprocessing
        np.testing.assert_array_equal(per_member[k], batched_risks(m.model, bags, *m.inputs(clinical, rna)))
    assert len({tuple(r) for r in per_member}) == 3  # differently seeded members disagree
    z = [(per_member[k] - m.risk_mean) / m.risk_sd for k, m in enumerate(loaded.members)]
    mu = np.mean([m.risk_mean for m in loaded.members])
    sd = np.mean([m.risk_sd for m in loaded.members])
    np.testing.assert_allclose(loaded.risks(bags, clinical, rna), np.mean(z, axis=0) * sd + mu, rtol=1e-12)


def test_replaced_modalities_use_each_members_own_training_mean(small_dims, tmp_path):
    members = [make_member(small_dims, seed=k, means=True) for k in range(2)]
    bundle = Bundle("ABMIL_Surv_PG", members, make_bundle(small_dims).calibration)
    bags, clinical, rna = inputs(small_dims, b=2)
    got = bundle.member_risks(bags, clinical, rna, replace=("rna",))
    for k, m in enumerate(members):
        swap = {"rna": torch.from_numpy(m.embedding_means["rna"])}
        np.testing.assert_array_equal(
            got[k], batched_risks(m.model, bags, *m.inputs(clinical, rna), replace=swap)
        )


def test_check_bundle_prints_the_member_count(small_dims, tmp_path, capsys):
    path = save_bundle(make_bundle(small_dims, members=3), tmp_path / "ens")
    assert main(["check-bundle", str(path)]) == 0
    assert "members=3" in capsys.readouterr().out
    single = save_bundle(make_bundle(small_dims), tmp_path / "one")
    assert main(["check-bundle", str(single)]) == 0
    assert "members=1" in capsys.readouterr().out


def _as_version_2(path):
    """Rewrite a one-member bundle in the layout of format version 2 (files at the top level, no
    member entries, no risk scale), as survfusion wrote it before ensembles."""
    for f in (path / "member_00").iterdir():
        shutil.move(f, path / f.name)
    (path / "member_00").rmdir()
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = 2
    del m["members"]
    (path / "manifest.json").write_text(json.dumps(m))
    _resign(path)


def test_a_version_2_bundle_still_loads_as_one_member(small_dims, tmp_path):
    original = make_bundle(small_dims)  # member 0 on the unit scale: what version 2 implies
    path = save_bundle(original, tmp_path / "v2")
    _as_version_2(path)
    assert not (path / "member_00").exists()
    loaded = load_bundle(path)
    assert len(loaded.members) == 1
    assert (loaded.members[0].risk_mean, loaded.members[0].risk_sd) == (0.0, 1.0)
    x = inputs(small_dims)
    np.testing.assert_array_equal(loaded.risks(*x), original.risks(*x))
    np.testing.assert_array_equal(
        loaded.risks(*x), batched_risks(loaded.members[0].model, x[0], *loaded.members[0].inputs(*x[1:]))
    )


@pytest.mark.parametrize("entry", [{"dir": "../elsewhere"}, {"dir": "member_00/.."}, {"dir": 3}, "member_00"])
def test_a_member_entry_outside_the_bundle_is_refused(small_dims, tmp_path, entry):
    path = save_bundle(make_bundle(small_dims), tmp_path / "b")
    m = json.loads((path / "manifest.json").read_text())
    m["members"] = [entry]
    (path / "manifest.json").write_text(json.dumps(m))
    m["manifest_sha256"] = bundle_mod._manifest_digest(m)
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="member entry"):
        load_bundle(path)


def test_a_listed_file_outside_the_bundle_is_refused(small_dims, tmp_path):
    path = save_bundle(make_bundle(small_dims), tmp_path / "b")
    (tmp_path / "secret").write_text("x")
    m = json.loads((path / "manifest.json").read_text())
    m["files"]["../secret"] = "0" * 64
    m["manifest_sha256"] = bundle_mod._manifest_digest(m)
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="leaves the bundle"):
        load_bundle(path)


def test_ensemble_order_is_a_monotone_function_of_each_members_order(small_dims):
    """With identical members the ensemble ranks patients exactly as one member does."""
    member = make_member(small_dims, seed=2, scale=(0.4, 2.0))
    twin = make_member(small_dims, seed=2, scale=(0.4, 2.0))
    bundle = Bundle("ABMIL_Surv_PG", [member, twin], make_bundle(small_dims).calibration)
    bags, clinical, rna = inputs(small_dims, b=8)
    risks = bundle.risks(bags, clinical, rna)
    one = bundle.member_risks(bags, clinical, rna)[0]
    t = np.arange(1.0, 9.0)
    e = np.ones(8, bool)
    assert concordance_index(t, e, risks) == concordance_index(t, e, one)
    np.testing.assert_allclose(risks, one, rtol=1e-12)
