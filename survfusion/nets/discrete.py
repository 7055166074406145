"""The discrete-time survival likelihood of MCAT and PORPOISE (Chen et al. 2021, 2022), on one risk.

**Bins** (``DiscreteBins``): the time axis is cut at the quartiles (``n_bins`` quantiles) of the
training patients' *uncensored* times, as MCAT cuts it; patient ``i`` falls in bin
``y_i = #{cuts <= T_i}`` in ``0..K-1``.

**Hazards.** MCAT's head emits ``K`` logits per patient. Here they are tied to the model's one
risk score ``r_i`` by per-bin offsets ``b_k`` (trainable, training-only): ``h_ik = sigmoid(b_k +
r_i)``, a proportional-odds discrete-time model. So every model keeps its one output, a larger
``r`` still means every hazard is higher (earlier recurrence), and the container and the
calibration are unchanged; the offsets are not needed to rank patients and are not bundled.

**Likelihood.** With ``S_ik = prod_{j <= k} (1 - h_ij)`` and ``S_i,-1 = 1``, the negative
log-likelihood of patient ``i`` (``c_i = 1`` for a censored patient) is PORPOISE's::

    uncensored_i = -(1 - c_i) [ log S_i,y-1 + log h_i,y ]
    censored_i   = -c_i log S_i,y
    loss_i       = (1 - alpha) (uncensored_i + censored_i) + alpha uncensored_i

averaged over the batch. With ``alpha = 0`` it is the logistic regression of the person-period
table (Singer and Willett): one Bernoulli trial per patient and bin up to ``y_i``, the outcome 1
only in the bin of an event. Computed with ``logsigmoid`` (``log h = logsigmoid(z)``,
``log(1 - h) = logsigmoid(-z)``): finite for logits of any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from survfusion.errors import UserError


@dataclass(frozen=True)
class DiscreteBins:
    """Cut points ``(K-1,)`` in months; ``index(t)`` gives each time's bin ``0..K-1``."""

    cuts_months: tuple[float, ...]

    @classmethod
    def fit(cls, time: np.ndarray, event: np.ndarray, n_bins: int = 4) -> DiscreteBins:
        """Quantiles ``1/K .. (K-1)/K`` of the uncensored times (duplicates merged)."""
        t = np.asarray(time, np.float64)[np.asarray(event, bool)]
        if n_bins < 2 or t.size < n_bins:
            raise UserError(
                f"discrete-time loss: {n_bins} bins need at least {max(n_bins, 2)} events, got {t.size}"
            )
        cuts = np.unique(np.quantile(t, np.arange(1, n_bins) / n_bins))
        return cls(tuple(float(c) for c in cuts))

    @property
    def n_bins(self) -> int:
        return len(self.cuts_months) + 1

    def index(self, time: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.cuts_months), np.asarray(time, np.float64), side="right")

    def initial_offsets(self, time: np.ndarray, event: np.ndarray) -> np.ndarray:
        """``logit`` of each bin's pooled hazard (events in the bin / patients reaching it): the
        offsets' maximum-likelihood start for ``r = 0``, clipped away from 0 and 1."""
        y, e = self.index(time), np.asarray(event, bool)
        at_risk = np.array([(y >= k).sum() for k in range(self.n_bins)], np.float64)
        events = np.array([(e & (y == k)).sum() for k in range(self.n_bins)], np.float64)
        h = np.clip(events / np.maximum(at_risk, 1.0), 1e-3, 1 - 1e-3)
        return np.log(h / (1 - h))

    def to_dict(self) -> dict:
        return {"cuts_months": list(self.cuts_months)}


def discrete_time_nll(
    risk: torch.Tensor,
    offsets: torch.Tensor,
    bin_index: torch.Tensor,
    event: torch.Tensor,
    *,
    alpha: float = 0.0,
) -> torch.Tensor:
    """The mean negative log-likelihood of the module docstring.

    Args:
        risk: ``(B,)`` the model's risks ``r``.
        offsets: ``(K,)`` the bin offsets ``b``.
        bin_index: ``(B,)`` each patient's bin ``y`` (int).
        event: ``(B,)`` bool or 0/1, True for an event (``c = 1 - event``).
    """
    if not bool(torch.isfinite(risk).all()):
        raise FloatingPointError("discrete_time_nll: the risks contain NaN or inf (the model diverged)")
    z = offsets[None, :].to(risk.dtype) + risk.reshape(-1, 1)  # (B, K) logits of the hazards
    y = bin_index.reshape(-1, 1).to(device=risk.device, dtype=torch.long)
    k = torch.arange(z.shape[1], device=risk.device)[None, :]
    log_surv_terms = F.logsigmoid(-z)  # log(1 - h)
    log_s_before = (log_surv_terms * (k < y)).sum(dim=1)  # log S_{y-1}
    log_h = F.logsigmoid(z).gather(1, y).squeeze(1)
    log_s_at = log_s_before + log_surv_terms.gather(1, y).squeeze(1)  # log S_y
    c = 1.0 - event.reshape(-1).to(device=risk.device, dtype=risk.dtype)
    uncensored = -(1.0 - c) * (log_s_before + log_h)
    censored = -c * log_s_at
    return ((1.0 - alpha) * (uncensored + censored) + alpha * uncensored).mean()
