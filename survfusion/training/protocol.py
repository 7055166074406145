"""The outer-test protocol: the paper's single split against the K-fold ensemble, judged on patients
that neither ever saw.

The cohort is dealt into ``O`` (>= 5) outer folds, stratified by cohort and event. For outer fold
``o`` its patients are the **test set**; the others (the *pool*) are all that training sees: gene
selection, the clinical encoder, the split or the folds, early stopping and the calibration. On the
pool, for each model:

- ``single``: the paper's recipe, one 85:15 split of the pool (``val_fraction``, ``seed``),
  calibrated on its training risks (``train.run_training``);
- ``ensemble``: ``K`` folds of the pool, calibrated on the out-of-fold risks (``ensemble.run_ensemble``);
- ``baseline``: a classical model named in ``--models`` (``survfusion.training.baselines``: Cox on
  the clinical table, elastic-net Cox and a random survival forest on clinical + RNA), its inputs
  fitted on the pool, its risks calibrated on its pool risks like ``single``.

Each (fold, model, method) is one *unit*: its run folder ``OUT/outer<o>/<model>-<method>/`` ends with
``test.csv`` (case, time, event, risk, predicted months); a unit with a ``test.csv`` is skipped, so a
protocol can be built over several sessions and in parallel processes (``--only``). ``report``
reads whatever units exist: per fold and method the test C-index of the predicted months (the
challenge's score) and of the risks, the median absolute error in months on the patients with an
event, the selection figure each method reported about itself, and per model the paired difference
ensemble - single with a bootstrap interval (patients resampled within each test set, the same draw
for both methods). Every deep method is compared so with the best baseline, and the report opens
with one sentence: which method scores highest and whether its interval against the strongest
method of the other kind excludes zero.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from survfusion.errors import UserError
from survfusion.fileio import read_json, write_json
from survfusion.nets.survival import concordance_index
from survfusion.serving.bundle_io import load_bundle
from survfusion.training.dataset import CohortData, strata_of, stratified_folds, stratified_split
from survfusion.training.ensemble import run_ensemble
from survfusion.training.train import TrainConfig, run_training

METHODS = ("single", "ensemble")  # of a deep model; a baseline has the one method "baseline"
MIN_OUTER = 5
TEST_FILE = "test.csv"


def outer_folds(data: CohortData, outer: int, seed: int) -> np.ndarray:
    """The outer fold (0..outer-1) of each patient: about ``1/outer`` of each stratum per fold."""
    if outer < MIN_OUTER:
        raise UserError(f"outer-test: at least {MIN_OUTER} outer test sets, got {outer}")
    # A seed of its own, so the outer deal never coincides with a fold deal of the training seed.
    return stratified_folds(strata_of(data), k=outer, seed=10_000 + seed)


def methods_of(model: str) -> tuple[str, ...]:
    from survfusion.training.baselines import is_baseline

    return ("baseline",) if is_baseline(model) else METHODS


def unit_dir(out: Path, fold: int, model: str, method: str) -> Path:
    return Path(out) / f"outer{fold}" / f"{model}-{method}"


def run_unit(
    data: CohortData,
    cfg: TrainConfig,
    out: Path,
    *,
    test: np.ndarray,
    method: str,
    folds: int,
    cohort_dir,
    device: str = "cpu",
    keep_bundle: bool = False,
) -> Path:
    """Train ``method`` on every patient outside ``test``, predict ``test``, write ``test.csv``."""
    pool = np.setdiff1d(np.arange(len(data)), test)
    t0 = time.perf_counter()
    if method == "baseline":
        return _run_baseline(data, cfg, out, pool=pool, test=test)
    if method == "single":
        tr, va = stratified_split(strata_of(data)[pool], val_fraction=cfg.val_fraction, seed=cfg.seed)
        metrics = run_training(
            data, cfg, out, cohort_dir=cohort_dir, train_idx=pool[tr], val_idx=pool[va], device=device,
            progress=False,
        )  # fmt: skip
        selection = metrics["val_c_index"]
    elif method == "ensemble":
        metrics = run_ensemble(
            data, cfg, out, folds=folds, pool=pool, cohort_dir=cohort_dir, device=device, progress=False
        )
        selection = metrics["oof_c_index"]
    else:
        raise UserError(f"outer-test: method must be one of {', '.join(METHODS)}, got {method!r}")
    train_seconds = time.perf_counter() - t0
    bundle = load_bundle(out / "bundle")
    t0 = time.perf_counter()
    from survfusion.training.evaluate import cohort_risks  # matplotlib: only once something is predicted

    risk = cohort_risks(bundle, data, test)[0]
    months = bundle.months(risk)
    info = {
        "method": method,
        "model": cfg.model,
        "members": len(bundle.members),
        "selection_c_index": selection,
        "train_seconds": train_seconds,
        "predict_seconds": time.perf_counter() - t0,
        "test_patients": len(test),
        "bundle_bytes": sum(p.stat().st_size for p in (out / "bundle").rglob("*") if p.is_file()),
    }
    if not keep_bundle:
        shutil.rmtree(out / "bundle")
    return _write_unit(out, data, test, risk, months, info)


def _run_baseline(
    data: CohortData, cfg: TrainConfig, out: Path, *, pool: np.ndarray, test: np.ndarray
) -> Path:
    """A classical baseline on the pool: its inputs and calibration fitted there, ``test`` predicted."""
    from survfusion.nets.calibration import RiskToTime
    from survfusion.training.baselines import BASELINES, design, fit_baseline

    spec = BASELINES[cfg.model]
    t0 = time.perf_counter()
    inputs = design(data, pool, spec.inputs, cfg=cfg)
    t, e = data.time_months[pool], data.event[pool]
    x_pool = inputs.matrix(data, pool)
    risk_of = fit_baseline(cfg.model, x_pool, t, e, seed=cfg.seed)
    pool_risk = risk_of(x_pool)
    calibration = RiskToTime().fit(pool_risk, t, e, mode=cfg.calibration)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    risk = risk_of(inputs.matrix(data, test))
    months = calibration.predict(risk)
    info = {
        "method": "baseline",
        "model": cfg.model,
        "members": 1,
        "selection_c_index": concordance_index(t, e, pool_risk),  # in-sample: what it reports of itself
        "train_seconds": train_seconds,
        "predict_seconds": time.perf_counter() - t0,
        "test_patients": len(test),
        "inputs": len(inputs.mean),
        "bundle_bytes": 0,  # not packaged by the protocol
        **(risk_of.info or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    return _write_unit(out, data, test, risk, months, info)


def _write_unit(out: Path, data: CohortData, test: np.ndarray, risk, months, info: dict) -> Path:
    """``unit.json`` and, last (a unit with ``test.csv`` is complete), ``test.csv``."""
    write_json(out / "unit.json", info)
    tmp = out / f".{TEST_FILE}"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "time_months", "event", "risk", "predicted_months"])
        for k, i in enumerate(test):
            row = [data.case_ids[i], data.time_months[i], int(data.event[i])]
            w.writerow([*row, repr(float(risk[k])), repr(float(months[k]))])
    tmp.rename(out / TEST_FILE)
    return out / TEST_FILE


def run_protocol(
    data: CohortData,
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    models: list[str],
    outer: int = MIN_OUTER,
    folds: int = 5,
    only: list[int] | None = None,
    methods: list[str] | None = None,
    cohort_dir,
    device: str = "cpu",
    log=print,
) -> None:
    """Every missing unit of the outer folds ``only`` (default all), in order; ``methods`` limits a
    deep model to some of ``METHODS`` (default both)."""
    out = Path(out)
    fold_of = outer_folds(data, outer, cfg.seed)
    config = asdict(cfg)
    config.pop("model")
    settings = {"outer": outer, "folds": folds, "config": config, "cases": data.case_ids}
    if (out / "protocol.json").is_file():  # units of other settings must never be mixed in one report
        before = read_json(out / "protocol.json", "protocol").value
        if not isinstance(before, dict):
            raise UserError(f"outer-test: {out / 'protocol.json'} is not a JSON object")
        if before != settings:
            changed = sorted(k for k in settings if before.get(k) != settings[k])
            raise UserError(f"outer-test: {out} holds a protocol with other settings ({', '.join(changed)})")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "protocol.json", settings)
    for o in only if only is not None else range(outer):
        if not 0 <= o < outer:
            raise UserError(f"outer-test: --only {o} is not an outer fold (0..{outer - 1})")
        test = np.flatnonzero(fold_of == o)
        for model in models:
            for method in methods_of(model):
                if methods is not None and method != "baseline" and method not in methods:
                    continue
                where = unit_dir(out, o, model, method)
                if (where / TEST_FILE).is_file():
                    continue
                t0 = time.perf_counter()
                run_unit(
                    data, replace(cfg, model=model), where, test=test, method=method,
                    folds=folds, cohort_dir=cohort_dir, device=device,
                )  # fmt: skip
                log(f"outer-test: fold {o} {model} {method} done in {time.perf_counter() - t0:.0f} s")
