"""Blends: every candidate fitted on the same patients, their risks averaged, as one bundle
(``outer-test --methods blend``, ``train --model blend``).

A blend is the other bet to ``auto`` (``training.selection``). ``auto`` chooses one candidate by
inner folds of about 28 patients, and at n = 176 that choice is mostly noise (docs/RESULTS.md,
issue 27: it picks a different candidate from pool to pool and scores below the best single one).
A blend chooses nothing: each candidate is fitted on all the given patients
(``selection.fit_candidate``, the same fit as its candidate unit), and the bundle holds all their
members with the bundle's **mean** combination, each member's risk standardised on its own
training risks (``survfusion.serving.bundle``); one calibration (risk -> months) is fitted on the
blended risks of the same patients, as every other fit calibrates on its training patients. So
there is no inner score and no choice to be optimistic about, and it costs the sum of its
candidates' fits, with no inner folds (about a quarter of ``auto``'s time on the default list).

Members weigh equally, so a candidate that is a K-member ensemble weighs K times; a candidate
whose members **add** (a residual: ``offset: coxnet``) cannot be nested in a mean and is left out,
with a line saying so. ``blend_members`` says which candidates of a list a blend holds; the default
blend is the default candidates less the residual one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from survfusion.errors import UserError
from survfusion.nets.calibration import RiskToTime
from survfusion.serving.bundle import Bundle
from survfusion.training.config import TrainConfig
from survfusion.training.dataset import CohortData
from survfusion.training.selection import Candidate, fit_candidate, risks_of

BLEND = "blend"


def blend_members(candidates: list[Candidate], base: TrainConfig, log=None) -> list[Candidate]:
    """The candidates a blend holds: all but those whose members add (a residual)."""
    keep = [c for c in candidates if c.train_config(base).offset == "none"]
    for c in candidates:
        if c not in keep and log:
            log(f"blend: leaves out {c.name} (its members add, and a bundle cannot nest it in a mean)")
    if not keep:
        raise UserError("blend: no candidate can be blended (every one is a residual)")
    return keep


def fit_blend(
    data: CohortData,
    base: TrainConfig,
    candidates: list[Candidate],
    train_idx: np.ndarray,
    out: Path,
    *,
    device: str = "cpu",
    cohort_dir=None,
) -> Bundle:
    """Every candidate fitted on ``train_idx`` alone, their members in one mean-combined bundle,
    calibrated on the blended risks of ``train_idx`` (module docstring)."""
    train_idx = np.sort(np.asarray(train_idx))
    members = []
    for c in candidates:
        b = fit_candidate(data, base, c, train_idx, Path(out) / c.name, device=device, cohort_dir=cohort_dir)
        if b.combination != "mean":
            raise UserError(f"blend: candidate {c.name} adds its members; a blend holds only averaged ones")
        members += [
            replace(m, name=m.name or b.model_name, info={**m.info, "candidate": c.name}) for m in b.members
        ]
    config = {**asdict(base), "model": BLEND, "blend": [c.to_dict() for c in candidates]}
    draft = Bundle(BLEND, members, RiskToTime(), config=config, request=data.feature_request)
    risk = risks_of(draft, data, train_idx)
    calibration = RiskToTime().fit(
        risk, data.time_months[train_idx], data.event[train_idx], mode=base.calibration
    )
    metrics = {
        "blend": {
            "candidates": [c.name for c in candidates],
            "members": len(members),
            "why": "every candidate fitted on all the training patients, risks averaged on their "
            "training scales: nothing chosen on patients",
        }
    }
    return replace(draft, calibration=calibration, metrics=metrics)


def train_blend(
    data: CohortData,
    base: TrainConfig,
    candidates: list[Candidate],
    out: str | os.PathLike,
    *,
    device: str = "cpu",
    cohort_dir=None,
    log=None,
) -> Bundle:
    """``train --model blend``: the blend fitted on every patient and saved as ``OUT/bundle``."""
    from survfusion.serving.bundle_io import save_bundle

    out = Path(out)
    held = blend_members(candidates, base, log)
    bundle = fit_blend(
        data, base, held, np.arange(len(data)), out / "fits", device=device, cohort_dir=cohort_dir
    )
    out.mkdir(parents=True, exist_ok=True)
    save_bundle(bundle, out / "bundle")
    shutil.rmtree(out / "fits", ignore_errors=True)
    return bundle
