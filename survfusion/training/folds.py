"""``train --folds K`` without ``--ensemble``: K runs of one recipe, each validated on one fold."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from survfusion.fileio import write_json
from survfusion.training.config import SELECTED_NOTE, TrainConfig
from survfusion.training.dataset import CohortData, strata_of, stratified_folds
from survfusion.training.train import run_training


def run_cross_validation(
    data: CohortData,
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    folds: int,
    cohort_dir,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """``folds`` runs, one per held-out fold, in ``out/fold_<i>``; the summary in ``out/cv.json``."""
    fold_of = stratified_folds(strata_of(data), k=folds, seed=cfg.seed)
    results = []
    for k in range(folds):
        train_idx, val_idx = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        results.append(
            run_training(
                data,
                cfg,
                Path(out) / f"fold_{k}",
                cohort_dir=cohort_dir,
                train_idx=train_idx,
                val_idx=val_idx,
                device=device,
                progress=progress,
            )
        )
    c = np.array([r["val_c_index"] for r in results])
    last = np.array([r["val_c_index_last_epoch"] for r in results])
    summary = {
        "model": cfg.model,
        "folds": folds,
        "val_c_index_mean": float(c.mean()),
        "val_c_index_sd": float(c.std(ddof=1)),
        "val_c_index_last_epoch_mean": float(last.mean()),
        "val_c_index_last_epoch_sd": float(last.std(ddof=1)),
        "note": SELECTED_NOTE,
        "per_fold": results,
    }
    write_json(Path(out) / "cv.json", summary)
    return summary
