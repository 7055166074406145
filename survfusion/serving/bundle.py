"""The model bundle in memory: trained member(s), their preprocessing, the calibration, and the
formula that makes one risk of many (``survfusion.serving.bundle_io`` writes and reads it).

A bundle holds one model (``train``) or an ensemble of ``K`` members (``train --folds K --ensemble``),
each member with its own preprocessing, since each was fitted on its own training patients.

**The bundle's risk.** Member ``k`` gives the log-risk ``r_k``; ``mu_k`` and ``sd_k`` are the mean and
standard deviation of its risks on its own training patients (best epoch). Members trained on
different patients need not share a scale, so each is standardised before averaging, and the
average is put back on the members' mean scale::

    risk = mean_k((r_k - mu_k) / sd_k) * mean_k(sd_k) + mean_k(mu_k)

For one member this is ``r_1`` itself (to float64 rounding): a one-member bundle predicts what the
single model predicts. A **residual** bundle (``combination = "sum"``, ``offset: coxnet``) adds its
members' risks instead, ``risk = sum_k r_k``: a linear model and the network trained on top of it
(the network learned only what the linear model's risk misses), each with its own model name.
The calibration (``survfusion.nets.calibration``) maps this risk to months; an
ensemble's is fitted on the out-of-fold risks of its training patients (``survfusion.training.ensemble``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from survfusion.errors import UserError
from survfusion.features.request import FeatureRequest
from survfusion.limits import MAX_ENSEMBLE_MEMBERS
from survfusion.nets.calibration import RiskToTime
from survfusion.nets.models import SurvivalModel, batched_risks
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer

MODALITIES = ("hist", "rna", "clinical")
COMBINATIONS = ("mean", "sum")


@dataclass
class Member:
    """One trained model with its own preprocessing and the scale of its training risks."""

    model: SurvivalModel
    clinical: ClinicalEncoder
    rna: RnaVectorizer
    embedding_means: dict[str, np.ndarray] | None = None
    risk_mean: float = 0.0  # mean of the member's risks on its training patients
    risk_sd: float = 1.0  # their standard deviation (> 0)
    info: dict = field(default_factory=dict)  # fold, seed, best epoch: recorded, not used
    name: str | None = None  # its registered model name, where it is not the bundle's (a residual)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.risk_mean) and np.isfinite(self.risk_sd) and self.risk_sd > 0):
            raise UserError(
                f"ensemble member: training risks must have a finite mean and a positive sd, got "
                f"mean {self.risk_mean}, sd {self.risk_sd} (a model that gives every patient one risk)"
            )

    def inputs(self, clinical: Sequence[Mapping], rna: Sequence[Mapping], replace=()):
        """Encoded ``(clinical (P, C), rna (P, G))`` tensors of raw records through this member's
        preprocessing; a modality in ``replace`` is zeros (its embedding is replaced anyway)."""
        n = len(clinical)
        clin = np.zeros((n, self.clinical.dim), np.float32)
        genes = np.zeros((n, self.rna.dim), np.float32)
        for i in range(n):
            if "clinical" not in replace:
                clin[i] = self.clinical.transform(clinical[i]).values
            if "rna" not in replace:
                genes[i] = self.rna.transform(rna[i]).values
        return torch.from_numpy(clin), torch.from_numpy(genes)


def combine_risks(member_risks: np.ndarray, means: Sequence[float], sds: Sequence[float]) -> np.ndarray:
    """The bundle's risk ``(P,)`` from member risks ``(K, P)`` (the formula of the module docstring)."""
    r = np.asarray(member_risks, dtype=np.float64)
    mu, sd = np.asarray(means, np.float64)[:, None], np.asarray(sds, np.float64)[:, None]
    return on_common_scale(((r - mu) / sd).mean(axis=0), means, sds)


def on_common_scale(z: np.ndarray, means: Sequence[float], sds: Sequence[float]) -> np.ndarray:
    """A mean standardised risk put back on the members' mean scale: ``z * mean(sd) + mean(mu)``."""
    return np.asarray(z, np.float64) * float(np.mean(sds)) + float(np.mean(means))


@dataclass
class Bundle:
    """Trained member(s) with their preprocessing, and the calibration of the bundle's risk.

    ``request`` is the ``FeatureRequest`` the training features were made with (the container makes
    its tiles the same way); it is stored in the manifest as ``training.features`` (the format is
    unchanged), and ``config`` holds the rest of the training settings."""

    model_name: str
    members: list[Member]
    calibration: RiskToTime
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    request: FeatureRequest | None = None
    combination: str = "mean"  # or "sum": a residual bundle (module docstring)

    def __post_init__(self) -> None:
        if not 1 <= len(self.members) <= MAX_ENSEMBLE_MEMBERS:
            raise UserError(f"bundle: 1 to {MAX_ENSEMBLE_MEMBERS} members, got {len(self.members)}")
        if self.combination not in COMBINATIONS:
            raise UserError(
                f"bundle: combination must be one of {', '.join(COMBINATIONS)}, got {self.combination!r}"
            )

    @classmethod
    def single(
        cls,
        model_name,
        model,
        clinical,
        rna,
        calibration,
        *,
        config=None,
        metrics=None,
        request=None,
        embedding_means=None,
        risk_mean=0.0,
        risk_sd=1.0,
    ) -> Bundle:
        """A one-member bundle (plain ``train``)."""
        member = Member(model, clinical, rna, embedding_means, risk_mean, risk_sd)
        return cls(model_name, [member], calibration, config or {}, metrics or {}, request)

    def member_risks(self, bags, clinical, rna, *, replace=(), attention: bool = False):
        """Risks ``(K, P)`` of each member for patients given as tile-feature bags and raw clinical
        and RNA records (``models.batched_risks``); ``replace``: modalities whose embedding is each
        member's training mean. With ``attention``, also each bag's tile weights averaged over members."""
        risks: list[np.ndarray] = []
        weights: list | None = None
        for m in self.members:
            means = m.embedding_means
            if replace and means is None:
                raise UserError("the bundle has no training means to stand in for a missing input")
            swap = {name: torch.from_numpy(np.asarray(means[name])) for name in replace} if means else {}
            clin, genes = m.inputs(clinical, rna, replace)
            out = batched_risks(m.model, bags, clin, genes, replace=swap, attention=attention)
            if attention:
                out, att = out
                weights = att if weights is None else [w + a for w, a in zip(weights, att, strict=True)]
            risks.append(out)
        stacked = np.stack(risks)
        if attention:
            return stacked, [w / len(self.members) for w in weights or []]
        return stacked

    def combine(self, member_risks: np.ndarray) -> np.ndarray:
        if self.combination == "sum":
            return np.asarray(member_risks, np.float64).sum(axis=0)
        return combine_risks(
            member_risks, [m.risk_mean for m in self.members], [m.risk_sd for m in self.members]
        )

    def risks(self, bags, clinical, rna, *, replace=()) -> np.ndarray:
        """The bundle's risks ``(P,)`` (the formula of the module docstring)."""
        return self.combine(self.member_risks(bags, clinical, rna, replace=replace))

    def months(self, risk) -> np.ndarray:
        return self.calibration.predict(risk)
