"""Cox loss, C-index and Kaplan-Meier against lifelines and scikit-survival on real and random data."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from lifelines.utils import concordance_index as lifelines_cindex
from sksurv.datasets import load_whas500
from sksurv.exceptions import NoComparablePairException
from sksurv.linear_model.coxph import CoxPHOptimizer
from sksurv.metrics import concordance_index_censored
from sksurv.nonparametric import kaplan_meier_estimator

from survfusion.nets.survival import (
    PairTable,
    concordance_bootstrap,
    concordance_index,
    cox_loss,
    kaplan_meier,
)


@pytest.fixture(scope="module")
def rossi_fit():
    df = load_rossi()
    cph = CoxPHFitter().fit(df, duration_col="week", event_col="arrest")
    x = df.drop(columns=["week", "arrest"]).to_numpy(float)
    log_hz = x @ cph.params_[df.columns.drop(["week", "arrest"])].to_numpy()
    return df, cph, log_hz


def _tensors(log_hz, time, event):
    return (
        torch.tensor(log_hz, dtype=torch.float64),
        torch.tensor(time, dtype=torch.float64),
        torch.tensor(event, dtype=torch.bool),
    )


def test_efron_loss_equals_lifelines_log_likelihood_on_rossi(rossi_fit):
    df, cph, log_hz = rossi_fit
    assert df["week"].duplicated().any(), "Rossi has tied times: the Efron correction matters"
    loss = cox_loss(*_tensors(log_hz, df["week"], df["arrest"]), reduction="sum")
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(-cph.log_likelihood_, rel=1e-6)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_loss_equals_sksurv_partial_likelihood(ties, rossi_fit):
    df, _, log_hz = rossi_fit
    opt = CoxPHOptimizer(
        log_hz[:, None], df["arrest"].to_numpy(bool), df["week"].to_numpy(float), alpha=np.zeros(1), ties=ties
    )
    expected = opt.nlog_likelihood(np.ones(1)) * len(df)
    loss = cox_loss(*_tensors(log_hz, df["week"], df["arrest"]), ties=ties, reduction="sum")
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_efron_and_breslow_differ_with_ties(rossi_fit):
    df, _, log_hz = rossi_fit
    args = _tensors(log_hz, df["week"], df["arrest"])
    assert cox_loss(*args, ties="breslow").item() > cox_loss(*args, ties="efron").item()


def test_mean_is_over_events(rossi_fit):
    df, _, log_hz = rossi_fit
    args = _tensors(log_hz, df["week"], df["arrest"])
    assert cox_loss(*args).item() == pytest.approx(
        cox_loss(*args, reduction="sum").item() / df["arrest"].sum()
    )


def test_batch_without_events_is_zero_with_a_graph():
    risk = torch.tensor([0.3, -1.2], requires_grad=True)
    loss = cox_loss(risk, torch.tensor([5.0, 9.0]), torch.tensor([0, 0]))
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(risk.grad, torch.zeros(2))


def test_batch_of_two_with_one_event_has_gradient():
    risk = torch.tensor([0.3, -1.2], requires_grad=True)
    loss = cox_loss(risk, torch.tensor([5.0, 9.0]), torch.tensor([1, 0]))
    loss.backward()
    expected = -(0.3 - np.log(np.exp(0.3) + np.exp(-1.2)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert risk.grad[0] < 0 < risk.grad[1]  # raising the event's risk lowers the loss


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-8, 8), st.integers(1, 6), st.booleans()), min_size=1, max_size=30))
def test_loss_is_finite_and_non_negative(rows):
    risk, time, event = (torch.tensor(c) for c in zip(*rows, strict=True))
    loss = cox_loss(risk.double(), time.double(), event)
    assert torch.isfinite(loss)
    assert loss.item() >= -1e-5  # a probability's log is <= 0


surv_rows = st.lists(
    st.tuples(st.integers(1, 8), st.booleans(), st.integers(-3, 3)), min_size=2, max_size=40
).filter(lambda rows: any(e for _, e, _ in rows))


@settings(max_examples=150, deadline=None)
@given(surv_rows)
def test_cindex_is_the_challenge_formula_with_ties(rows):
    warnings.simplefilter("ignore", RuntimeWarning)  # sksurv's 0/0 when no pair is comparable
    time, event, risk = (np.array(c) for c in zip(*rows, strict=True))
    got = concordance_index(time, event, risk)
    try:
        expected = concordance_index_censored(event.astype(bool), time.astype(float), risk.astype(float))[0]
    except NoComparablePairException:
        expected = np.nan
    if np.isnan(expected):  # no comparable pair (e.g. all events at one time): undefined for both
        assert np.isnan(got)
        return
    assert got == expected
    assert 0.0 <= got <= 1.0


def test_cindex_matches_lifelines_without_tied_times(rng):
    n = 200
    time = rng.permutation(n) + 1.0
    event = rng.random(n) < 0.5
    risk = -np.log(time) + rng.normal(size=n)
    # lifelines takes a score that grows with survival time: minus the risk.
    assert concordance_index(time, event, risk) == pytest.approx(
        lifelines_cindex(time, -risk, event), abs=1e-12
    )


def test_predicted_times_are_scored_with_a_minus_sign():
    time, event = np.array([1.0, 2.0, 3.0]), np.array([1, 1, 0])
    pred_months = np.array([10.0, 20.0, 30.0])  # perfectly ordered times
    assert concordance_index(time, event, -pred_months) == 1.0


def test_bootstrap_interval_brackets_the_estimate_on_real_data():
    x, y = load_whas500()
    event, time = y["fstat"], y["lenfol"]
    risk = x["age"].to_numpy(float)
    ci = concordance_bootstrap(time, event, risk, n_boot=200, seed=1)
    assert ci.estimate == concordance_index(time, event, risk)
    assert ci.low < ci.estimate < ci.high
    assert ci.high - ci.low < 0.15
    assert concordance_bootstrap(time, event, risk, n_boot=200, seed=1) == ci


def test_kaplan_meier_by_hand():
    # times 2,4,6(c),8,10(c): S = 1, .8, .6, .6, .3, .3
    km = kaplan_meier([2, 4, 6, 8, 10], [1, 1, 0, 1, 0])
    np.testing.assert_allclose(km.time_months, [0, 2, 4, 6, 8, 10])
    np.testing.assert_allclose(km.survival, [1, 0.8, 0.6, 0.6, 0.3, 0.3])
    assert km.floor == pytest.approx(0.3)
    assert km.median() == 8
    assert km.max_follow_up == 10
    np.testing.assert_array_equal(km.event_times, [2, 4, 8])


def test_kaplan_meier_equals_sksurv_on_real_data():
    _, y = load_whas500()
    km = kaplan_meier(y["lenfol"], y["fstat"])
    t_ref, s_ref = kaplan_meier_estimator(y["fstat"], y["lenfol"])
    # lifelines adds t=0; both then list every observed time with the same survival.
    np.testing.assert_allclose(km.time_months[1:], t_ref)
    np.testing.assert_allclose(km.survival[1:], s_ref, rtol=1e-12)
    assert km.max_follow_up == y["lenfol"].max()


def test_loss_is_finite_where_float32_exponentials_overflow():
    """The examples of issue 10: NaN and -inf with torchsurv's float32 Efron path."""
    for risks in ([100.0, 50.0], [-291.0, -229.0], [1000.0, -1000.0]):
        risk = torch.tensor(risks, requires_grad=True)
        loss = cox_loss(risk, torch.tensor([5.0, 5.0]), torch.tensor([1, 1]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(risk.grad).all(), (risks, loss, risk.grad)
        shifted = cox_loss(torch.tensor(risks) - risks[0], torch.tensor([5.0, 5.0]), torch.tensor([1, 1]))
        assert loss.item() == pytest.approx(shifted.item(), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_rossi_with_a_large_offset_still_equals_lifelines(rossi_fit, ties):
    df, cph, log_hz = rossi_fit
    args = (torch.tensor(df["week"].to_numpy(float)), torch.tensor(df["arrest"].to_numpy(bool)))
    plain = cox_loss(torch.tensor(log_hz), *args, ties=ties, reduction="sum")
    offset = cox_loss(torch.tensor(log_hz + 250.0), *args, ties=ties, reduction="sum")
    assert offset.item() == pytest.approx(plain.item(), rel=1e-12)
    if ties == "efron":
        assert offset.item() == pytest.approx(-cph.log_likelihood_, rel=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-50, 50), st.integers(1, 6), st.booleans()), min_size=2, max_size=12),
    st.floats(-1000, 1000),
    st.sampled_from(["efron", "breslow"]),
)
def test_loss_with_ties_is_finite_and_shift_invariant(rows, shift, ties):
    """Monthly follow-up makes ties common; risks of any scale give a finite loss and gradient, the
    same as the unshifted batch's."""
    risk0 = torch.tensor([r for r, _, _ in rows], dtype=torch.float32)
    time = torch.tensor([float(t) for _, t, _ in rows])
    event = torch.tensor([e for _, _, e in rows])
    risk = (risk0 + shift).requires_grad_(True)
    loss = cox_loss(risk, time, event, ties=ties)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(risk.grad).all()
    reference = cox_loss(risk0.double(), time, event, ties=ties)
    # float32 risks carry ~6e-8 relative error of the shifted values (up to 1e3): compare at that scale
    assert loss.item() == pytest.approx(reference.item(), rel=1e-4, abs=1e-3)
    if event.any():
        assert loss.item() >= 0.0  # each term is -log of a probability


def test_cindex_on_a_hand_worked_example_with_ties():
    """Five patients (time, event, risk), worked out by hand, not by the library we wrap:

    A (2, 1, 0.9): comparable with B, C, D, E (all later); risk above all four     -> 4 of 4
    B (4, 1, 0.5): D, E later; C at the same time but censored: comparable too;
                   D 0.1 below (1), E 0.7 above (0), C 0.5 tied (1/2)           -> 1.5 of 3
    C (4, 0), D (6, 0): censored, no pair starts from them
    E (6, 1, 0.7): nobody later; D at the same time, censored: 0.1 below           -> 1 of 1
    C = (4 + 1.5 + 1) / (4 + 3 + 1) = 6.5 / 8 = 0.8125
    """
    time = np.array([2.0, 4.0, 4.0, 6.0, 6.0])
    event = np.array([1, 1, 0, 0, 1])
    risk = np.array([0.9, 0.5, 0.5, 0.1, 0.7])
    assert concordance_index(time, event, risk) == 0.8125
    # predicted months are scored as their negation: the same pairs, the same value
    assert concordance_index(time, event, -(100.0 - 50.0 * risk)) == 0.8125


def test_cindex_without_any_event_is_nan_not_an_exception():
    """A small synthetic cohort can have a cohort subset without events (synth's oracle per cohort)."""
    assert np.isnan(concordance_index(np.array([1.0, 2.0]), np.array([0, 0]), np.array([0.1, 0.2])))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.booleans(), st.integers(-3, 3)), min_size=2, max_size=25
    ),  # few distinct times and risks: ties in both
    st.lists(st.integers(0, 24), min_size=1, max_size=40),
)
def test_pair_table_gives_the_c_index_of_a_resample_from_its_counts(rows, draws):
    time = np.array([r[0] for r in rows], float)
    event = np.array([r[1] for r in rows])
    risk = np.array([r[2] for r in rows], float) / 2
    idx = np.array([d % len(rows) for d in draws])
    table = PairTable(time, event)
    got = table.concordance(table.score(risk), np.bincount(idx, minlength=len(rows)))
    want = concordance_index(time[idx], event[idx], risk[idx]) if len(idx) > 1 else float("nan")
    if np.isnan(want):
        assert np.isnan(got)
    else:  # both are the same ratio of exact sums of halves; 1e-12 only for its float rounding
        assert got == pytest.approx(want, abs=1e-12)


def test_paired_bootstrap_equals_sksurv_on_the_same_draws():
    """outer_report.paired_bootstrap reads each resample's C-index off a PairTable; here the same
    draws are scored by sksurv on the resampled arrays (whas500: real times, ties included)."""
    from survfusion.training.outer_report import paired_bootstrap

    x, y = load_whas500()
    time, event = y["lenfol"].astype(float), y["fstat"].astype(bool)
    units = []
    for lo, hi in ((0, 40), (40, 90)):  # two test sets of different sizes
        t, e = time[lo:hi], event[lo:hi]
        age, bmi = x["age"].to_numpy(float)[lo:hi], x["bmi"].to_numpy(float)[lo:hi]
        a = {"time": t, "event": e, "months": 100.0 - age, "risk": age}
        b = {"time": t, "event": e, "months": 100.0 - bmi, "risk": bmi}
        units.append((a, b))
    point, low, high = paired_bootstrap(units, n_boot=100, seed=3)
    rng, stats = np.random.default_rng(3), []
    while len(stats) < 100:  # the function's own loop, with sksurv's C-index
        diffs = []
        for a, b in units:
            idx = rng.integers(0, len(a["time"]), len(a["time"]))
            t, e = a["time"][idx], a["event"][idx]
            if not e.any():
                break
            diffs.append(
                concordance_index(t, e, -b["months"][idx]) - concordance_index(t, e, -a["months"][idx])
            )
        if len(diffs) == len(units) and np.all(np.isfinite(diffs)):
            stats.append(float(np.mean(diffs)))
    want = np.quantile(stats, [0.025, 0.975])
    # the same exact ratios of sums of halves in both: 1e-12 only for float rounding
    assert (low, high) == pytest.approx(tuple(want), abs=1e-12)
    assert low <= point <= high
