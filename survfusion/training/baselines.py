"""Classical baselines the deep models must beat, fitted by the libraries a statistician would use.

- ``CoxPH_Clin``: Cox proportional hazards on the 27-input clinical vector (lifelines'
  ``CoxPHFitter``, ridge penalty ``COXPH_PENALIZER``): the clinical-only bar.
- ``CoxNet_ClinRNA``: an elastic-net Cox model on clinical + RNA (scikit-survival's
  ``CoxnetSurvivalAnalysis``), its mixing (``COXNET_L1_RATIOS``, ridge-like to lasso-like) and its
  penalty chosen together by ``INNER_FOLDS``-fold cross-validation on the training patients (the
  mean C-index of the held-out folds; each inner fold fits each mixing's whole penalty path once,
  warm-started, ``coxnet_select``): the classical multimodal bar.
- ``CoxNet_ClinRNAHist``: the same on clinical + RNA + the slide's mean tile embedding reduced to
  ``HIST_PCA`` principal components fitted on the training patients: the bar a model that reads
  the slide must clear ("does attention-MIL earn its cost?").
- ``RSF_ClinRNA``: a random survival forest on clinical + RNA (scikit-survival): the non-linear bar.

Every input is fitted on the training patients only, exactly as the deep models' are, by the same
``survfusion.training.design.InputDesign``: the clinical encoder, the RNA genes (``rna_top_genes``
by ``rna_select``, ``rna_log1p``, ``rna_pca``), the slide projection, and the standardisation of
each column. Each baseline's risk is mapped to months by the same ``RiskToTime`` calibration on
its training risks, so its test row carries the challenge's score like any other. lifelines and
scikit-survival are imported here only, never on the deep models' inference path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from survfusion.errors import UserError
from survfusion.training.dataset import CohortData
from survfusion.training.design import InputDesign, LinearInputs

COXPH_PENALIZER = 0.1  # lifelines' ridge penalty: one-hot categories are collinear without it
# The elastic net's mixing, chosen with its penalty in the inner folds: 0.01 is all but ridge
# (scikit-survival's coordinate descent needs l1_ratio > 0), 0.95 all but the lasso.
COXNET_L1_RATIOS = (0.01, 0.5, 0.95)
COXNET_ALPHAS = 30  # penalties per path, from the smallest that zeroes every coefficient down 100-fold
COXNET_ALPHA_MIN_RATIO = 0.01
INNER_FOLDS = 5
HIST_PCA = 16  # principal components of the slide's mean tile embedding (CoxNet_ClinRNAHist)
RSF_TREES = 200
RSF_MIN_LEAF = 5


@dataclass(frozen=True)
class Baseline:
    name: str
    inputs: str  # "clinical", "clinical+rna" or "clinical+rna+hist"
    what: str


BASELINES = {
    b.name: b
    for b in (
        Baseline("CoxPH_Clin", "clinical", "lifelines CoxPHFitter (ridge) on the clinical vector"),
        Baseline(
            "CoxNet_ClinRNA",
            "clinical+rna",
            "scikit-survival elastic-net Cox, mixing and penalty by inner CV",
        ),
        Baseline(
            "CoxNet_ClinRNAHist",
            "clinical+rna+hist",
            f"elastic-net Cox on clinical + RNA + the slide's mean tile embedding ({HIST_PCA} PCs), "
            "mixing and penalty by inner CV",
        ),
        Baseline("RSF_ClinRNA", "clinical+rna", "scikit-survival random survival forest"),
    )
}


def is_baseline(name: str) -> bool:
    return name in BASELINES


def design(data: CohortData, pool: np.ndarray, inputs: str, *, cfg) -> LinearInputs:
    """A baseline's standardised inputs, every statistic fitted on ``pool`` (the clinical encoder,
    the genes of ``cfg``'s selection, the slide projection for ``...+hist``, each column's mean and
    sd; columns constant in the pool are dropped, lifelines cannot fit them)."""
    d = InputDesign.from_config(
        cfg, rna="rna" in inputs, hist_pca=HIST_PCA if "hist" in inputs else None
    ).fit(data, pool)
    return LinearInputs.fit(d, data, pool)


def _structured(time: np.ndarray, event: np.ndarray):
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event, bool), time=np.asarray(time, float))


def fit_coxph(x: np.ndarray, time: np.ndarray, event: np.ndarray):
    """lifelines' CoxPHFitter with COXPH_PENALIZER; returns a risk function (log partial hazard)."""
    import pandas as pd
    from lifelines import CoxPHFitter

    cols = [f"x{k}" for k in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=cols).assign(T=time, E=event.astype(int))
    cph = CoxPHFitter(penalizer=COXPH_PENALIZER).fit(frame, duration_col="T", event_col="E")
    risk = lambda z: cph.predict_log_partial_hazard(pd.DataFrame(z, columns=cols)).to_numpy()  # noqa: E731
    return Fitted(risk, cph.params_[cols].to_numpy())


def _path(x: np.ndarray, y, l1_ratio: float, alphas=None, penalty_factor=None):
    """One elastic-net path (coordinate descent, each penalty warm-started from the one before)."""
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    kw = {"alphas": alphas} if alphas is not None else {
        "n_alphas": COXNET_ALPHAS, "alpha_min_ratio": COXNET_ALPHA_MIN_RATIO
    }  # fmt: skip
    if penalty_factor is not None:
        kw["penalty_factor"] = penalty_factor
    return CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, **kw).fit(x, y)


def coxnet_select(
    x: np.ndarray, time: np.ndarray, event: np.ndarray, *, seed: int, penalty_factor=None
) -> dict:
    """The mixing and penalty of highest mean held-out C-index over INNER_FOLDS folds of the
    training patients. For each l1_ratio the path's penalties are those of the path on all
    training patients; each inner fold fits that path once (warm starts) and scores every penalty
    on its held-out patients. Returns ``l1_ratio``, ``alpha`` and the grid of inner scores."""
    from sklearn.model_selection import KFold

    from survfusion.nets.survival import concordance_index

    y = _structured(time, event)
    folds = list(KFold(INNER_FOLDS, shuffle=True, random_state=seed).split(x))
    grid = {}
    with warnings.catch_warnings():
        # expected, not news: the largest penalties of a path zero every coefficient
        warnings.filterwarnings("ignore", message="all coefficients are zero")
        for l1 in COXNET_L1_RATIOS:
            alphas = _path(x, y, l1, penalty_factor=penalty_factor).alphas_
            scores = np.full((len(folds), len(alphas)), 0.5)  # a fold without a comparable pair: chance
            for f, (tr, te) in enumerate(folds):
                model = _path(x[tr], y[tr], l1, alphas, penalty_factor)
                for a, alpha in enumerate(alphas):
                    c = concordance_index(time[te], event[te], model.predict(x[te], alpha=alpha))
                    scores[f, a] = c if np.isfinite(c) else 0.5
            grid[l1] = (alphas, scores.mean(axis=0))
    # the best mean score; a tie keeps the smaller l1_ratio, then the larger penalty (simpler)
    l1, a = max(
        ((l1, a) for l1, (alphas, m) in grid.items() for a in range(len(alphas))),
        key=lambda la: (grid[la[0]][1][la[1]], -COXNET_L1_RATIOS.index(la[0]), -la[1]),
    )
    return {
        "l1_ratio": l1,
        "alpha": float(grid[l1][0][a]),
        "inner_c_index": float(grid[l1][1][a]),
        "grid": {str(k): {"alphas": v[0].tolist(), "inner_c_index": v[1].tolist()} for k, v in grid.items()},
    }


def fit_coxnet(x: np.ndarray, time: np.ndarray, event: np.ndarray, *, seed: int, penalty_factor=None):
    """The elastic net at the inner folds' choice (``coxnet_select``), fitted on all of ``x``;
    ``penalty_factor``: scikit-survival's per-column factors (None: 1 each, what the baselines use;
    scripts/worlds_checks.py measures block factors)."""
    choice = coxnet_select(x, time, event, seed=seed, penalty_factor=penalty_factor)
    y = _structured(time, event)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="all coefficients are zero")
        path = _path(x, y, choice["l1_ratio"], penalty_factor=penalty_factor)
        alphas = np.append(path.alphas_[path.alphas_ > choice["alpha"]], choice["alpha"])
        model = _path(x, y, choice["l1_ratio"], alphas, penalty_factor)  # the path down to the chosen penalty
    alpha = choice["alpha"]
    # the coefficients predict() uses at this penalty (the path may stop before its last penalty,
    # and predict() then reads them off the path): predict(x) = x . coef - offset, so the rows of
    # the identity less the origin give them exactly; the risk drops the constant offset (a Cox
    # model's risk is defined up to one, and the bundle's linear model then equals it)
    origin = float(model.predict(np.zeros((1, x.shape[1])), alpha=alpha)[0])
    beta = np.asarray(model.predict(np.eye(x.shape[1]), alpha=alpha), np.float64) - origin
    choice.pop("grid")
    return Fitted(lambda z: model.predict(z, alpha=alpha) - origin, beta, choice)


def fit_rsf(x: np.ndarray, time: np.ndarray, event: np.ndarray, *, seed: int):
    from sksurv.ensemble import RandomSurvivalForest

    forest = RandomSurvivalForest(
        n_estimators=RSF_TREES, min_samples_leaf=RSF_MIN_LEAF, random_state=seed, n_jobs=1
    ).fit(x, _structured(time, event))
    return Fitted(forest.predict, None)


@dataclass(frozen=True)
class Fitted:
    """A fitted baseline: ``risk(x) -> (P,)`` (larger = earlier recurrence, like every model here)
    and, for a linear one, its coefficients on the standardised inputs (None for a forest)."""

    risk: Callable[[np.ndarray], np.ndarray]
    beta: np.ndarray | None
    info: dict | None = None  # what the inner folds chose (the elastic net's mixing and penalty)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.risk(x), np.float64)


def fit_baseline(name: str, x: np.ndarray, time: np.ndarray, event: np.ndarray, *, seed: int = 0) -> Fitted:
    """Fit baseline ``name`` on ``x`` (patients x inputs) and outcomes."""
    if name == "CoxPH_Clin":
        return fit_coxph(x, time, event)
    if name in ("CoxNet_ClinRNA", "CoxNet_ClinRNAHist"):
        return fit_coxnet(x, time, event, seed=seed)
    if name == "RSF_ClinRNA":
        return fit_rsf(x, time, event, seed=seed)
    raise UserError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")


def linear_model(fitted: Fitted, inputs: LinearInputs, feat_dim: int):
    """A fitted linear baseline as a ``LinearCox`` (``LinearCox_Hist`` when it reads the slide):
    its coefficients on the standardised design folded onto the raw inputs."""
    from survfusion.nets.linear import LinearCox, LinearCoxHist
    from survfusion.nets.registry import ModelDims

    assert fitted.beta is not None  # a linear baseline
    d = inputs.design
    dims = ModelDims(feat_dim=feat_dim, rna_dim=d.rna_.dim, clinical_dim=d.clinical_.dim)
    clin, rna, hist = inputs.split_columns()
    cls = LinearCoxHist if d.hist_ is not None else LinearCox
    model = cls(dims).from_standardised(fitted.beta, inputs.mean, inputs.sd, clin, rna, hist, d.hist_)
    return model.eval()


def run_baseline_training(data: CohortData, cfg, out, *, cohort_dir=None) -> dict:
    """``train --model CoxPH_Clin|CoxNet_ClinRNA|CoxNet_ClinRNAHist``: fit on the paper's 85:15
    split's training patients, score the validation patients (no epoch is chosen on them: an honest
    figure), and write a run folder whose bundle holds the fitted model as a ``LinearCox`` (its
    coefficients folded onto the raw inputs), so that ``package`` and the container serve it like
    any model."""
    from dataclasses import asdict
    from pathlib import Path

    from survfusion.fileio import write_json
    from survfusion.nets.survival import concordance_index
    from survfusion.serving.bundle_io import save_bundle
    from survfusion.training.dataset import strata_of, stratified_split

    spec = BASELINES[cfg.model]
    if cfg.model == "RSF_ClinRNA":
        raise UserError(
            "train: RSF_ClinRNA is a forest, which a bundle cannot hold; compare it with outer-test, or "
            "package CoxPH_Clin or CoxNet_ClinRNA"
        )
    out = Path(out)
    tr, va = stratified_split(strata_of(data), val_fraction=cfg.val_fraction, seed=cfg.seed)
    bundle, _, info = linear_bundle(data, cfg, tr)
    val_risk = bundle_risks(bundle, data, va)
    t, e = data.time_months, data.event
    metrics = {
        "model": cfg.model,
        "baseline": spec.what,
        "seed": cfg.seed,
        "n_train": len(tr),
        "n_val": len(va),
        "val_c_index": concordance_index(t[va], e[va], -bundle.months(val_risk)),
        "val_c_index_risk": concordance_index(t[va], e[va], val_risk),
        **info,
    }
    split = {"train": [data.case_ids[i] for i in tr], "val": [data.case_ids[i] for i in va]}
    bundle.metrics.update(metrics)
    bundle.config["split"] = split
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    write_json(out / "split.json", split)
    write_json(out / "metrics.json", metrics)
    save_bundle(bundle, out / "bundle")
    return metrics


def bundle_risks(bundle, data: CohortData, idx: np.ndarray) -> np.ndarray:
    from survfusion.training.evaluate import cohort_risks

    return cohort_risks(bundle, data, idx)[0]


def linear_bundle(data: CohortData, cfg, pool: np.ndarray):
    """Fit linear baseline ``cfg.model`` on ``pool`` and hold it in a one-member ``Bundle``,
    calibrated on its pool risks. Returns (bundle, pool risks, what the fit chose)."""
    from dataclasses import asdict

    import torch

    from survfusion.nets.calibration import RiskToTime
    from survfusion.nets.models import batched_risks, mean_embeddings
    from survfusion.serving.bundle import Bundle

    spec = BASELINES[cfg.model]
    inputs = design(data, pool, spec.inputs, cfg=cfg)
    t, e = data.time_months[pool], data.event[pool]
    fitted = fit_baseline(cfg.model, inputs.matrix(data, pool), t, e, seed=cfg.seed)
    model = linear_model(fitted, inputs, int(data.bags[0].shape[1]))
    d = inputs.design
    bags = [data.bags[i] for i in pool]
    clin, rna = torch.from_numpy(d.clinical(data, pool)), torch.from_numpy(d.rna(data, pool))
    risk = batched_risks(model, bags, clin, rna, batch_size=cfg.eval_batch_size)
    # the bundle's model is the library's model: the same risks, up to float32 arithmetic
    np.testing.assert_allclose(risk, fitted(inputs.matrix(data, pool)), rtol=1e-4, atol=1e-4)
    means = mean_embeddings(model, bags, clin, rna, batch_size=cfg.eval_batch_size)
    calibration = RiskToTime().fit(risk, t, e, mode=cfg.calibration)
    info = {
        "inputs": len(inputs.mean),
        "nonzero_coefficients": int(np.count_nonzero(np.asarray(fitted.beta))),
        **(fitted.info or {}),
    }
    bundle = Bundle.single(
        "LinearCox" if d.hist_ is None else "LinearCox_Hist", model, d.clinical_, d.rna_, calibration,
        config={**asdict(cfg), "baseline": cfg.model}, metrics=dict(info),
        request=data.feature_request, embedding_means=means,
        risk_mean=float(risk.mean()), risk_sd=float(risk.std()) or 1.0,
    )  # fmt: skip
    return bundle, risk, info
