"""Each classical baseline is the library's own model on the same data: lifelines' CoxPHFitter on the
Rossi recidivism cohort, scikit-survival's elastic-net Cox and random survival forest on the Veterans'
lung cancer trial (real cohorts shipped with those libraries)."""

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from sklearn.model_selection import KFold
from sksurv.datasets import load_veterans_lung_cancer
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from survfusion.training import baselines as bl


@pytest.fixture(scope="module")
def veterans():
    x, y = load_veterans_lung_cancer()
    x = pd.get_dummies(x, drop_first=True).astype(float).to_numpy()
    x = (x - x.mean(0)) / x.std(0)
    return x, y["Survival_in_days"].astype(float), y["Status"].astype(bool)


def test_coxph_is_lifelines_on_the_same_data():
    rossi = load_rossi()
    x = rossi.drop(columns=["week", "arrest"]).to_numpy(float)
    risk = bl.fit_baseline("CoxPH_Clin", x, rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(bool))(x)
    direct = CoxPHFitter(penalizer=bl.COXPH_PENALIZER).fit(rossi, duration_col="week", event_col="arrest")
    want = direct.predict_log_partial_hazard(rossi.drop(columns=["week", "arrest"])).to_numpy()
    # the same Newton iterations on the same data; lifelines centres the covariates itself, so the two
    # linear predictors agree to its convergence tolerance (1e-7 on the log-likelihood)
    np.testing.assert_allclose(risk, want, rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:all coefficients are zero")
def test_coxnet_picks_the_mixing_and_penalty_of_best_held_out_c_index_and_is_sksurvs_model(veterans):
    """Every (l1_ratio, penalty) scored by hand with scikit-survival on the same inner folds; the
    choice is the best mean held-out C-index, and the model is the library's at that choice."""
    x, t, e = veterans
    choice = bl.coxnet_select(x, t, e, seed=0)
    y = Surv.from_arrays(e, t)
    best = (-1.0, None, None)
    for l1 in bl.COXNET_L1_RATIOS:
        path = CoxnetSurvivalAnalysis(
            l1_ratio=l1, alpha_min_ratio=bl.COXNET_ALPHA_MIN_RATIO, n_alphas=bl.COXNET_ALPHAS
        ).fit(x, y)
        scores = np.zeros((bl.INNER_FOLDS, len(path.alphas_)))
        for f, (tr, te) in enumerate(KFold(bl.INNER_FOLDS, shuffle=True, random_state=0).split(x)):
            m = CoxnetSurvivalAnalysis(l1_ratio=l1, alphas=path.alphas_).fit(x[tr], y[tr])
            for a, alpha in enumerate(path.alphas_):
                scores[f, a] = concordance_index_censored(e[te], t[te], m.predict(x[te], alpha=alpha))[0]
        mean_c = scores.mean(axis=0)
        a = int(np.argmax(mean_c))
        if mean_c[a] > best[0]:
            best = (mean_c[a], l1, path.alphas_[a])
    assert choice["inner_c_index"] == pytest.approx(best[0], abs=1e-12)
    assert (choice["l1_ratio"], choice["alpha"]) == (best[1], pytest.approx(best[2], rel=1e-12))
    assert set(choice["grid"]) == {str(v) for v in bl.COXNET_L1_RATIOS}
    risk = bl.fit_baseline("CoxNet_ClinRNA", x, t, e, seed=0)(x)
    cold = CoxnetSurvivalAnalysis(l1_ratio=best[1], alphas=[best[2]]).fit(x, y)
    # sksurv's predict() is x . coef - offset; ours drops the constant (a Cox risk is defined up to one)
    direct = cold.predict(x) - cold.predict(np.zeros((1, x.shape[1])))[0]
    # the warm-started path and a cold fit at the one penalty reach the same optimum, each to the
    # coordinate descent's tolerance (1e-7 on the coefficients' change)
    np.testing.assert_allclose(risk, direct, rtol=1e-4, atol=1e-4)


def test_rsf_is_sksurvs_forest(veterans):
    x, t, e = veterans
    risk = bl.fit_baseline("RSF_ClinRNA", x, t, e, seed=3)(x)
    direct = RandomSurvivalForest(
        n_estimators=bl.RSF_TREES, min_samples_leaf=bl.RSF_MIN_LEAF, random_state=3, n_jobs=1
    ).fit(x, Surv.from_arrays(e, t))
    np.testing.assert_array_equal(risk, direct.predict(x))  # same seed, same trees, same leaves
    assert concordance_index_censored(e, t, risk)[0] > 0.6  # a forest ranks its own patients


def test_unknown_baseline_lists_the_valid_ones():
    with pytest.raises(Exception, match="CoxPH_Clin, CoxNet_ClinRNA, CoxNet_ClinRNAHist, RSF_ClinRNA"):
        bl.fit_baseline("Cox_Nope", np.zeros((3, 1)), np.ones(3), np.ones(3, bool))
