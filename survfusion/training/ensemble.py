"""Cross-validated ensembles: ``train --folds K --ensemble [--seeds S]``.

The training patients (``pool``: the whole cohort, or what an outer protocol leaves for training)
are dealt into ``K`` folds stratified by cohort and event. Member ``(s, k)`` is trained on the other
``K - 1`` folds with seed ``seed + s`` and early-stopped on fold ``k``; with ``S`` seeds the folds are
dealt again for each seed, so there are ``K * S`` members.

Every pool patient is held out by exactly one member per seed. Its **out-of-fold risk** is that
member's risk, standardised on the member's training risks, averaged over the seeds and put on the
members' mean scale: the bundle's formula (``survfusion.serving.bundle``) with the members that never saw the
patient. The calibration (risk -> months) is fitted on these out-of-fold risks and the pool's
outcomes, never on risks of patients a member trained on.

The out-of-fold C-index is **optimistic**: each member's epoch was chosen on the fold it then
predicts. Beside it the run reports the same figure at each member's last epoch (not chosen on its
fold). Neither replaces a test set the ensemble never saw (``survfusion.training.protocol``).

A run folder holds ``config.json``, ``metrics.json``, ``oof.csv`` (per pool patient: fold of each
seed, out-of-fold risk and months), ``members/seed<S>-fold<K>/`` (each member's history, split and
metrics) and ``bundle/`` (all members, one calibration).
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from survfusion.errors import UserError
from survfusion.fileio import write_json
from survfusion.nets.calibration import RiskToTime
from survfusion.nets.survival import concordance_bootstrap, concordance_index
from survfusion.progress import progress as progress_bar
from survfusion.serving.bundle import Bundle, Member, on_common_scale
from survfusion.serving.bundle_io import save_bundle
from survfusion.training.dataset import CohortData, read_oracle, strata_of, stratified_folds
from survfusion.training.train import TrainConfig, Trainer, write_records

DEFAULT_FOLDS = 5
OOF_NOTE = (
    "optimistic: each member's epoch was chosen on the fold it predicts; the last-epoch figure was "
    "not chosen on it; neither is a test set"
)


def _check_folds(data: CohortData, pool: np.ndarray, folds: int) -> None:
    events = int(data.event[pool].sum())
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if events < folds or len(pool) - events < 1:
        raise UserError(
            f"ensemble: {folds} folds need at least {folds} events among the {len(pool)} training "
            f"patients (one per held-out fold), found {events}"
        )


def run_ensemble(
    data: CohortData,
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    folds: int = DEFAULT_FOLDS,
    seeds: int = 1,
    pool: np.ndarray | None = None,
    cohort_dir: str | os.PathLike,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Train the ``folds * seeds`` members on ``pool`` (default: every patient), calibrate on their
    out-of-fold risks, write the run folder; return its metrics."""
    out = Path(out)
    pool = np.arange(len(data)) if pool is None else np.sort(np.asarray(pool))
    _check_folds(data, pool, folds)
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    t0 = time.perf_counter()
    strata = strata_of(data)[pool]
    members: list[Member] = []
    fold_table = np.zeros((seeds, len(pool)), dtype=np.int64)
    oof_z = np.zeros((seeds, len(pool)))  # standardised out-of-fold risk, per seed
    oof_z_last = np.zeros((seeds, len(pool)))  # the same at each member's last epoch
    member_metrics = []
    bar = progress_bar(total=folds * seeds, desc="ensemble", unit="member", disable=not progress)
    for s in range(seeds):
        member_cfg = replace(cfg, seed=cfg.seed + s)
        fold_table[s] = stratified_folds(strata, k=folds, seed=member_cfg.seed)
        for k in range(folds):
            held = fold_table[s] == k
            train_idx, val_idx = pool[~held], pool[held]
            if not data.event[val_idx].any():
                raise UserError(
                    f"ensemble: fold {k} (seed {member_cfg.seed}) holds out no event, so it cannot "
                    "early-stop; use fewer folds"
                )
            trainer = Trainer(data, member_cfg, train_idx, val_idx, device=device)
            history, best_epoch = trainer.fit(progress=False)
            train_risk, val_risk = trainer.predict(train_idx), trainer.predict(val_idx)
            mu, sd = float(train_risk.mean()), float(train_risk.std())
            info = {"seed": member_cfg.seed, "fold": k, "best_epoch": best_epoch}
            member = Member(
                trainer.model, trainer.clinical, trainer.rna, trainer.embedding_means(), mu, sd, info
            )
            oof_z[s, held] = (val_risk - mu) / sd
            last = trainer.last_epoch
            oof_z_last[s, held] = (last["val_risk"] - last["train_mean"]) / max(last["train_sd"], 1e-12)
            t, e = data.time_months[val_idx], data.event[val_idx]
            metrics = {
                **info,
                "epochs_run": len(history),
                "val_c_index_risk": concordance_index(t, e, val_risk),
                "val_c_index_last_epoch": history[-1]["val_c_index"],
                "risk_mean": mu,
                "risk_sd": sd,
                "seconds": float(sum(h["seconds"] for h in history)),
            }
            write_records(out / "members" / f"seed{member_cfg.seed}-fold{k}", trainer, history, metrics)
            member_metrics.append(metrics)
            trainer.model.to("cpu")
            members.append(member)
            bar.set_postfix(fold_c=f"{metrics['val_c_index_risk']:.3f}", best=best_epoch)
            bar.update()
    bar.close()
    # The bundle's formula with, for each patient, only the members that held it out (one per seed).
    means, sds = [m.risk_mean for m in members], [m.risk_sd for m in members]
    oof_risk = on_common_scale(oof_z.mean(axis=0), means, sds)
    t, e = data.time_months[pool], data.event[pool]
    calibration = RiskToTime().fit(oof_risk, t, e, mode=cfg.calibration)
    oof_months = calibration.predict(oof_risk)
    ci = concordance_bootstrap(t, e, -oof_months, n_boot=1000, seed=0)
    seconds = time.perf_counter() - t0
    metrics = {
        "model": cfg.model,
        "ensemble": True,
        "seed": cfg.seed,
        "folds": folds,
        "seeds": seeds,
        "members": len(members),
        "n_train": len(pool),
        "train_events": int(e.sum()),
        "oof_c_index": ci.estimate,
        "oof_c_index_ci95": [ci.low, ci.high],
        "oof_c_index_risk": concordance_index(t, e, oof_risk),
        "oof_c_index_last_epoch": concordance_index(t, e, oof_z_last.mean(axis=0)),
        "oof_note": OOF_NOTE,
        "member_val_c_index_mean": float(np.mean([m["val_c_index_risk"] for m in member_metrics])),
        "best_epochs": [m["best_epoch"] for m in member_metrics],
        "epochs_run": int(sum(m["epochs_run"] for m in member_metrics)),
        "seconds": seconds,
        "seconds_per_member": seconds / len(members),
        "rna_genes": members[0].rna.dim,
    }
    oracle = read_oracle(Path(cohort_dir), data.case_ids) if cohort_dir is not None else None
    if oracle is not None and np.isfinite(oracle[pool]).all():
        metrics["oracle_oof_c_index"] = concordance_index(t, e, oracle[pool])
    _write_oof(out / "oof.csv", data, pool, fold_table, oof_risk, oof_months)
    config = {
        **asdict(cfg),
        "ensemble": {"folds": folds, "seeds": seeds},
        "split": {"train": [data.case_ids[i] for i in pool], "val": []},
    }
    request = data.feature_request
    write_json(out / "config.json", {**config, "features": request and request.to_dict()})
    write_json(out / "metrics.json", metrics)
    save_bundle(Bundle(cfg.model, members, calibration, config, metrics, request), out / "bundle")
    return metrics


def _write_oof(path: Path, data: CohortData, pool, fold_table, risk, months) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        seeds = [f"fold_seed{s}" for s in range(len(fold_table))]
        w.writerow(["case_id", "cohort", "time_months", "event", *seeds, "oof_risk", "oof_months"])
        for j, i in enumerate(pool):
            row = [data.case_ids[i], data.cohort[i], data.time_months[i], int(data.event[i])]
            w.writerow([*row, *fold_table[:, j].tolist(), f"{risk[j]:.6f}", f"{months[j]:.3f}"])


def describe(metrics: dict) -> str:
    """The one line ``train`` prints for an ensemble run."""
    low, high = metrics["oof_c_index_ci95"]
    return (
        f"ensemble of {metrics['members']} members ({metrics['folds']} folds x {metrics['seeds']} "
        f"seed(s)); out-of-fold C-index {metrics['oof_c_index']:.3f} (95% CI {low:.3f}-{high:.3f}), "
        f"at each member's last epoch {metrics['oof_c_index_last_epoch']:.3f} [{OOF_NOTE}]; "
        f"{metrics['seconds']:.0f} s"
    )
