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
  fitted on the pool, its risks calibrated on its pool risks like ``single``;
- ``candidate``: each candidate of the selection (``survfusion.training.selection``; the default
  list or ``--candidates FILE``) fitted on the whole pool, in ``OUT/outer<o>/candidate-<name>/``;
- ``auto``: the selection itself, inner cross-validation over the candidates on the pool alone, the
  winner refitted on the pool (its candidate unit: the same fit) and scored on the test set, so the
  outer score is the score of the whole procedure (nested cross-validation);
- ``blend``: every blendable candidate fitted on the pool and their risks averaged in one bundle
  (``survfusion.training.blend``): nothing chosen on patients, so no inner folds.

Where the cohort is synthetic, each ``test.csv`` also carries the noise-free planted log-hazard of
its patients (``oracle_risk``), so the report can put the best any model could do beside each method.

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
from survfusion.training.blend import BLEND, blend_members, fit_blend
from survfusion.training.dataset import (
    NOISE_FREE,
    CohortData,
    read_oracle,
    strata_of,
    stratified_folds,
    stratified_split,
)
from survfusion.training.ensemble import run_ensemble
from survfusion.training.selection import Candidate, candidate, fit_candidate, risks_of, select
from survfusion.training.train import TrainConfig, run_training

METHODS = ("single", "ensemble")  # of a deep model; a baseline has the one method "baseline"
AUTO = "auto"  # the selection over the candidates, with a "candidate" unit for each
MIN_OUTER = 5
TEST_FILE = "test.csv"


def outer_deal(strata: np.ndarray, outer: int, seed: int) -> np.ndarray:
    """The outer fold (0..outer-1) of each patient of ``strata`` (``dataset.strata``, in the
    cohort's case order): about ``1/outer`` of each stratum per fold."""
    if outer < MIN_OUTER:
        raise UserError(f"outer-test: at least {MIN_OUTER} outer test sets, got {outer}")
    # A seed of its own, so the outer deal never coincides with a fold deal of the training seed.
    return stratified_folds(strata, k=outer, seed=10_000 + seed)


def outer_folds(data: CohortData, outer: int, seed: int) -> np.ndarray:
    """``outer_deal`` of a cohort's patients."""
    return outer_deal(strata_of(data), outer, seed)


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
        return _run_baseline(data, cfg, out, pool=pool, test=test, cohort_dir=cohort_dir)
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
    return _write_unit(out, data, test, risk, months, info, cohort_dir)


def _run_baseline(
    data: CohortData, cfg: TrainConfig, out: Path, *, pool: np.ndarray, test: np.ndarray, cohort_dir
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
    return _write_unit(out, data, test, risk, months, info, cohort_dir)


def _pool_unit(data: CohortData, out: Path, test: np.ndarray, fit, describe, cohort_dir) -> Path:
    """A unit whose bundle ``fit(pool, fit_dir)`` is fitted on every patient outside ``test`` and
    scored on ``test``; ``describe(bundle)`` gives the fields that say what it is."""
    pool = np.setdiff1d(np.arange(len(data)), test)
    t0 = time.perf_counter()
    bundle = fit(pool, out / "fit")
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    risk = risks_of(bundle, data, test)
    months = bundle.months(risk)
    info = {
        **describe(bundle), "members": len(bundle.members), "train_seconds": train_seconds,
        "predict_seconds": time.perf_counter() - t0, "test_patients": len(test), "bundle_bytes": 0,
    }  # fmt: skip
    shutil.rmtree(out / "fit", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return _write_unit(out, data, test, risk, months, info, cohort_dir)


def run_candidate_unit(
    data: CohortData,
    cfg: TrainConfig,
    out: Path,
    *,
    test: np.ndarray,
    cand: Candidate,
    cohort_dir,
    device="cpu",
) -> Path:
    """Candidate ``cand`` fitted on every patient outside ``test`` (``selection.fit_candidate``)."""
    return _pool_unit(
        data, out, test,
        lambda pool, where: fit_candidate(data, cfg, cand, pool, where, device=device, cohort_dir=cohort_dir),
        lambda bundle: {
            "method": "candidate", "model": cand.name, "candidate": cand.to_dict(),
            "kind": "baseline" if cand.method == "baseline" else "deep",
            "selection_c_index": bundle.metrics.get("val_c_index"),  # None: it reported nothing of itself
        },
        cohort_dir,
    )  # fmt: skip


def run_auto_unit(
    data: CohortData,
    cfg: TrainConfig,
    out: Path,
    *,
    test: np.ndarray,
    candidates: list[Candidate],
    cohort_dir,
    device="cpu",
    log=None,
) -> Path:
    """The selection on every patient outside ``test``; the winner's fit on them predicts ``test``
    (its candidate unit beside this one when it exists: the same deterministic fit)."""
    pool = np.setdiff1d(np.arange(len(data)), test)
    t0 = time.perf_counter()
    choice = select(data, cfg, candidates, pool, device=device, cohort_dir=cohort_dir, log=log)
    winner = out.parent / f"candidate-{choice.winner}"
    if not (winner / TEST_FILE).is_file():
        run_candidate_unit(
            data, cfg, winner, test=test, cand=candidate(candidates, choice.winner), cohort_dir=cohort_dir,
            device=device,
        )  # fmt: skip
    with open(winner / TEST_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    fit = unit_info(winner)
    assert [r["case_id"] for r in rows] == [data.case_ids[i] for i in test]
    info = {
        "method": AUTO, "kind": AUTO, "model": AUTO, "choice": choice.winner, "selection": choice.to_dict(),
        "members": fit["members"], "selection_c_index": choice.mean(choice.winner),
        "train_seconds": time.perf_counter() - t0 + float(fit["train_seconds"]),
        "predict_seconds": fit["predict_seconds"], "test_patients": len(test), "bundle_bytes": 0,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    risk = np.array([float(r["risk"]) for r in rows])
    months = np.array([float(r["predicted_months"]) for r in rows])
    return _write_unit(out, data, test, risk, months, info, cohort_dir)


def run_blend_unit(
    data: CohortData,
    cfg: TrainConfig,
    out: Path,
    *,
    test: np.ndarray,
    candidates: list[Candidate],
    cohort_dir,
    device="cpu",
) -> Path:
    """The blend of ``candidates`` (``training.blend``) fitted on every patient outside ``test``."""
    return _pool_unit(
        data, out, test,
        lambda pool, where: fit_blend(
            data, cfg, candidates, pool, where, device=device, cohort_dir=cohort_dir
        ),
        lambda bundle: {
            "method": BLEND, "kind": BLEND, "model": BLEND, "blend": [c.name for c in candidates],
            "selection_c_index": None,  # nothing was chosen on patients
        },
        cohort_dir,
    )  # fmt: skip


def _write_unit(
    out: Path, data: CohortData, test: np.ndarray, risk, months, info: dict, cohort_dir=None
) -> Path:
    """``unit.json`` and, last (a unit with ``test.csv`` is complete), ``test.csv`` (with the
    noise-free oracle's risk where the cohort has one)."""
    write_json(out / "unit.json", info)
    oracle = (
        read_oracle(Path(cohort_dir), [data.case_ids[i] for i in test], NOISE_FREE) if cohort_dir else None
    )
    tmp = out / f".{TEST_FILE}"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["case_id", "time_months", "event", "risk", "predicted_months"]
            + ["oracle_risk"] * (oracle is not None)
        )
        for k, i in enumerate(test):
            row = [data.case_ids[i], data.time_months[i], int(data.event[i])]
            extra = [repr(float(oracle[k]))] if oracle is not None else []
            w.writerow([*row, repr(float(risk[k])), repr(float(months[k])), *extra])
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
    candidates: list[Candidate] | None = None,
    cohort_dir,
    device: str = "cpu",
    log=print,
) -> None:
    """Every missing unit of the outer folds ``only`` (default all), in order. ``methods`` limits a
    deep model to some of ``METHODS`` (default both; ``single`` where it names only ``auto``);
    ``auto`` in ``methods`` adds a unit per candidate and the selection's unit (``candidates``:
    default ``selection.DEFAULT_CANDIDATES``)."""
    from survfusion.training.selection import DEFAULT_CANDIDATES

    out = Path(out)
    fold_of = outer_folds(data, outer, cfg.seed)
    config = asdict(cfg)
    config.pop("model")
    settings = {"outer": outer, "folds": folds, "config": config, "cases": data.case_ids}
    _same_settings(out / "protocol.json", settings)
    methods = list(methods) if methods else list(METHODS)
    deep_methods = [m for m in methods if m in METHODS] or ["single"]
    listed = list(candidates or DEFAULT_CANDIDATES) if {AUTO, BLEND} & set(methods) else []
    cands = listed if AUTO in methods else []
    blended = blend_members(listed, cfg, log) if BLEND in methods else []
    if listed:  # candidates of another list never mix into one selection or blend either
        _same_settings(out / "candidates.json", {"candidates": [c.to_dict() for c in listed]})
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "protocol.json", settings)
    if listed:
        write_json(out / "candidates.json", {"candidates": [c.to_dict() for c in listed]})
    for o in only if only is not None else range(outer):
        if not 0 <= o < outer:
            raise UserError(f"outer-test: --only {o} is not an outer fold (0..{outer - 1})")
        test = np.flatnonzero(fold_of == o)
        for model in models:
            for method in methods_of(model):
                if method != "baseline" and method not in deep_methods:
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
        for cand in cands:
            where = Path(out) / f"outer{o}" / f"candidate-{cand.name}"
            if not (where / TEST_FILE).is_file():
                t0 = time.perf_counter()
                run_candidate_unit(
                    data, cfg, where, test=test, cand=cand, cohort_dir=cohort_dir, device=device
                )
                log(f"outer-test: fold {o} candidate {cand.name} done in {time.perf_counter() - t0:.0f} s")
        where = Path(out) / f"outer{o}" / AUTO
        if cands and not (where / TEST_FILE).is_file():
            t0 = time.perf_counter()
            run_auto_unit(data, cfg, where, test=test, candidates=cands, cohort_dir=cohort_dir, device=device)
            choice = unit_info(where)["choice"]
            log(f"outer-test: fold {o} auto chose {choice} in {time.perf_counter() - t0:.0f} s")
        where = Path(out) / f"outer{o}" / BLEND
        if blended and not (where / TEST_FILE).is_file():
            t0 = time.perf_counter()
            run_blend_unit(
                data, cfg, where, test=test, candidates=blended, cohort_dir=cohort_dir, device=device
            )
            log(f"outer-test: fold {o} blend of {len(blended)} done in {time.perf_counter() - t0:.0f} s")


def unit_info(where: Path) -> dict:
    """A finished unit's ``unit.json``."""
    info = read_json(where / "unit.json", "unit").value
    if not isinstance(info, dict):
        raise UserError(f"{where / 'unit.json'}: not a JSON object")
    return info


def _same_settings(path: Path, settings: dict) -> None:
    """Refuse to add units to a protocol folder written with other settings."""
    if not path.is_file():
        return
    before = read_json(path, "protocol").value
    if not isinstance(before, dict):
        raise UserError(f"outer-test: {path} is not a JSON object")
    if before != settings:
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        raise UserError(
            f"outer-test: {path.parent} holds a protocol with other settings ({', '.join(changed)})"
        )
