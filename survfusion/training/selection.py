"""Honest model selection: choose among candidate recipes by inner cross-validation, as a method
(``outer-test --methods auto``) and as a model (``train --model auto``).

A **candidate** is a typed recipe: a name, a registered model or classical baseline, the
``TrainConfig`` overrides it trains with (on top of the run's config), and how it uses its training
patients (``single``: one model, an early-stopping recipe splitting them 85:15 itself;
``ensemble``: ``train --ensemble``'s K folds; ``baseline``: a linear baseline's own inner folds).
``DEFAULT_CANDIDATES`` is the documented list; ``--candidates FILE`` (JSON or YAML: a list of
``{name, model, config, method}``) replaces it.

**Selection** (``select``) sees only the patients it is given (an outer protocol's pool, or the
whole cohort for ``train --model auto``): they are dealt into ``INNER_FOLDS`` folds stratified by
cohort and event; every candidate is fitted on each fold's complement (``fit_candidate``: nothing
of the held-out fold reaches its inputs, its epoch or its calibration) and scored by the C-index
of its risks on the fold; the candidate of highest mean inner C-index wins (a tie keeps the
earlier candidate in the list), and is refitted on all the given patients. The outer score of
``auto`` is then the score of this whole procedure on patients it never saw (nested
cross-validation); its inner scores, like every figure chosen on the patients it is scored on,
are optimistic, and are recorded as the reason for the choice, never as a test score.
A classical baseline that a bundle cannot hold (``RSF_ClinRNA``) cannot be a candidate.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from survfusion.errors import UserError
from survfusion.nets.survival import concordance_index
from survfusion.serving.bundle import Bundle
from survfusion.training.config import TrainConfig, read_structured
from survfusion.training.dataset import CohortData, strata_of, stratified_folds, stratified_split

INNER_FOLDS = 5
CANDIDATE_METHODS = ("single", "ensemble", "baseline")


@dataclass(frozen=True)
class Candidate:
    name: str
    model: str
    config: dict = field(default_factory=dict)  # TrainConfig overrides on top of the run's config
    method: str = "single"

    def __post_init__(self) -> None:
        from survfusion.nets.registry import check_model_name
        from survfusion.training.baselines import is_baseline

        if self.method not in CANDIDATE_METHODS:
            raise UserError(f"candidate {self.name}: method must be one of {', '.join(CANDIDATE_METHODS)}")
        if (self.method == "baseline") != is_baseline(self.model):
            raise UserError(
                f"candidate {self.name}: a classical baseline has method 'baseline', a network not"
            )
        if self.model == "RSF_ClinRNA":
            raise UserError(f"candidate {self.name}: RSF_ClinRNA cannot be held by a bundle")
        if self.method != "baseline":
            check_model_name(self.model)

    def train_config(self, base: TrainConfig) -> TrainConfig:
        from dataclasses import asdict

        return TrainConfig.from_overrides({**asdict(base), **self.config, "model": self.model})

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "config": dict(self.config), "method": self.method}


# The small-cohort recipe (configs/small-cohort.json), written once here for the default list.
SMALL_COHORT = {
    "rna_log1p": True,
    "rna_top_genes": 2048,
    "rna_pca": 32,
    "batch_size": 64,
    "max_epochs": 60,
    "early_stopping": False,
    "val_fraction": 0.0,
    "lr": 1e-3,
    "weight_decay": 1e-2,
    "dropout": 0.5,
}
DEFAULT_CANDIDATES = (
    Candidate("CoxNet_ClinRNA", "CoxNet_ClinRNA", {"rna_log1p": True, "rna_top_genes": 2048}, "baseline"),
    Candidate(
        "CoxNet_ClinRNAHist", "CoxNet_ClinRNAHist", {"rna_log1p": True, "rna_top_genes": 2048}, "baseline"
    ),
    Candidate("ABMIL_Surv_PG-small", "ABMIL_Surv_PG", SMALL_COHORT),
    Candidate("ABMIL_Surv_PG-small-residual", "ABMIL_Surv_PG", {**SMALL_COHORT, "offset": "coxnet"}),
)


def read_candidates(path: str | os.PathLike | None) -> list[Candidate]:
    """The candidates of a JSON/YAML file (a list of ``{name, model, config, method}``), or the
    default list; names must be distinct."""
    if path is None:
        return list(DEFAULT_CANDIDATES)
    raw = read_structured(path, "candidates")
    if not isinstance(raw, list) or not raw:
        raise UserError(f"candidates {path}: expected a non-empty list of {{name, model, config, method}}")
    out = []
    for k, entry in enumerate(raw):
        if not isinstance(entry, dict) or not {"name", "model"} <= set(entry) or set(entry) - {
            "name", "model", "config", "method"
        }:  # fmt: skip
            raise UserError(
                f"candidates {path}: entry {k} must have name, model and optionally config, method"
            )
        method = entry.get("method") or ("baseline" if _is_baseline(str(entry["model"])) else "single")
        out.append(
            Candidate(str(entry["name"]), str(entry["model"]), dict(entry.get("config") or {}), method)
        )
    if len({c.name for c in out}) != len(out):
        raise UserError(f"candidates {path}: names must be distinct")
    return out


def _is_baseline(name: str) -> bool:
    from survfusion.training.baselines import is_baseline

    return is_baseline(name)


def fit_candidate(
    data: CohortData,
    base: TrainConfig,
    cand: Candidate,
    train_idx: np.ndarray,
    out: Path,
    *,
    device: str = "cpu",
    cohort_dir=None,
) -> Bundle:
    """``cand`` fitted on the patients ``train_idx`` alone, as a bundle (written under ``out`` for
    a network; a linear baseline is held in memory)."""
    from survfusion.serving.bundle_io import load_bundle

    cfg = cand.train_config(base)
    train_idx = np.sort(np.asarray(train_idx))
    if cand.method == "baseline":
        from survfusion.training.baselines import linear_bundle

        return linear_bundle(data, cfg, train_idx)[0]
    if cand.method == "ensemble":
        from survfusion.training.ensemble import DEFAULT_FOLDS, run_ensemble

        run_ensemble(
            data,
            cfg,
            out,
            folds=DEFAULT_FOLDS,
            pool=train_idx,
            cohort_dir=cohort_dir,
            device=device,
            progress=False,
        )
        return load_bundle(out / "bundle")
    from survfusion.training.train import run_training

    tr, va = stratified_split(strata_of(data)[train_idx], val_fraction=cfg.val_fraction, seed=cfg.seed)
    run_training(
        data, cfg, out, cohort_dir=cohort_dir, train_idx=train_idx[tr], val_idx=train_idx[va], device=device,
        progress=False,
    )  # fmt: skip
    return load_bundle(out / "bundle")


def risks_of(bundle: Bundle, data: CohortData, idx: np.ndarray) -> np.ndarray:
    from survfusion.training.evaluate import cohort_risks

    return cohort_risks(bundle, data, idx)[0]


@dataclass
class Selection:
    """What ``select`` decided: each candidate's inner C-index per fold, the winner, and why."""

    candidates: list[Candidate]
    inner_c_index: dict[str, list[float]]
    winner: str
    seconds: dict[str, float]

    def mean(self, name: str) -> float:
        return float(np.mean(self.inner_c_index[name]))

    def _row(self, c: Candidate) -> dict:
        per_fold = self.inner_c_index[c.name]
        return {
            **c.to_dict(),
            "inner_c_index": self.mean(c.name),
            "per_fold": per_fold,
            "fit_seconds": self.seconds[c.name],
        }

    def to_dict(self) -> dict:
        ranked = sorted(self.candidates, key=lambda c: -self.mean(c.name))
        return {
            "winner": self.winner,
            "why": f"highest mean inner C-index over {INNER_FOLDS} folds ({self.mean(self.winner):.3f}); "
            "optimistic as the reason for a choice, never a test score",
            "inner_folds": INNER_FOLDS,
            "candidates": [self._row(c) for c in ranked],
        }


def select(
    data: CohortData,
    base: TrainConfig,
    candidates: list[Candidate],
    patients: np.ndarray,
    *,
    device: str = "cpu",
    cohort_dir=None,
    log=None,
) -> Selection:
    """Inner cross-validation over ``candidates`` on ``patients`` only (module docstring)."""
    patients = np.sort(np.asarray(patients))
    fold_of = stratified_folds(strata_of(data)[patients], k=INNER_FOLDS, seed=20_000 + base.seed)
    scores: dict[str, list[float]] = {c.name: [] for c in candidates}
    seconds = dict.fromkeys(scores, 0.0)
    scratch = Path(tempfile.mkdtemp(prefix="survfusion-select-"))
    try:
        for k in range(INNER_FOLDS):
            tr, te = patients[fold_of != k], patients[fold_of == k]
            for c in candidates:
                t0 = time.perf_counter()
                bundle = fit_candidate(
                    data, base, c, tr, scratch / f"{c.name}-{k}", device=device, cohort_dir=cohort_dir
                )
                c_index = concordance_index(data.time_months[te], data.event[te], risks_of(bundle, data, te))
                scores[c.name].append(float(c_index) if np.isfinite(c_index) else 0.5)
                seconds[c.name] += time.perf_counter() - t0
                if log:
                    log(f"select: inner fold {k} {c.name} C {scores[c.name][-1]:.3f}")
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    winner = max(candidates, key=lambda c: (float(np.mean(scores[c.name])), -candidates.index(c))).name
    return Selection(list(candidates), scores, winner, seconds)


def candidate(candidates: list[Candidate], name: str) -> Candidate:
    return next(c for c in candidates if c.name == name)


def with_selection(bundle: Bundle, selection: Selection) -> Bundle:
    """The winner's bundle, recording the whole selection (every candidate's inner score, why it won)."""
    return replace(bundle, metrics={**bundle.metrics, "selection": selection.to_dict()})


def train_auto(
    data: CohortData,
    base: TrainConfig,
    candidates: list[Candidate],
    out: str | os.PathLike,
    *,
    device: str = "cpu",
    cohort_dir=None,
    log=None,
) -> Selection:
    """``train --model auto``: the selection over every patient, the winner fitted on all of them
    and bundled with the whole selection recorded (``metrics.selection``; also ``selection.json``)."""
    from survfusion.fileio import write_json
    from survfusion.serving.bundle_io import save_bundle

    out = Path(out)
    everyone = np.arange(len(data))
    sel = select(data, base, candidates, everyone, device=device, cohort_dir=cohort_dir, log=log)
    fit_dir = out / "winner"
    bundle = fit_candidate(
        data, base, candidate(candidates, sel.winner), everyone, fit_dir, device=device, cohort_dir=cohort_dir
    )
    out.mkdir(parents=True, exist_ok=True)
    save_bundle(with_selection(bundle, sel), out / "bundle")
    shutil.rmtree(fit_dir / "bundle", ignore_errors=True)  # the winner's own run records stay
    write_json(out / "selection.json", sel.to_dict())
    return sel
