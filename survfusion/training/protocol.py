"""The outer-test protocol: the paper's single split against the K-fold ensemble, judged on patients
that neither ever saw.

The cohort is dealt into ``O`` (>= 5) outer folds, stratified by cohort and event. For outer fold
``o`` its patients are the **test set**; the others (the *pool*) are all that training sees: gene
selection, the clinical encoder, the split or the folds, early stopping and the calibration. On the
pool, for each model:

- ``single``: the paper's recipe, one 85:15 split of the pool (``val_fraction``, ``seed``),
  calibrated on its training risks (``train.run_training``);
- ``ensemble``: ``K`` folds of the pool, calibrated on the out-of-fold risks (``ensemble.run_ensemble``).

Each (fold, model, method) is one *unit*: its run folder ``OUT/outer<o>/<model>-<method>/`` ends with
``test.csv`` (case, time, event, risk, predicted months); a unit with a ``test.csv`` is skipped, so a
protocol can be built over several sessions and in parallel processes (``--only``). ``report``
reads whatever units exist: per fold and method the test C-index of the predicted months (the
challenge's score) and of the risks, the median absolute error in months on the patients with an
event, the selection figure each method reported about itself, and per model the paired difference
ensemble - single with a bootstrap interval (patients resampled within each test set, the same draw
for both methods).
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

METHODS = ("single", "ensemble")
MIN_OUTER = 5
TEST_FILE = "test.csv"


def outer_folds(data: CohortData, outer: int, seed: int) -> np.ndarray:
    """The outer fold (0..outer-1) of each patient: about ``1/outer`` of each stratum per fold."""
    if outer < MIN_OUTER:
        raise UserError(f"outer-test: at least {MIN_OUTER} outer test sets, got {outer}")
    # A seed of its own, so the outer deal never coincides with a fold deal of the training seed.
    return stratified_folds(strata_of(data), k=outer, seed=10_000 + seed)


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
    predict_seconds = time.perf_counter() - t0
    write_json(
        out / "unit.json",
        {
            "method": method,
            "model": cfg.model,
            "members": len(bundle.members),
            "selection_c_index": selection,
            "train_seconds": train_seconds,
            "predict_seconds": predict_seconds,
            "test_patients": len(test),
            "bundle_bytes": sum(p.stat().st_size for p in (out / "bundle").rglob("*") if p.is_file()),
        },
    )
    tmp = out / f".{TEST_FILE}"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "time_months", "event", "risk", "predicted_months"])
        for k, i in enumerate(test):
            row = [data.case_ids[i], data.time_months[i], int(data.event[i])]
            w.writerow([*row, repr(float(risk[k])), repr(float(months[k]))])
    if not keep_bundle:
        shutil.rmtree(out / "bundle")
    tmp.rename(out / TEST_FILE)  # last: a unit with test.csv is complete
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
    cohort_dir,
    device: str = "cpu",
    log=print,
) -> None:
    """Every missing unit of the outer folds ``only`` (default all), in order."""
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
            for method in METHODS:
                where = unit_dir(out, o, model, method)
                if (where / TEST_FILE).is_file():
                    continue
                t0 = time.perf_counter()
                run_unit(
                    data, replace(cfg, model=model), where, test=test, method=method,
                    folds=folds, cohort_dir=cohort_dir, device=device,
                )  # fmt: skip
                log(f"outer-test: fold {o} {model} {method} done in {time.perf_counter() - t0:.0f} s")


def _read_unit(where: Path) -> dict:
    with open(where / TEST_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    info = read_json(where / "unit.json", "unit").value
    if not isinstance(info, dict):
        raise UserError(f"{where / 'unit.json'}: not a JSON object")
    return {
        **info,
        "case_id": [r["case_id"] for r in rows],
        "time": np.array([float(r["time_months"]) for r in rows]),
        "event": np.array([r["event"] == "1" for r in rows]),
        "risk": np.array([float(r["risk"]) for r in rows]),
        "months": np.array([float(r["predicted_months"]) for r in rows]),
    }


def _scores(u: dict) -> dict:
    t, e = u["time"], u["event"]
    return {
        "c_months": concordance_index(t, e, -u["months"]),
        "c_risk": concordance_index(t, e, u["risk"]),
        "abs_error_events": np.abs(u["months"][e] - t[e]),
    }


def paired_bootstrap(pairs: list[tuple[dict, dict]], *, n_boot: int = 2000, seed: int = 0):
    """Mean over test sets of C(ensemble) - C(single) (predicted months), with a percentile 95%
    interval: each replicate resamples the patients of every test set with replacement, the same
    patients for both methods; a draw without an event in some test set is drawn again."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([_scores(b)["c_months"] - _scores(a)["c_months"] for a, b in pairs]))
    stats: list[float] = []
    while len(stats) < n_boot:
        diffs = []
        for a, b in pairs:
            idx = rng.integers(0, len(a["time"]), len(a["time"]))
            t, e = a["time"][idx], a["event"][idx]
            if not e.any():
                break
            diffs.append(
                concordance_index(t, e, -b["months"][idx]) - concordance_index(t, e, -a["months"][idx])
            )
        if len(diffs) == len(pairs) and np.all(np.isfinite(diffs)):
            stats.append(float(np.mean(diffs)))
    low, high = np.quantile(stats, [0.025, 0.975])
    return point, float(low), float(high)


def report(out: str | os.PathLike) -> str:
    """Markdown tables of every finished unit under ``out`` (see the module docstring)."""
    out = Path(out)
    units: dict[tuple[str, str], dict[int, dict]] = {}
    for where in sorted(out.glob(f"outer*/*/{TEST_FILE}")):
        fold = int(where.parent.parent.name.removeprefix("outer"))
        u = _read_unit(where.parent)
        units.setdefault((u["model"], u["method"]), {})[fold] = u
    if not units:
        raise UserError(f"outer-test: no finished unit under {out}")
    lines = [
        "| model | method | test sets | members | test C (months), mean ± sd | test C (risk) | "
        "C(months) = C(risk) | median abs. error, events (months) | self-reported C (selection) | "
        "train min / member | bundle MB / member | predict s / test set |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, method), by_fold in sorted(units.items()):
        s = [_scores(u) for u in by_fold.values()]
        c = np.array([x["c_months"] for x in s])
        cr = np.array([x["c_risk"] for x in s])
        mae = float(np.median(np.concatenate([x["abs_error_events"] for x in s])))
        us = list(by_fold.values())
        sel = np.mean([u["selection_c_index"] for u in us])

        def per_member(key: str, us=us) -> float:
            return float(np.mean([u[key] / u["members"] for u in us]))

        sd = f" ± {c.std(ddof=1):.3f}" if len(c) > 1 else ""
        lines.append(
            f"| {model} | {method} | {len(c)} | {next(iter(by_fold.values()))['members']} | "
            f"{c.mean():.3f}{sd} | {cr.mean():.3f} | {'yes' if np.allclose(c, cr) else 'no'} | "
            f"{mae:.1f} | {sel:.3f} | {per_member('train_seconds') / 60:.1f} | "
            f"{per_member('bundle_bytes') / 2**20:.1f} | {np.mean([u['predict_seconds'] for u in us]):.2f} |"
        )
    lines += [
        "",
        "| model | paired test sets | C(ensemble) - C(single), mean | 95% bootstrap CI |",
        "|---|---|---|---|",
    ]
    for model in sorted({m for m, _ in units}):
        single, ens = units.get((model, "single"), {}), units.get((model, "ensemble"), {})
        common = sorted(set(single) & set(ens))
        if not common:
            continue
        point, low, high = paired_bootstrap([(single[o], ens[o]) for o in common])
        lines.append(f"| {model} | {len(common)} | {point:+.3f} | {low:+.3f} to {high:+.3f} |")
    lines += ["", "Per test set, C-index of the predicted months (single / ensemble):", ""]
    for model in sorted({m for m, _ in units}):
        cells = []
        for o in sorted(set(units.get((model, "single"), {})) | set(units.get((model, "ensemble"), {}))):
            pair = [units.get((model, m), {}).get(o) for m in METHODS]
            cells.append(
                f"{o}: " + " / ".join("–" if u is None else f"{_scores(u)['c_months']:.3f}" for u in pair)
            )
        lines.append(f"- {model}: " + "; ".join(cells))
    return "\n".join(lines)
