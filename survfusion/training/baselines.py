"""Classical baselines the deep models must beat, fitted by the libraries a statistician would use.

- ``CoxPH_Clin``: Cox proportional hazards on the 27-input clinical vector (lifelines'
  ``CoxPHFitter``, ridge penalty ``COXPH_PENALIZER``): the clinical-only bar.
- ``CoxNet_ClinRNA``: an elastic-net Cox model on clinical + RNA (scikit-survival's
  ``CoxnetSurvivalAnalysis``, l1_ratio 0.5), its penalty chosen by ``INNER_FOLDS``-fold cross-validation
  on the training patients (the C-index of the held-out fold): the classical multimodal bar.
- ``RSF_ClinRNA``: a random survival forest on clinical + RNA (scikit-survival): the non-linear bar.

Every input is fitted on the training patients only, exactly as the deep models' are: the clinical
encoder, the RNA genes (the ``rna_top_genes`` of highest training variance, ``rna_log1p``), and the
standardisation of each column. Each baseline's risk is mapped to months by the same ``RiskToTime``
calibration on its training risks, so its test row carries the challenge's score like any other.
lifelines and scikit-survival are imported here only, never on the deep models' inference path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from survfusion.errors import UserError
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer, reference_genes
from survfusion.training.dataset import CohortData

COXPH_PENALIZER = 0.1  # lifelines' ridge penalty: one-hot categories are collinear without it
COXNET_L1_RATIO = 0.5
INNER_FOLDS = 5
RSF_TREES = 200
RSF_MIN_LEAF = 5


@dataclass(frozen=True)
class Baseline:
    name: str
    inputs: str  # "clinical" or "clinical+rna"
    what: str


BASELINES = {
    b.name: b
    for b in (
        Baseline("CoxPH_Clin", "clinical", "lifelines CoxPHFitter (ridge) on the clinical vector"),
        Baseline("CoxNet_ClinRNA", "clinical+rna", "scikit-survival elastic-net Cox, penalty by inner CV"),
        Baseline("RSF_ClinRNA", "clinical+rna", "scikit-survival random survival forest"),
    )
}


def is_baseline(name: str) -> bool:
    return name in BASELINES


@dataclass
class Design:
    """The standardised inputs of a baseline and how they were made (all from the training patients):
    ``columns`` of the clinical vector, then ``genes`` of the RNA vector (``rna.genes``), each
    standardised by ``mean``/``sd``; a column constant in training is dropped."""

    x_train: np.ndarray
    x_test: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    clinical: ClinicalEncoder
    rna: RnaVectorizer
    clinical_columns: list[int]
    rna_columns: list[int]


def design(
    data: CohortData, train: np.ndarray, test: np.ndarray, inputs: str, *, top_genes: int | None, log1p: bool
) -> Design:
    """Standardised inputs of the ``train`` and ``test`` patients, every statistic from ``train``;
    columns constant among the training patients are dropped (lifelines cannot fit them)."""
    from survfusion.training.train import select_genes

    clinical = ClinicalEncoder.fit([data.clinical[i] for i in train])
    x_clin = np.stack([clinical.transform(r).values for r in data.clinical]).astype(np.float64)
    all_genes = reference_genes()
    raw, _ = data.rna_matrix(RnaVectorizer(all_genes))
    # a clinical-only model still carries one gene (weight 0): every bundle member has an RNA vector
    genes = select_genes(raw, all_genes, train, top_genes) if inputs == "clinical+rna" else all_genes[:1]
    position = {g: i for i, g in enumerate(all_genes)}
    rna = RnaVectorizer(genes, log1p=log1p).with_train_max(raw[train][:, [position[g] for g in genes]])
    x_rna = (
        data.rna_matrix(rna)[0].astype(np.float64) if inputs == "clinical+rna" else np.zeros((len(data), 0))
    )
    x = np.concatenate([x_clin, x_rna], axis=1)
    mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
    keep = np.flatnonzero(sd > 0)  # constant in training (a category no training patient has)
    x = (x[:, keep] - mean[keep]) / sd[keep]
    n_clin = clinical.dim
    return Design(
        x[train], x[test], mean[keep], sd[keep], clinical, rna,
        [int(k) for k in keep if k < n_clin], [int(k - n_clin) for k in keep if k >= n_clin],
    )  # fmt: skip


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


def coxnet_alpha(x: np.ndarray, time: np.ndarray, event: np.ndarray, *, seed: int) -> float:
    """The elastic-net penalty of highest mean held-out C-index over INNER_FOLDS folds, among the
    penalties of the path fitted on all training patients."""
    from sklearn.exceptions import FitFailedWarning
    from sklearn.model_selection import GridSearchCV, KFold
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    y = _structured(time, event)
    with warnings.catch_warnings():
        # expected, not news: the largest penalties of a path zero every coefficient, and on a small
        # pool an inner fold can hold no comparable pair (scored 0.5, ``error_score``)
        warnings.filterwarnings("ignore", message="all coefficients are zero")
        warnings.filterwarnings("ignore", category=FitFailedWarning)
        warnings.filterwarnings("ignore", message="Scoring failed")
        path = CoxnetSurvivalAnalysis(l1_ratio=COXNET_L1_RATIO, alpha_min_ratio=0.01, n_alphas=30).fit(x, y)
        search = GridSearchCV(
            CoxnetSurvivalAnalysis(l1_ratio=COXNET_L1_RATIO),
            {"alphas": [[a] for a in path.alphas_]},
            cv=KFold(INNER_FOLDS, shuffle=True, random_state=seed),
            error_score=0.5,  # a fold without a comparable pair scores chance, not a crash
        ).fit(x, y)
    return float(search.best_params_["alphas"][0])


def fit_coxnet(x: np.ndarray, time: np.ndarray, event: np.ndarray, *, seed: int):
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    alpha = coxnet_alpha(x, time, event, seed=seed)
    model = CoxnetSurvivalAnalysis(l1_ratio=COXNET_L1_RATIO, alphas=[alpha]).fit(x, _structured(time, event))
    return Fitted(model.predict, np.asarray(model.coef_).ravel())


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

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.risk(x), np.float64)


def fit_baseline(name: str, x: np.ndarray, time: np.ndarray, event: np.ndarray, *, seed: int = 0) -> Fitted:
    """Fit baseline ``name`` on ``x`` (patients x inputs) and outcomes."""
    if name == "CoxPH_Clin":
        return fit_coxph(x, time, event)
    if name == "CoxNet_ClinRNA":
        return fit_coxnet(x, time, event, seed=seed)
    if name == "RSF_ClinRNA":
        return fit_rsf(x, time, event, seed=seed)
    raise UserError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")


def run_baseline_training(data: CohortData, cfg, out, *, cohort_dir=None) -> dict:
    """``train --model CoxPH_Clin|CoxNet_ClinRNA``: fit on the paper's 85:15 split's training
    patients, score the validation patients (no epoch is chosen on them: an honest figure), and
    write a run folder whose bundle holds the fitted model as a ``LinearCox`` (its coefficients
    folded onto the raw inputs), so that ``package`` and the container serve it like any model."""
    from dataclasses import asdict
    from pathlib import Path

    import torch

    from survfusion.fileio import write_json
    from survfusion.nets.calibration import RiskToTime
    from survfusion.nets.linear import LinearCox
    from survfusion.nets.registry import ModelDims
    from survfusion.nets.survival import concordance_index
    from survfusion.serving.bundle import Bundle
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
    d = design(data, tr, va, spec.inputs, top_genes=cfg.rna_top_genes, log1p=cfg.rna_log1p)
    t, e = data.time_months, data.event
    fitted = fit_baseline(cfg.model, d.x_train, t[tr], e[tr], seed=cfg.seed)
    assert fitted.beta is not None  # a linear baseline
    feat_dim = int(data.bags[0].shape[1])
    dims = ModelDims(feat_dim=feat_dim, rna_dim=d.rna.dim, clinical_dim=d.clinical.dim)
    model = LinearCox(dims).from_standardised(fitted.beta, d.mean, d.sd, d.clinical_columns, d.rna_columns)
    model.eval()
    idx = np.concatenate([tr, va])
    clin = torch.from_numpy(np.stack([d.clinical.transform(data.clinical[i]).values for i in idx]))
    rna = torch.from_numpy(data.rna_matrix(d.rna, idx)[0])
    no_tiles = torch.zeros(len(idx), 1, feat_dim)  # the model does not look at the slide
    with torch.no_grad():
        emb = model.encode(no_tiles, clin.float(), rna.float(), torch.zeros(len(idx), 1, dtype=torch.bool))
        risk = model.fuse(emb).double().numpy()
    train_risk, val_risk = risk[: len(tr)], risk[len(tr) :]
    # the bundle's model is the library's model: the same risks, up to float32 arithmetic
    np.testing.assert_allclose(train_risk, fitted(d.x_train), rtol=1e-4, atol=1e-4)
    means = {k: v[: len(tr)].double().mean(0).numpy() for k, v in emb.as_dict().items()}
    calibration = RiskToTime().fit(train_risk, t[tr], e[tr], mode=cfg.calibration)
    metrics = {
        "model": cfg.model,
        "baseline": spec.what,
        "seed": cfg.seed,
        "n_train": len(tr),
        "n_val": len(va),
        "val_c_index": concordance_index(t[va], e[va], -calibration.predict(val_risk)),
        "val_c_index_risk": concordance_index(t[va], e[va], val_risk),
        "inputs": len(d.mean),
        "nonzero_coefficients": int(np.count_nonzero(fitted.beta)),
    }
    split = {"train": [data.case_ids[i] for i in tr], "val": [data.case_ids[i] for i in va]}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    write_json(out / "split.json", split)
    write_json(out / "metrics.json", metrics)
    bundle = Bundle.single(
        "LinearCox", model, d.clinical, d.rna, calibration,
        config={**asdict(cfg), "split": split, "baseline": cfg.model}, metrics=metrics,
        request=data.feature_request, embedding_means=means,
        risk_mean=float(train_risk.mean()), risk_sd=float(train_risk.std()) or 1.0,
    )  # fmt: skip
    save_bundle(bundle, out / "bundle")
    return metrics
