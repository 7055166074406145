"""The small-cohort recipe's two procedures that wrap a training run (its other options live in the
Trainer: the discrete-time loss, large batches, the RNA PCA, no early stopping):

- **An epoch count chosen by inner cross-validation** (``inner_cv_epochs: K``, with
  ``early_stopping: false``): the training patients are dealt into ``K`` folds; on each, the model
  trains ``max_epochs`` on the other folds and its held-out C-index is recorded at every epoch. The
  epoch of the best mean curve (smoothed over ``EPOCH_WINDOW`` epochs: one fold's curve is noisy at
  this size) is then trained on all the training patients, which keep their last epoch. No epoch is
  chosen on a patient that is then scored: early stopping on 23 validation patients does exactly
  that, and its chosen epoch is noise at this cohort size.
- **A residual on the elastic net** (``offset: coxnet``): ``CoxNet_ClinRNA`` is fitted on the
  training patients (its mixing and penalty by its own inner folds) and its risk becomes a fixed
  offset of the network's (``Trainer(offset=...)``), so the network learns only what the linear
  model misses; the bundle holds both and adds their risks (``Bundle.combination = "sum"``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from survfusion.serving.bundle import Member
from survfusion.training.config import TrainConfig
from survfusion.training.dataset import CohortData, strata_of, stratified_folds

EPOCH_WINDOW = 5  # epochs each side of a point of the mean held-out curve: a centred moving mean


def residual_offset(data: CohortData, cfg: TrainConfig, train_idx: np.ndarray) -> tuple[np.ndarray, Member]:
    """The elastic net of ``cfg``'s genes fitted on ``train_idx``: its risk for every patient (the
    offset) and the bundle member that serves it."""
    from survfusion.training.baselines import bundle_risks, linear_bundle

    linear_cfg = replace(cfg, model="CoxNet_ClinRNA", rna_pca=None, offset="none")
    bundle, _, info = linear_bundle(data, linear_cfg, train_idx)
    member = bundle.members[0]
    member.name, member.info = "LinearCox", {"offset": "CoxNet_ClinRNA", **info}
    return bundle_risks(bundle, data, np.arange(len(data))), member


def smoothed(curve: np.ndarray, window: int = EPOCH_WINDOW) -> np.ndarray:
    """The centred moving mean of ``curve`` over ``2 window + 1`` points (fewer at the ends)."""
    c = np.cumsum(np.concatenate([[0.0], curve]))
    lo = np.clip(np.arange(len(curve)) - window, 0, None)
    hi = np.clip(np.arange(len(curve)) + window + 1, None, len(curve))
    return (c[hi] - c[lo]) / (hi - lo)


def epochs_by_inner_cv(
    data: CohortData, cfg: TrainConfig, train_idx: np.ndarray, *, trainer, device: str = "cpu"
) -> tuple[int, dict]:
    """The epoch count of highest smoothed mean held-out C-index over ``cfg.inner_cv_epochs`` folds
    of ``train_idx`` (each fold trained ``max_epochs`` without early stopping; a tie keeps the
    earlier epoch); ``trainer`` is ``survfusion.training.train.Trainer`` (passed in: that module
    imports this one). Returns (epochs, a record of the curves)."""
    folds = stratified_folds(strata_of(data)[train_idx], k=cfg.inner_cv_epochs, seed=cfg.seed)
    inner = replace(cfg, early_stopping=False, inner_cv_epochs=0)
    curves = []
    for k in range(cfg.inner_cv_epochs):
        tr, va = train_idx[folds != k], train_idx[folds == k]
        offset = residual_offset(data, inner, tr)[0] if cfg.offset == "coxnet" else None
        history, _ = trainer(data, inner, tr, va, device=device, offset=offset).fit(progress=False)
        curve = np.array([h["val_c_index"] for h in history], np.float64)
        curves.append(np.where(np.isfinite(curve), curve, 0.5))  # a fold without a comparable pair
    mean = np.mean(curves, axis=0)
    smooth = smoothed(mean)
    epochs = int(np.argmax(smooth)) + 1
    record = {
        "inner_cv_folds": cfg.inner_cv_epochs,
        "epochs_chosen": epochs,
        "inner_c_index": float(smooth[epochs - 1]),
    }
    return epochs, {**record, "inner_curve": mean.round(4).tolist()}
