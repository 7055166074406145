"""Training: the paper's recipe by default, every setting overridable, everything written down.

Recipe (docs/DESIGN.md, "Training"): Cox partial likelihood, Adam, batch size 2, at most 200
epochs, early stopping with patience 30 on the validation C-index, keep the best epoch; an 85:15
patient split stratified by cohort (3A/3B) and event. The calibration is fitted on the training
risks of the best epoch.

A run folder holds: ``config.json`` (resolved), ``split.json``, ``history.csv`` (per epoch: train
and validation loss and C-index), ``metrics.json`` and ``bundle/`` (see ``survfusion.serving.bundle``).
"""

from __future__ import annotations

import copy
import csv
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from survfusion.errors import UserError
from survfusion.features.device import resolve_device
from survfusion.fileio import write_json
from survfusion.nets.calibration import RiskToTime
from survfusion.nets.discrete import DiscreteBins, discrete_time_nll
from survfusion.nets.models import batched_risks, build_model, count_parameters, mean_embeddings, pad_bags
from survfusion.nets.survival import concordance_index, cox_loss
from survfusion.progress import progress as progress_bar
from survfusion.serving.bundle import Bundle, Member
from survfusion.serving.bundle_io import save_bundle
from survfusion.training.config import SELECTED_NOTE, TrainConfig
from survfusion.training.dataset import CohortData, read_oracle, strata_of, stratified_split
from survfusion.training.design import InputDesign

__all__ = ["SELECTED_NOTE", "TrainConfig", "Trainer", "run_training"]


class Trainer:
    """One model on one split: fit, early-stop, calibrate, bundle."""

    def __init__(
        self,
        data: CohortData,
        cfg: TrainConfig,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        device: str = "cpu",
        offset: np.ndarray | None = None,
    ) -> None:
        """``offset`` (N,): a fixed risk added to the model's for every patient (``offset:
        coxnet``: the pool's elastic net, so the network learns only what it misses)."""
        self.data, self.cfg, self.device = data, cfg, resolve_device(device)
        self.train_idx, self.val_idx = train_idx, val_idx
        self.offset = None if offset is None else torch.as_tensor(offset, dtype=torch.float32)
        # every input statistic from the training patients only (survfusion.training.design)
        self.design = InputDesign.from_config(cfg).fit(data, train_idx)
        self.clinical, self.rna = self.design.clinical_, self.design.rna_
        self.clin_x = torch.from_numpy(self.design.clinical(data))
        self.rna_x = torch.from_numpy(self.design.rna(data))
        self.time = torch.tensor(data.time_months, dtype=torch.float32)
        self.event = torch.tensor(data.event)
        torch.manual_seed(cfg.seed)
        self.model = build_model(
            cfg.model,
            feat_dim=data.bags[0].shape[1],
            rna_dim=self.rna.dim,
            clinical_dim=self.clinical.dim,
            rank=cfg.rank,
            dropout=cfg.dropout,
        )
        if cfg.init == "xavier_normal":
            xavier_normal_init(self.model)
        self.model = self.model.to(self.device)
        params: list[dict] = [{"params": list(self.model.parameters())}]
        if cfg.loss == "nll":  # the bins' hazard offsets: trained with the model, not bundled
            t, e = data.time_months[train_idx], data.event[train_idx]
            self.bins = DiscreteBins.fit(t, e, cfg.nll_bins)
            self.bin_of = torch.from_numpy(self.bins.index(data.time_months))
            init = torch.tensor(self.bins.initial_offsets(t, e), dtype=torch.float32, device=self.device)
            self.bin_offsets = torch.nn.Parameter(init)
            params.append({"params": [self.bin_offsets], "weight_decay": 0.0})
        self.opt = torch.optim.Adam(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused_adam or None
        )
        self.rng = np.random.default_rng(cfg.seed)
        self.last_epoch: dict = {}

    def _inputs(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The model's inputs for patients ``idx`` on the device: features, clinical, rna, mask."""
        feats, mask = pad_bags([self.data.bags[i] for i in idx])
        dev = self.device
        return feats.to(dev), self.clin_x[idx].to(dev), self.rna_x[idx].to(dev), mask.to(dev)

    def _forward(self, idx: np.ndarray) -> torch.Tensor:
        risk = self.model(*self._inputs(idx))
        return risk if self.offset is None else risk + self.offset[idx].to(risk.device)

    def predict(self, idx: np.ndarray) -> np.ndarray:
        """Risks of patients ``idx`` (eval mode), the offset included."""
        bags = [self.data.bags[i] for i in idx]
        risk = batched_risks(
            self.model, bags, self.clin_x[idx], self.rna_x[idx], batch_size=self.cfg.eval_batch_size
        )
        return risk if self.offset is None else risk + self.offset[idx].double().numpy()

    def loss(self, risk: torch.Tensor, batch: np.ndarray) -> torch.Tensor:
        """The training loss of ``batch``: the Cox partial likelihood, or the discrete-time one."""
        event = self.event[batch].to(self.device)
        if self.cfg.loss == "nll":
            return discrete_time_nll(
                risk, self.bin_offsets, self.bin_of[batch].to(self.device), event, alpha=self.cfg.nll_alpha
            )
        return cox_loss(risk, self.time[batch].to(self.device), event, ties=self.cfg.ties)

    def epoch_order(self) -> np.ndarray:
        """The training patients of one epoch, in order: a permutation (``shuffle``), or as many draws
        with replacement where each patient weighs 1 / (patients with its event status), so events
        and censored cases each make half of every epoch on average (``event_balanced``, the
        reference code's WeightedRandomSampler)."""
        if self.cfg.sampler == "shuffle":
            return self.rng.permutation(self.train_idx)
        events = self.data.event[self.train_idx]
        weight = np.where(events, 1.0 / max(events.sum(), 1), 1.0 / max((~events).sum(), 1))
        return self.rng.choice(
            self.train_idx, size=len(self.train_idx), replace=True, p=weight / weight.sum()
        )

    def train_epoch(self) -> None:
        self.model.train()
        order = self.epoch_order()
        for start in range(0, len(order), self.cfg.batch_size):
            batch = order[start : start + self.cfg.batch_size]
            loss = self.loss(self._forward(batch), batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def embedding_means(self) -> dict[str, np.ndarray]:
        """Mean of each modality's embedding over the training patients (eval mode): the stand-in
        for a modality that is missing at inference."""
        idx = self.train_idx
        return mean_embeddings(
            self.model, [self.data.bags[i] for i in idx], self.clin_x[idx], self.rna_x[idx],
            batch_size=self.cfg.eval_batch_size, device=self.device,
        )  # fmt: skip

    def _scores(self, idx: np.ndarray, risk: np.ndarray | None) -> tuple[float, float]:
        """(Cox loss, C-index) of ``risk`` on patients ``idx``; NaN for none."""
        if risk is None or len(idx) < 2:
            return float("nan"), float("nan")
        t, e = self.data.time_months[idx], self.data.event[idx]
        loss = cox_loss(torch.from_numpy(risk), torch.from_numpy(t), torch.from_numpy(e), ties=self.cfg.ties)
        return float(loss), concordance_index(t, e, risk)

    def fit(self, progress: bool = True) -> tuple[list[dict], int]:
        """Train with early stopping and restore the best epoch's weights, or (``early_stopping:
        false``) train exactly ``max_epochs`` and keep the last. Returns (history, kept epoch).
        Without early stopping the validation patients (if any) are only scored, every epoch, and
        the training patients only at the last epoch."""
        history, best_c, best_epoch, best_state, waited = [], -np.inf, 0, None, 0
        stopping = self.cfg.early_stopping
        bar = progress_bar(total=self.cfg.max_epochs, desc=self.cfg.model, unit="epoch", disable=not progress)
        for epoch in range(1, self.cfg.max_epochs + 1):
            t0 = time.perf_counter()
            self._train_epoch_or_explain(epoch)
            last = epoch == self.cfg.max_epochs
            tr_risk = self.predict(self.train_idx) if stopping or last else None
            va_risk = self.predict(self.val_idx)
            tr_loss, tr_c = self._scores(self.train_idx, tr_risk)
            va_loss, va_c = self._scores(self.val_idx, va_risk)
            # The last epoch's held-out risks, on its training scale: the unselected figure of
            # cross-validation (the best epoch's are chosen on the very patients they are scored on).
            if tr_risk is not None:
                self.last_epoch = {
                    "val_risk": va_risk,
                    "train_mean": tr_risk.mean(),
                    "train_sd": tr_risk.std(),
                }
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": tr_loss,
                    "train_c_index": tr_c,
                    "val_loss": va_loss,
                    "val_c_index": va_c,
                    "seconds": time.perf_counter() - t0,
                }
            )
            bar.update()
            if not stopping:
                continue
            better = va_c > best_c or (self.cfg.tie_break == "later" and va_c == best_c)
            if better:
                best_c, best_epoch, waited = va_c, epoch, 0
                best_state = copy.deepcopy(self.model.state_dict())
            else:
                waited += 1
            bar.set_postfix(train_c=f"{tr_c:.3f}", val_c=f"{va_c:.3f}", best=f"{best_c:.3f}@{best_epoch}")
            if waited >= self.cfg.patience and epoch >= self.cfg.min_epochs:
                break
        bar.close()
        if not stopping:
            return history, len(history)
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return history, best_epoch

    def _train_epoch_or_explain(self, epoch: int) -> None:
        try:
            self.train_epoch()
        except FloatingPointError:
            peak = float(self.rna_x.abs().max())
            hint = (
                f"; the RNA inputs reach {peak:.3g} (raw DESeq2 values, the paper's setting): "
                "set rna_log1p: true in --config"
                if not self.cfg.rna_log1p and peak > 1e3
                else ""
            )
            raise UserError(f"training diverged in epoch {epoch}: non-finite risks{hint}") from None


def xavier_normal_init(model: torch.nn.Module) -> None:
    """Xavier-normal weights and zero biases for every Linear layer (the reference code's init)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)


def run_training(
    data: CohortData,
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    cohort_dir: str | os.PathLike,
    train_idx: np.ndarray | None = None,
    val_idx: np.ndarray | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Train one model, write the run folder, return its metrics. Without early stopping the
    validation patients (``val_fraction``, may be 0) are only scored; with ``inner_cv_epochs`` the
    epoch count is chosen by inner folds of the training patients first, and with ``offset:
    coxnet`` the network is a residual on the training patients' elastic net
    (``survfusion.training.recipe``)."""
    from survfusion.training.recipe import epochs_by_inner_cv, residual_offset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if train_idx is None or val_idx is None:
        train_idx, val_idx = stratified_split(strata_of(data), val_fraction=cfg.val_fraction, seed=cfg.seed)
    if not data.event[train_idx].any() or (cfg.early_stopping and not data.event[val_idx].any()):
        raise UserError("split: training and validation both need at least one event")
    t0 = time.perf_counter()
    chosen: dict = {}
    if cfg.inner_cv_epochs:
        epochs, chosen = epochs_by_inner_cv(data, cfg, train_idx, trainer=Trainer, device=device)
        cfg = replace(cfg, max_epochs=epochs)
    offset, linear = residual_offset(data, cfg, train_idx) if cfg.offset == "coxnet" else (None, None)
    trainer = Trainer(data, cfg, train_idx, val_idx, device=device, offset=offset)
    history, best_epoch = trainer.fit(progress=progress)
    train_risk, val_risk = trainer.predict(train_idx), trainer.predict(val_idx)
    calibration = RiskToTime().fit(
        train_risk, data.time_months[train_idx], data.event[train_idx], mode=cfg.calibration
    )
    metrics = {
        "model": cfg.model,
        "seed": cfg.seed,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        # The held-out C-index (of risks) of the last epoch, not chosen on the held-out patients.
        "val_c_index_last_epoch": history[-1]["val_c_index"],
        **_split_scores(
            data,
            None if cohort_dir is None else Path(cohort_dir),
            train_idx,
            val_idx,
            train_risk,
            val_risk,
            calibration,
        ),
        "seconds": time.perf_counter() - t0,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
        "parameters": count_parameters(trainer.model),
        "rna_genes": trainer.rna.dim,
        **({"epochs_by_inner_cv": chosen} if chosen else {}),
    }
    # without validation patients there is no validation figure: None, never NaN in a JSON file
    metrics = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in metrics.items()}
    _write_run(out, trainer, history, metrics, calibration, train_risk, linear)
    return metrics


def _split_scores(
    data, cohort_dir: Path | None, train_idx, val_idx, train_risk, val_risk, calibration
) -> dict:
    """C-index on the training and held-out patients (held-out: of the predicted months, the
    challenge's score, and of the risks), and the oracle's on the same held-out patients."""
    t_val, e_val = data.time_months[val_idx], data.event[val_idx]
    scores = {
        "train_c_index": concordance_index(data.time_months[train_idx], data.event[train_idx], train_risk),
        "val_c_index": concordance_index(t_val, e_val, -calibration.predict(val_risk)),
        "val_c_index_risk": concordance_index(t_val, e_val, val_risk),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "val_events": int(e_val.sum()),
    }
    oracle = read_oracle(cohort_dir, data.case_ids) if cohort_dir is not None else None
    if oracle is not None and np.isfinite(oracle[val_idx]).all():
        scores["oracle_val_c_index"] = concordance_index(t_val, e_val, oracle[val_idx])
    return scores


def write_records(out: Path, trainer: Trainer, history: list[dict], metrics: dict) -> dict:
    """config.json, split.json, metrics.json and history.csv of one trained model; returns the split."""
    data = trainer.data
    split = {
        "train": [data.case_ids[i] for i in trainer.train_idx],
        "val": [data.case_ids[i] for i in trainer.val_idx],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(trainer.cfg))
    write_json(out / "split.json", split)
    write_json(out / "metrics.json", metrics)
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    return split


def _write_run(
    out: Path, trainer: Trainer, history: list[dict], metrics: dict, calibration, train_risk: np.ndarray,
    linear: Member | None = None,
) -> None:  # fmt: skip
    """The run's records (``write_records``) and its bundle: one member (on the scale of
    ``train_risk``, the best epoch's training risks), or with ``linear`` (a residual) the linear
    member and the network, their risks added."""
    data, cfg = trainer.data, trainer.cfg
    split = write_records(out, trainer, history, metrics)
    member = Member(
        trainer.model, trainer.clinical, trainer.rna, trainer.embedding_means(),
        float(train_risk.mean()), float(train_risk.std()) or 1.0,  # one member needs no common scale
    )  # fmt: skip
    bundle = Bundle(
        cfg.model, [member] if linear is None else [linear, member], calibration,
        {**asdict(cfg), "split": split}, metrics, data.feature_request,
        combination="mean" if linear is None else "sum",
    )  # fmt: skip
    save_bundle(bundle, out / "bundle")
