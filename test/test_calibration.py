"""Risk -> months: the paper's step mapping by hand, and the monotone mapping's guarantees."""

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sksurv.datasets import load_gbsg2

from survfusion.errors import UserError
from survfusion.nets.calibration import RiskToTime
from survfusion.nets.survival import concordance_index, kaplan_meier

# Hand-worked: times 2,4,6(c),8,10(c); KM points (0,1) (2,.8) (4,.6) (6,.6) (8,.3) (10,.3).
TIME = [2, 4, 6, 8, 10]
EVENT = [1, 1, 0, 1, 0]
TRAIN_RISK = [5.0, 4.0, 3.0, 2.0, 1.0]


def test_paper_mode_by_hand():
    cal = RiskToTime().fit(TRAIN_RISK, TIME, EVENT, mode="paper")
    # p = 1 - #{train >= r} / 6, then the KM point nearest to p (first on ties), clipped at 0:
    #   r=10  -> p=1     -> S=1   at t=0
    #   r=4.5 -> p=5/6   -> S=.8  at t=2
    #   r=2.5 -> p=1/2   -> S=.6  at t=4 (first of t=4, 6)
    #   r=0   -> p=1/6   -> S=.3  at t=8 (first of t=8, 10): the floor
    #   r=3   -> p=1/2   -> t=4: ties with r=2.5 although the risks differ
    got = cal.predict([10.0, 4.5, 2.5, 0.0, 3.0])
    np.testing.assert_array_equal(got, [0.0, 2.0, 4.0, 8.0, 4.0])


def cohort_like(n=176, seed=0):
    """Outcomes shaped like the CHIMERA cohort (event rate ~0.36, KM floor ~0.57) and a noisy risk."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    event_time = rng.exponential(15.0 * np.exp(-0.8 * risk)) + 5.0
    cured = rng.random(n) < 1 / (1 + np.exp(1.5 * risk - 0.5))  # a plateau: most low-risk never recur
    follow_up = rng.uniform(5.0, 202.0, n)
    time = np.where(cured, follow_up, np.minimum(event_time, follow_up))
    event = ~cured & (event_time <= follow_up)
    return np.round(time), event, risk + rng.normal(scale=1.0, size=n)


def test_paper_mode_loses_concordance_where_monotone_keeps_it():
    time, event, risk = cohort_like()
    train, test = slice(0, 120), slice(120, None)
    c_risk = concordance_index(time[test], event[test], risk[test])
    paper = RiskToTime().fit(risk[train], time[train], event[train], mode="paper").predict(risk[test])
    mono = RiskToTime().fit(risk[train], time[train], event[train]).predict(risk[test])
    assert concordance_index(time[test], event[test], -mono) == c_risk
    assert concordance_index(time[test], event[test], -paper) < c_risk
    floor_time = paper.max()
    assert (paper == floor_time).mean() > 0.2  # the pile-up at the KM floor the design describes
    assert len(np.unique(mono)) == len(np.unique(risk[test]))


# Risks on a 1e-4 grid: distinct risks closer than float64 can resolve after interpolation
# (e.g. 0 and 1e-300 inside a unit interval) cannot map to distinct times.
finite_risks = st.lists(st.integers(-300_000, 300_000).map(lambda k: k / 1e4), min_size=2, max_size=60)


@settings(max_examples=80, deadline=None)
@given(finite_risks, finite_risks, st.integers(0, 10_000))
def test_monotone_is_strictly_decreasing_and_keeps_the_cindex(train_risk, new_risk, seed):
    rng = np.random.default_rng(seed)
    n = len(train_risk)
    time = rng.integers(1, 60, n).astype(float)
    event = rng.random(n) < 0.5
    event[0] = True
    cal = RiskToTime().fit(train_risk, time, event)
    r = np.unique(np.array(new_risk + train_risk))  # sorted, distinct
    assume(len(r) >= 2)
    months = cal.predict(r)
    assert np.all(np.diff(months) < 0), "not strictly decreasing"
    assert np.all(months > 0)
    assert np.all(months <= max(time.max(), 1.0) * 2)
    # C-index of the times equals C-index of the risks, on any cases and outcomes.
    m = len(r)
    t_new, e_new = rng.integers(1, 30, m).astype(float), rng.random(m) < 0.5
    e_new[0] = True
    c_risk = concordance_index(t_new, e_new, r)
    c_time = concordance_index(t_new, e_new, -months)
    assert (np.isnan(c_risk) and np.isnan(c_time)) or c_risk == c_time


def test_monotone_stays_on_the_km_scale():
    time, event, risk = cohort_like(seed=3)
    cal = RiskToTime().fit(risk, time, event)
    km = kaplan_meier(time, event)
    months = cal.predict(np.sort(risk))
    # The training median risk lands between the event times around the KM median,
    # or past the last event when the curve never reaches 0.5 (as in this cohort).
    med = cal.predict(np.median(risk))
    if np.isfinite(km.median()):
        assert abs(med - km.median()) < 15
    else:
        assert med >= km.event_times.max()
    # Low risks go past the KM floor up to (never beyond) the longest follow-up, without piling up.
    assert months.max() <= km.max_follow_up
    assert months.max() > km.event_times.max()
    assert len(np.unique(np.round(months, 9))) == len(np.unique(risk))
    # Extreme risks still order: far above -> near 0, far below -> near the longest follow-up.
    lo, hi = cal.predict([risk.max() + 20, risk.min() - 20])
    assert 0 < lo < months.min() and months.max() < hi <= km.max_follow_up


def test_monotone_matches_the_km_quantile_at_its_corners():
    # With risks at the plotting positions of the corners, F hits the KM survival values exactly.
    cal = RiskToTime().fit(TRAIN_RISK, TIME, EVENT)
    # F(r) for r = 1..5 is rank/6 = 1/6..5/6; Q interpolates (1 - S, t) = (0,0) (.2,2) (.4,4) (.7,8) (1,10).
    got = cal.predict([5.0, 4.0, 3.0, 2.0, 1.0])
    g = 1 - np.array([5, 4, 3, 2, 1]) / 6
    expected = np.interp(g, [0, 0.2, 0.4, 0.7, 1.0], [0, 2, 4, 8, 10])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("mode", ["monotone", "paper"])
def test_json_round_trip(mode):
    time, event, risk = cohort_like(seed=1)
    cal = RiskToTime().fit(risk, time, event, mode=mode)
    again = RiskToTime.from_dict(json.loads(json.dumps(cal.to_dict())))
    probe = np.linspace(-6, 6, 301)
    np.testing.assert_array_equal(again.predict(probe), cal.predict(probe))
    assert again.mode == mode


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(UserError, match="mode"):
        RiskToTime().fit(TRAIN_RISK, TIME, EVENT, mode="isotonic")
    with pytest.raises(UserError, match="no event"):
        RiskToTime().fit(TRAIN_RISK, TIME, [0] * 5)
    with pytest.raises(UserError, match="finite"):
        RiskToTime().fit(TRAIN_RISK, TIME, EVENT).predict([np.nan])


def test_real_cohort_gbsg2_monotone_keeps_and_paper_loses_concordance():
    x, y = load_gbsg2()  # German Breast Cancer Study Group 2, shipped with scikit-survival
    risk = (x["pnodes"].to_numpy(float) / 10 - x["progrec"].to_numpy(float) / 500).round(3)
    time, event = y["time"] / 30.44, y["cens"]  # days -> months
    train, test = np.arange(len(risk)) % 3 != 0, np.arange(len(risk)) % 3 == 0
    c_risk = concordance_index(time[test], event[test], risk[test])
    mono = RiskToTime().fit(risk[train], time[train], event[train]).predict(risk[test])
    paper = RiskToTime().fit(risk[train], time[train], event[train], mode="paper").predict(risk[test])
    assert concordance_index(time[test], event[test], -mono) == c_risk
    assert concordance_index(time[test], event[test], -paper) < c_risk
    assert len(np.unique(paper)) < len(np.unique(mono)) == len(np.unique(risk[test]))


def test_far_out_of_range_risks_stay_apart_by_more_than_the_metric_tolerance():
    # sksurv (the challenge metric) counts predicted values closer than 1e-8 as ties.
    time, event, risk = cohort_like(seed=2)
    cal = RiskToTime().fit(risk, time, event)
    for base in (risk.min() - 30, risk.max() + 30):
        a, b = cal.predict([base, base + 0.001])
        assert abs(a - b) > 1e-8
