"""Risk -> predicted months, fitted on the training risks and the training Kaplan-Meier curve.

The challenge scores predicted *times*, so the mapping must keep the order of the risks. Two modes:

``"paper"`` (the published mapping, for fidelity). For a new risk ``r`` among ``n`` training risks::

    p(r) = 1 - #{i : r_i >= r} / (n + 1)          # 1 for a risk above all training risks
    t(r) = max(0, T_k*)  with  k* = argmin_k |S_k - p(r)|   (first k on ties)

over the points ``(T_k, S_k)`` of the training KM curve (``T_0 = 0``, ``S_0 = 1``). ``t`` is a step
function of ``r``: every risk between the same two training risks gets the same time, and all risks
whose ``p`` lies nearer to the KM floor than to any other point share the time of the floor.

``"monotone"`` (default). Strictly decreasing in ``r`` for every real input, so the C-index of the
predicted times equals the C-index of the risks on any set of cases. Two strictly monotone,
continuous, piecewise-linear maps are composed, ``t(r) = Q(F(r))``:

1. ``F`` is the interpolated mid-rank distribution function of the training risks. With distinct
   sorted training risks ``x_1 < ... < x_m`` and ``c_j = (mid-rank of x_j) / (n + 1)`` in (0, 1),
   ``F`` interpolates ``(x_j, c_j)`` linearly and continues outside ``[x_1, x_m]`` with
   polynomial tails ``F(r) = c_1 / (1 + (x_1 - r) / tau)^2`` and
   ``F(r) = 1 - (1 - c_m) / (1 + (r - x_m) / tau)^2``, ``tau = max(sd of the training risks, 1)``
   (at least one log-hazard unit). Polynomial rather than exponential tails, because the challenge
   metric counts predicted times closer than 1e-8 as ties: with them, cases far outside the
   training range still get times that differ by more than that. ``F`` is the paper's ``p`` with
   its steps replaced by ramps.
2. ``Q`` inverts the KM curve through its corners: the points ``(S = 1, t = 0)``,
   ``(S(t_e), t_e)`` for every event time ``t_e``, and ``(S = 0, t_max)`` with ``t_max`` the longest
   training follow-up, joined linearly. At each corner ``Q`` equals the KM quantile function
   ``inf{t : S(t) <= s}``, so times stay on the training KM scale (a risk at the training median
   gets about the KM median time); below the KM floor ``S(t_last)`` the last segment runs on to
   ``t_max`` instead of piling every low-risk case onto one time.

Numerically ``Q`` is evaluated on ``g = 1 - F(r)``, computed directly in the upper tail, so very
high risks keep distinct (tiny) times. Strictness holds to float64 resolution: for risks that differ
by more than about 1e-12 of the local knot spacing (and, in the tails, by more than ~1e-9 relative
to their distance from the training range).

Both modes are stored as plain JSON (``to_dict``/``from_dict``): never a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from survfusion.errors import UserError

MODES = ("monotone", "paper")


@dataclass(frozen=True)
class _Tables:
    """Everything ``predict`` needs, in plain lists (the JSON form)."""

    train_risk: list[float]
    km_time_months: list[float]
    km_survival: list[float]
    risk_knots: list[float]
    cdf_knots: list[float]
    tau: float
    fail_knots: list[float]
    time_knots: list[float]


class RiskToTime:
    """Maps Cox risks to predicted months; ``fit`` on training risks and outcomes, then ``predict``."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self._t: _Tables | None = None

    def fit(self, train_risk, time_months, event, *, mode: str = "monotone") -> RiskToTime:
        if mode not in MODES:
            raise UserError(f"calibration mode: expected one of {', '.join(MODES)}, got {mode!r}")
        risk = np.asarray(train_risk, dtype=float).reshape(-1)
        time_months = np.asarray(time_months, dtype=float).reshape(-1)
        event = np.asarray(event).astype(bool).reshape(-1)
        if not (risk.size == time_months.size == event.size) or risk.size == 0:
            raise UserError(
                f"calibration: need equal, non-zero lengths; got {risk.size}, "
                f"{time_months.size}, {event.size}"
            )
        if not np.all(np.isfinite(risk)) or not np.all(np.isfinite(time_months)):
            raise UserError("calibration: training risks and times must be finite")
        if not event.any():
            raise UserError("calibration: the training set has no event; the KM curve never falls")
        from survfusion.nets.survival import kaplan_meier  # lifelines: fitting only, never at inference

        km = kaplan_meier(time_months, event)
        risk_knots, cdf_knots = _cdf_knots(risk)
        fail_knots, time_knots = _km_corners(km)
        self.mode = mode
        self._t = _Tables(
            train_risk=sorted(risk.tolist()),
            km_time_months=km.time_months.tolist(),
            km_survival=km.survival.tolist(),
            risk_knots=risk_knots.tolist(),
            cdf_knots=cdf_knots.tolist(),
            tau=max(float(risk.std()), 1.0),
            fail_knots=fail_knots.tolist(),
            time_knots=time_knots.tolist(),
        )
        return self

    def predict(self, risk) -> np.ndarray:
        """Predicted months (float64, >= 0) for an array of risks (or a scalar -> shape ())."""
        if self._t is None:
            raise RuntimeError("RiskToTime.predict called before fit/from_dict")
        r = np.asarray(risk, dtype=float)
        if not np.all(np.isfinite(r)):
            raise UserError("calibration: risks must be finite")
        if self.mode == "paper":
            return self._predict_paper(r)
        t = self._tables()
        return np.interp(self._one_minus_cdf(r), t.fail_knots, t.time_knots)

    def _tables(self) -> _Tables:
        if self._t is None:  # predict() refuses before this; a guard for other callers
            raise UserError("calibration: not fitted")
        return self._t

    def _one_minus_cdf(self, r: np.ndarray) -> np.ndarray:
        """``g = 1 - F(r)`` in (0, 1), strictly decreasing; exact in the upper tail (no ``1 - ~1``)."""
        t = self._tables()
        x, c = np.asarray(t.risk_knots), np.asarray(t.cdf_knots)
        inside = 1.0 - np.interp(r, x, c)
        lo = 1.0 - c[0] / (1.0 + np.maximum(x[0] - r, 0.0) / t.tau) ** 2
        hi = (1.0 - c[-1]) / (1.0 + np.maximum(r - x[-1], 0.0) / t.tau) ** 2
        return np.where(r < x[0], lo, np.where(r > x[-1], hi, inside))

    def _predict_paper(self, r: np.ndarray) -> np.ndarray:
        t = self._tables()
        train = np.asarray(t.train_risk)  # sorted ascending
        n_at_least = train.size - np.searchsorted(train, r, side="left")
        p = 1.0 - n_at_least / (train.size + 1.0)
        km_s, km_t = np.asarray(t.km_survival), np.asarray(t.km_time_months)
        nearest = np.argmin(np.abs(km_s[None, :] - p.reshape(-1, 1)), axis=1)
        return np.maximum(km_t[nearest], 0.0).reshape(r.shape)

    def to_dict(self) -> dict:
        if self._t is None:
            raise RuntimeError("RiskToTime.to_dict called before fit")
        return {"mode": self.mode, **self._t.__dict__}

    @classmethod
    def from_dict(cls, d: dict) -> RiskToTime:
        if d.get("mode") not in MODES:
            raise UserError(f"calibration: mode must be one of {', '.join(MODES)}, got {d.get('mode')!r}")
        fields = {k: v for k, v in d.items() if k != "mode"}
        try:
            tables = _Tables(**fields)
        except TypeError as err:
            raise UserError(f"calibration: fields do not match this version ({err})") from None
        obj = cls()
        obj.mode, obj._t = d["mode"], tables
        return obj


def _cdf_knots(risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct sorted risks and their mid-rank plotting positions ``c_j`` in (0, 1).

    A value held by ``k_j`` of the risks, after ``m_j`` smaller ones, has the mid-rank
    ``m_j + (k_j + 1) / 2`` (``scipy.stats.rankdata(method="average")``; the test compares)."""
    x, counts = np.unique(risk, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0
    return x, mid_rank / (risk.size + 1.0)


def _km_corners(km) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the KM curve as (1 - survival, time), both ascending (for ``np.interp``)."""
    at_event = np.isin(km.time_months, km.event_times)
    surv = np.concatenate([[1.0], km.survival[at_event]])
    times = np.concatenate([[0.0], km.time_months[at_event]])
    t_last = times[-1]
    # Past the floor the curve runs on to the longest follow-up. If the longest follow-up is the last
    # event itself (no one followed longer), extend by the mean gap between event times instead.
    t_end = km.max_follow_up if km.max_follow_up > t_last else t_last + max(t_last / times.size, 1e-6)
    if surv[-1] > 0.0:
        surv, times = np.append(surv, 0.0), np.append(times, t_end)
    return 1.0 - surv, times
