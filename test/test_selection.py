"""The small-cohort recipe's loss and the honest selection.

The discrete-time likelihood is checked against a hand computation and against logistic
regression on the person-period table (torch's binary cross-entropy), its classical equivalent.
The selection never lets a test patient reach any inner step, is deterministic for a seed, runs in
outer-test with a two-candidate file (an ``auto`` row naming each fold's choice), and ``train
--model auto`` packages a bundle that ``inference.py --strict`` serves.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from survfusion.cli.main import main
from survfusion.nets.discrete import DiscreteBins, discrete_time_nll
from survfusion.synth.cohort import write_cohort
from survfusion.training import selection as sel
from survfusion.training.dataset import load_cohort
from survfusion.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
FAST = {
    "rna_log1p": True,
    "rna_top_genes": 64,
    "rna_pca": 4,
    "batch_size": 64,
    "max_epochs": 3,
    "early_stopping": False,
    "val_fraction": 0.0,
    "lr": 1e-3,
}
TWO = [
    {"name": "CoxNet", "model": "CoxNet_ClinRNA", "config": {"rna_log1p": True, "rna_top_genes": 64}},
    {"name": "PG-small", "model": "ABMIL_Surv_PG", "config": FAST},
]


def test_discrete_time_nll_by_hand():
    """Two bins, offsets b = (0, ln 3), risks r = (0, ln 2): h_1 = (1/2, 3/4), h_2 = (2/3, 6/7).
    Patient 1 has an event in bin 1 (0-based), patient 2 is censored in bin 0."""
    risk = torch.tensor([0.0, math.log(2.0)], dtype=torch.float64)
    offsets = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    loss = discrete_time_nll(risk, offsets, torch.tensor([1, 0]), torch.tensor([True, False]))
    p1 = -(math.log(1 - 1 / 2) + math.log(3 / 4))  # survive bin 0, fail in bin 1
    p2 = -math.log(1 - 2 / 3)  # survive bin 0 (censored there)
    assert float(loss) == pytest.approx((p1 + p2) / 2, rel=1e-12)
    alpha = discrete_time_nll(risk, offsets, torch.tensor([1, 0]), torch.tensor([True, False]), alpha=0.4)
    assert float(alpha) == pytest.approx((0.6 * (p1 + p2) + 0.4 * p1) / 2, rel=1e-12)


def test_discrete_time_nll_is_logistic_regression_on_the_person_period_table():
    g = torch.Generator().manual_seed(0)
    risk, offsets = torch.randn(50, generator=g, dtype=torch.float64) * 3, torch.randn(4, dtype=torch.float64)
    y, e = torch.randint(0, 4, (50,), generator=g), torch.rand(50, generator=g) < 0.4
    rows, targets = [], []
    for i in range(50):  # one Bernoulli trial per patient and bin up to its own, 1 only at an event
        for k in range(int(y[i]) + 1):
            rows.append(offsets[k] + risk[i])
            targets.append(float(e[i] and k == y[i]))
    bce = F.binary_cross_entropy_with_logits(
        torch.stack(rows), torch.tensor(targets, dtype=torch.float64), reduction="sum"
    )
    assert float(discrete_time_nll(risk, offsets, y, e)) == pytest.approx(float(bce) / 50, rel=1e-12)
    huge = discrete_time_nll(risk * 1e4, offsets, y, e)  # logsigmoid: finite at any scale
    assert torch.isfinite(huge)


def test_bins_cut_at_the_quartiles_of_the_uncensored_times():
    t = np.array([1, 2, 3, 4, 5, 6, 7, 8, 100.0])
    e = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    bins = DiscreteBins.fit(t, e, 4)
    np.testing.assert_allclose(bins.cuts_months, np.quantile(t[:8], [0.25, 0.5, 0.75]))
    # a cut point opens the upper bin (MCAT: pd.cut with right=False)
    assert bins.index(np.array([0.5, 2.74, 2.75, 100.0])).tolist() == [0, 0, 1, 3]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from survfusion.features.weights import init_encoder_weights

    root = tmp_path_factory.mktemp("select")
    write_cohort(root / "cohort", patients=30, seed=4, slides=False)
    init_encoder_weights("vit-tiny", root / "vit-tiny.safetensors", seed=0)
    assert (
        main(
            [
                "synth-features",
                "--cohort",
                str(root / "cohort"),
                "--out",
                str(root / "features"),
                "--encoder",
                "vit-tiny",
                "--tiles",
                "16",
                "--weights",
                str(root / "vit-tiny.safetensors"),
            ]
        )
        == 0
    )
    (root / "two.json").write_text(json.dumps(TWO))
    return root


def _spy_on_fits(monkeypatch, module) -> list[set]:
    """``module.fit_candidate`` replaced by one that records the patients of every fit."""
    seen: list[set] = []
    real = sel.fit_candidate

    def spy(data, base, cand, train_idx, out, **kw):
        seen.append(set(np.asarray(train_idx).tolist()))
        return real(data, base, cand, train_idx, out, **kw)

    monkeypatch.setattr(module, "fit_candidate", spy)
    return seen


@pytest.mark.filterwarnings("ignore:all coefficients are zero")
def test_no_test_patient_reaches_any_inner_step_and_the_choice_is_deterministic(cohort, monkeypatch):
    data = load_cohort(cohort / "cohort", cohort / "features")
    cands = sel.read_candidates(cohort / "two.json")
    seen = _spy_on_fits(monkeypatch, sel)
    pool, test = np.arange(24), np.arange(24, 30)
    first = sel.select(data, TrainConfig(), cands, pool)
    assert len(seen) == sel.INNER_FOLDS * len(cands) and all(s <= set(pool.tolist()) for s in seen)
    assert not set().union(*seen) & set(test.tolist())
    again = sel.select(data, TrainConfig(), cands, pool)
    assert again.inner_c_index == first.inner_c_index and again.winner == first.winner
    assert (
        first.to_dict()["winner"] in {"CoxNet", "PG-small"} and "never a test score" in first.to_dict()["why"]
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:all coefficients are zero")
def test_auto_in_outer_test_and_as_a_packaged_model(cohort, tmp_path, capsys):
    import inference

    c, f = str(cohort / "cohort"), str(cohort / "features")
    out = tmp_path / "outer"
    assert (
        main(
            [
                "outer-test",
                "--cohort",
                c,
                "--features",
                f,
                "--out",
                str(out),
                "--models",
                "CoxNet_ClinRNAHist",
                "--methods",
                "auto",
                "--candidates",
                str(cohort / "two.json"),
                "--only",
                "0",
            ]
        )
        == 0
    )
    report = capsys.readouterr().out
    choice = json.loads((out / "outer0" / "auto" / "unit.json").read_text())["choice"]
    assert f"- outer set 0: {choice} (inner C" in report and "| auto | auto | 1 |" in report
    assert "| CoxNet_ClinRNAHist | baseline | 1 |" in report and "noise-free oracle" in report
    run = tmp_path / "auto"
    assert (
        main(
            [
                "train",
                "--cohort",
                c,
                "--features",
                f,
                "--model",
                "auto",
                "--candidates",
                str(cohort / "two.json"),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    recorded = manifest["metrics"]["selection"]
    assert {r["name"] for r in recorded["candidates"]} == {"CoxNet", "PG-small"} and recorded["winner"]
    model = tmp_path / "model"
    assert (
        main(
            [
                "package",
                "--run",
                str(run),
                "--encoder-weights",
                str(cohort / "vit-tiny.safetensors"),
                "--out",
                str(model),
            ]
        )
        == 0
    )
    capsys.readouterr()
    code = inference.main(
        [
            "--input",
            str(ROOT / "test" / "input" / "interf0"),
            "--output",
            str(tmp_path / "o"),
            "--model",
            str(model),
            "--device",
            "cpu",
            "--strict",
        ]
    )
    assert code == 0, capsys.readouterr().err
    months = json.loads((tmp_path / "o" / "likelihood-of-bladder-cancer-recurrence.json").read_text())
    assert np.isfinite(months) and months >= 0


def test_the_small_cohort_config_file_is_the_recipe_auto_uses():
    assert json.loads((ROOT / "configs" / "small-cohort.json").read_text()) == sel.SMALL_COHORT
    TrainConfig.from_overrides(sel.SMALL_COHORT)  # every key is a setting


@pytest.mark.filterwarnings("ignore:all coefficients are zero")
def test_a_blend_is_the_mean_of_its_candidates_standardised_risks_fitted_on_the_pool_alone(
    cohort, tmp_path, monkeypatch
):
    from survfusion.training import blend

    data = load_cohort(cohort / "cohort", cohort / "features")
    cands = sel.read_candidates(cohort / "two.json")
    pool, test = np.arange(24), np.arange(24, 30)
    real = sel.fit_candidate
    seen = _spy_on_fits(monkeypatch, blend)
    bundle = blend.fit_blend(data, TrainConfig(), cands, pool, tmp_path / "b")
    assert seen == [set(pool.tolist())] * len(cands)  # each candidate once, on the pool only
    assert [m.info["candidate"] for m in bundle.members] == ["CoxNet", "PG-small"]
    # each candidate alone (the same deterministic fit), its risks standardised on its training risks
    alone = [real(data, TrainConfig(), c, pool, tmp_path / c.name) for c in cands]
    z = [(sel.risks_of(b, data, test) - b.members[0].risk_mean) / b.members[0].risk_sd for b in alone]
    mu = np.mean([b.members[0].risk_mean for b in alone])
    sd = np.mean([b.members[0].risk_sd for b in alone])
    want = np.mean(z, axis=0) * sd + mu  # the bundle's mean combination, on the members' mean scale
    np.testing.assert_allclose(sel.risks_of(bundle, data, test), want, rtol=1e-6, atol=1e-9)  # float32 nets
    months = bundle.months(np.sort(want))
    assert np.all(np.isfinite(months)) and np.all(np.diff(months) <= 0)  # higher risk, fewer months


def test_a_blend_leaves_out_a_residual_and_says_so():
    from survfusion.errors import UserError
    from survfusion.training.blend import blend_members

    said: list[str] = []
    held = blend_members(list(sel.DEFAULT_CANDIDATES), TrainConfig(), said.append)
    assert [c.name for c in held] == ["CoxNet_ClinRNA", "CoxNet_ClinRNAHist", "ABMIL_Surv_PG-small"]
    assert len(said) == 1 and "ABMIL_Surv_PG-small-residual" in said[0]
    with pytest.raises(UserError, match="no candidate can be blended"):
        blend_members([sel.DEFAULT_CANDIDATES[3]], TrainConfig())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:all coefficients are zero")
def test_blend_in_outer_test_and_as_a_packaged_model(cohort, tmp_path, capsys):
    import inference

    c, f, two = str(cohort / "cohort"), str(cohort / "features"), str(cohort / "two.json")
    out = tmp_path / "outer"
    args = ["--cohort", c, "--features", f, "--candidates", two]
    assert main(["outer-test", *args, "--out", str(out), "--methods", "blend", "--only", "0"]) == 0
    report = capsys.readouterr().out
    unit = json.loads((out / "outer0" / "blend" / "unit.json").read_text())
    assert unit["blend"] == ["CoxNet", "PG-small"] and unit["selection_c_index"] is None
    assert "| blend | blend | 1 |" in report
    run = tmp_path / "blend"
    assert main(["train", *args, "--model", "blend", "--out", str(run)]) == 0
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    assert manifest["metrics"]["blend"]["candidates"] == ["CoxNet", "PG-small"]
    assert [m["model"] for m in manifest["members"]] == ["LinearCox", "ABMIL_Surv_PG"]
    model = tmp_path / "model"
    weights = str(cohort / "vit-tiny.safetensors")
    assert main(["package", "--run", str(run), "--encoder-weights", weights, "--out", str(model)]) == 0
    capsys.readouterr()
    code = inference.main(
        ["--input", str(ROOT / "test" / "input" / "interf0"), "--output", str(tmp_path / "o"),
         "--model", str(model), "--device", "cpu", "--strict"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    months = json.loads((tmp_path / "o" / "likelihood-of-bladder-cancer-recurrence.json").read_text())
    assert np.isfinite(months) and months >= 0
