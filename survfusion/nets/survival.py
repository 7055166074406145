"""Survival statistics: the Cox loss (computed here, stably, checked against lifelines and
scikit-survival), the C-index (scikit-survival) and Kaplan-Meier (lifelines), with the conventions
this project relies on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from lifelines import KaplanMeierFitter
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import concordance_index_censored


def cox_loss(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    *,
    ties: str = "efron",
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative Cox partial log-likelihood of the log-risks ``risk``, computed stably.

    With risk sets ``R(t) = {j : T_j >= t}``, distinct event times ``t_k``, their ``d_k`` events
    ``H_k``, ``S_k = sum_{j in R(t_k)} exp(r_j)`` and ``E_k = sum_{i in H_k} exp(r_i)``:

    - Breslow: ``pll = sum_k [ sum_{i in H_k} r_i - d_k log S_k ]``
    - Efron:   ``pll = sum_k [ sum_{i in H_k} r_i - sum_{l=0}^{d_k-1} log(S_k - l/d_k E_k) ]``

    Evaluated in float64 as ``log S_k = logsumexp_{j in R(t_k)} r_j`` and
    ``log(S_k - l/d_k E_k) = log S_k + log1p(-(l/d_k) exp(log E_k - log S_k))``, where
    ``E_k <= S_k`` keeps the ``log1p`` argument above ``-1``: no exponential can overflow or
    underflow to a NaN or an infinite loss, whatever the scale of the risks. The likelihood is
    invariant to adding one constant to every risk, and so is this computation (the batch maximum is
    subtracted first). ``reduction="mean"`` divides ``-pll`` by the number of events; ``"sum"``
    returns ``-pll``. A batch without any event has no likelihood term: the result is an exact 0
    that stays on ``risk``'s autograd graph (zero gradients), so a training loop with batch size 2
    never sees NaN or an exception; so does a batch of one patient.

    Args:
        risk: log relative hazards ``(B,)``; the result has their dtype.
        time: event or censoring times ``(B,)``.
        event: event indicators ``(B,)``, bool or 0/1.
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties: expected 'efron' or 'breslow', got {ties!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    risk = risk.reshape(-1)
    event = event.reshape(-1).to(device=risk.device, dtype=torch.bool)
    time = time.reshape(-1).to(device=risk.device, dtype=torch.float64)
    if not (risk.shape == time.shape == event.shape):
        raise ValueError(
            f"risk, time, event: expected equal lengths, got {risk.shape[0]}, {time.shape[0]}, "
            f"{event.shape[0]}"
        )
    if not bool(torch.isfinite(risk).all()):
        raise FloatingPointError("cox_loss: the risks contain NaN or inf (the model diverged)")
    n_events = int(event.sum())
    if n_events == 0 or risk.numel() < 2:  # no term, or only log(e^r / e^r) = 0
        return (risk * 0.0).sum()
    r = risk.to(torch.float64)
    r = r - r.max().detach()
    event_times = torch.unique(time[event])  # (K,)
    at_risk = time[None, :] >= event_times[:, None]  # (K, B)
    hit = event[None, :] & (time[None, :] == event_times[:, None])  # (K, B): the events H_k
    log_s = torch.logsumexp(r[None, :].masked_fill(~at_risk, float("-inf")), dim=1)
    d = hit.sum(dim=1)
    events_r = (r[None, :] * hit).sum(dim=1)
    if ties == "breslow":
        log_terms = d * log_s
    else:
        log_e = torch.logsumexp(r[None, :].masked_fill(~hit, float("-inf")), dim=1)
        ratio = torch.exp(log_e - log_s)  # E_k / S_k in (0, 1]
        steps = torch.arange(int(d.max()), device=r.device, dtype=torch.float64)
        frac = steps[None, :] / d[:, None]  # l / d_k, (K, max d)
        used = steps[None, :] < d[:, None]
        corr = torch.log1p(-(frac * ratio[:, None]).masked_fill(~used, 0.0))
        log_terms = d * log_s + corr.sum(dim=1)
    total = -(events_r - log_terms).sum()
    total = total / n_events if reduction == "mean" else total
    return total.to(risk.dtype)


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index exactly as the challenge scores it.

    ``C = (#concordant + 0.5 #tied-risk) / #comparable`` over pairs ``(i, j)`` with ``T_i < T_j`` and
    ``event_i`` (pairs with equal times are comparable when only ``i`` had the event), where
    concordant means ``risk_i > risk_j``. Computed by
    ``sksurv.metrics.concordance_index_censored(event.astype(bool), time, risk)[0]``.
    For predicted times pass ``risk=-time_pred`` (a later predicted time is a lower risk).
    NaN when no pair is comparable (fewer than two cases, no event, or all events at one time), where
    sksurv returns NaN or raises.
    """
    time, event, risk = (np.asarray(a) for a in (time, event, risk))
    if not event.astype(bool).any():  # sksurv raises "All samples are censored"
        return float("nan")
    try:
        return float(
            concordance_index_censored(event.astype(bool), time.astype(float), risk.astype(float))[0]
        )
    except NoComparablePairException:
        return float("nan")


@dataclass(frozen=True)
class CIndexCI:
    """A C-index with its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    n_boot: int

    def to_dict(self) -> dict:
        return {"c_index": self.estimate, "ci95_low": self.low, "ci95_high": self.high, "n_boot": self.n_boot}


TIED_TOL = 1e-8  # sksurv's: risks this close are a tie (0.5)
MAX_PAIR_TABLE = 4000  # patients up to which ``PairTable`` holds its n x n matrices (128 MB each)


class PairTable:
    """Every pair of ``(time, event)`` patients, for the C-index of resamples without resampling:
    ``comparable[i, j]`` is 1 where ``concordance_index`` compares ``i`` with ``j`` (``T_i < T_j``
    and ``event_i``, or equal times with only ``i`` an event) and ``score(risk)[i, j]`` is 1, 0.5 or
    0 as ``risk_i`` exceeds, ties with (``TIED_TOL``) or falls below ``risk_j``. A resample that
    draws patient ``i`` ``w_i`` times holds ``w_i w_j`` copies of pair ``(i, j)`` (two copies of
    one patient are never comparable), so its C-index is ``w.(comparable * score).w / w.comparable.w``:
    the same sums, in the same exact arithmetic of halves, as ``concordance_index`` on the resampled
    arrays (a test holds them equal)."""

    def __init__(self, time: np.ndarray, event: np.ndarray) -> None:
        t, e = np.asarray(time, np.float64), np.asarray(event, bool)
        if len(t) > MAX_PAIR_TABLE:
            raise ValueError(f"PairTable: {len(t)} patients, more than {MAX_PAIR_TABLE}")
        before = t[:, None] < t[None, :]
        same_censored = (t[:, None] == t[None, :]) & ~e[None, :]
        self.comparable = (e[:, None] & (before | same_censored)).astype(np.float64)

    def score(self, risk: np.ndarray) -> np.ndarray:
        r = np.asarray(risk, np.float64)
        diff = r[:, None] - r[None, :]
        return self.comparable * np.where(np.abs(diff) <= TIED_TOL, 0.5, (diff > 0).astype(np.float64))

    def concordance(self, scored: np.ndarray, counts: np.ndarray) -> float:
        """C-index of the resample drawing each patient ``counts[i]`` times (NaN without a pair)."""
        w = np.asarray(counts, np.float64)
        denominator = w @ self.comparable @ w
        return float(w @ scored @ w / denominator) if denominator > 0 else float("nan")


def concordance_bootstrap(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> CIndexCI:
    """C-index with a percentile bootstrap interval over patients (resampled with replacement).

    Resamples without any comparable pair (e.g. no event drawn) are redrawn, so the interval always
    rests on ``n_boot`` valid replicates.
    """
    time, event, risk = (np.asarray(a) for a in (time, event, risk))
    estimate = concordance_index(time, event, risk)
    rng = np.random.default_rng(seed)
    stats: list[float] = []
    n, tries = len(time), 0
    table = PairTable(time, event) if n <= MAX_PAIR_TABLE else None  # the same values, without sksurv's loop
    scored = table.score(risk) if table is not None else None
    while len(stats) < n_boot:
        tries += 1
        if tries > 20 * n_boot:
            raise ValueError("bootstrap: too few resamples with a comparable pair; need more events")
        idx = rng.integers(0, n, n)
        if not event[idx].any():
            continue
        if table is not None and scored is not None:
            value = table.concordance(scored, np.bincount(idx, minlength=n))
        else:
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # sksurv's 0/0 without a comparable pair
                value = concordance_index(time[idx], event[idx], risk[idx])
        if np.isfinite(value):
            stats.append(value)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return CIndexCI(estimate=estimate, low=float(low), high=float(high), n_boot=n_boot)


@dataclass(frozen=True)
class KaplanMeier:
    """A Kaplan-Meier curve as a step function: ``survival[k]`` holds on ``[time_months[k], next)``.

    ``time_months[0] == 0`` with survival 1; the other points are every observed time (events and
    censorings), as lifelines reports them.
    """

    time_months: np.ndarray
    survival: np.ndarray
    event_times: np.ndarray
    max_follow_up: float

    @property
    def floor(self) -> float:
        """Survival after the last event: the lowest probability the curve reaches."""
        return float(self.survival[-1])

    def median(self) -> float:
        """First time the curve falls to 0.5 or below; ``inf`` if it never does."""
        below = np.flatnonzero(self.survival <= 0.5)
        return float(self.time_months[below[0]]) if below.size else float("inf")


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> KaplanMeier:
    """Kaplan-Meier estimate of the survival function, by ``lifelines.KaplanMeierFitter``."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    if time.size == 0:
        raise ValueError("kaplan_meier: no patients")
    kmf = KaplanMeierFitter().fit(time, event_observed=event)
    sf = kmf.survival_function_
    return KaplanMeier(
        time_months=sf.index.to_numpy(dtype=float),
        survival=sf.iloc[:, 0].to_numpy(dtype=float),
        event_times=np.unique(time[event]),
        max_follow_up=float(time.max()),
    )
