"""The outer-test protocol's report: every finished unit under a protocol folder, as Markdown.

Per model and method: the test C-index of the predicted months (the challenge's score) and of the
risks over the outer test sets, the median absolute error in months on patients with an event, the
figure each method reported about itself, and the costs. Then the paired comparisons, each a
bootstrap over the patients of every test set with the same draw for both methods
(``paired_bootstrap``): every deep method against the best classical baseline, and each model's
ensemble against its single split. The report opens with one sentence: the method that scores
highest, against the best method of the other kind, and whether that interval excludes zero.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from survfusion.errors import UserError
from survfusion.fileio import read_json
from survfusion.nets.survival import PairTable, concordance_index
from survfusion.training.protocol import METHODS, TEST_FILE

Units = dict[tuple[str, str], dict[int, dict]]


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
        "oracle": np.array([float(r["oracle_risk"]) for r in rows])
        if rows and "oracle_risk" in rows[0]
        else None,
    }


def _scores(u: dict) -> dict:
    t, e = u["time"], u["event"]
    return {
        "c_months": concordance_index(t, e, -u["months"]),
        "c_risk": concordance_index(t, e, u["risk"]),
        "abs_error_events": np.abs(u["months"][e] - t[e]),
    }


def paired_bootstrap(pairs: list[tuple[dict, dict]], *, n_boot: int = 2000, seed: int = 0):
    """Mean over test sets of C(b) - C(a) (predicted months) for pairs ``(a, b)`` of units on the same
    test set, with a percentile 95% interval: each replicate resamples the patients of every test set
    with replacement, the same patients for both methods; a draw without an event in some test set
    is drawn again."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([_scores(b)["c_months"] - _scores(a)["c_months"] for a, b in pairs]))
    # each test set's pairs once (survival.PairTable: the C-index of a resample from its counts)
    tables = [PairTable(a["time"], a["event"]) for a, _ in pairs]
    scored = [
        (tab.score(-a["months"]), tab.score(-b["months"])) for tab, (a, b) in zip(tables, pairs, strict=True)
    ]
    stats: list[float] = []
    while len(stats) < n_boot:
        diffs = []
        for tab, (sa, sb), (a, _) in zip(tables, scored, pairs, strict=True):
            n = len(a["time"])
            idx = rng.integers(0, n, n)
            if not a["event"][idx].any():
                break
            counts = np.bincount(idx, minlength=n)
            diffs.append(tab.concordance(sb, counts) - tab.concordance(sa, counts))
        if len(diffs) == len(pairs) and np.all(np.isfinite(diffs)):
            stats.append(float(np.mean(diffs)))
    low, high = np.quantile(stats, [0.025, 0.975])
    return point, float(low), float(high)


def read_units(out: Path) -> Units:
    units: Units = {}
    for where in sorted(out.glob(f"outer*/*/{TEST_FILE}")):
        fold = int(where.parent.parent.name.removeprefix("outer"))
        u = _read_unit(where.parent)
        units.setdefault((u["model"], u["method"]), {})[fold] = u
    if not units:
        raise UserError(f"outer-test: no finished unit under {out}")
    return units


def read_pooled(outs: list[Path], stride: int = 100) -> Units:
    """The units of several protocol folders (one per cohort seed) as one set of test sets: outer
    set ``o`` of the ``k``-th folder becomes test set ``k * stride + o``, so the same method's sets
    of every folder pool and the paired comparisons pair only the same patients."""
    pooled: Units = {}
    for k, out in enumerate(outs):
        for key, by_fold in read_units(Path(out)).items():
            if max(by_fold) >= stride:
                raise UserError(f"{out}: outer set {max(by_fold)} does not fit stride {stride}")
            pooled.setdefault(key, {}).update({k * stride + o: u for o, u in by_fold.items()})
    return pooled


def _mean_c(by_fold: dict[int, dict]) -> float:
    return float(np.mean([_scores(u)["c_months"] for u in by_fold.values()]))


def _versus(units: Units, a: tuple[str, str], b: tuple[str, str]) -> tuple[int, float, float, float] | None:
    """C(b) - C(a) on the test sets both have: (sets, mean, low, high), or None without one."""
    common = sorted(set(units[a]) & set(units[b]))
    if not common:
        return None
    return (len(common), *paired_bootstrap([(units[a][o], units[b][o]) for o in common]))


def _name(key: tuple[str, str]) -> str:
    return key[0] if key[1] in ("baseline", "auto", "blend") else f"{key[0]} ({key[1]})"


def is_classical(units: Units, key: tuple[str, str]) -> bool:
    """A classical baseline: named in --models, or a baseline candidate of the selection."""
    return key[1] == "baseline" or next(iter(units[key].values())).get("kind") == "baseline"


def headline(units: Units) -> str:
    """One sentence: the best method, the best of the other kind, their paired difference."""
    ranked = sorted(units, key=lambda k: -_mean_c(units[k]))
    best = ranked[0]
    other = next((k for k in ranked if is_classical(units, k) != is_classical(units, best)), None)
    said = f"On these outer test sets {_name(best)} scores highest (test C-index {_mean_c(units[best]):.3f})"
    vs = _versus(units, other, best) if other else None
    if other is None or vs is None:
        return said + "; no method of the other kind to compare it with."
    n, point, low, high = vs
    verdict = "excludes zero" if low > 0 or high < 0 else "includes zero: the difference is not established"
    return (
        f"{said}; against {_name(other)} ({_mean_c(units[other]):.3f}), the best "
        f"{'baseline' if is_classical(units, other) else 'other method'}, the paired difference on {n} test "
        f"set{'s' * (n != 1)} is {point:+.3f} (95% CI {low:+.3f} to {high:+.3f}), an interval that {verdict}."
    )


def _method_table(units: Units) -> list[str]:
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
        reported = [u["selection_c_index"] for u in us if u.get("selection_c_index") is not None]
        sel = f"{np.mean(reported):.3f}" if reported else "–"

        def per_member(key: str, us=us) -> float:
            return float(np.mean([u[key] / u["members"] for u in us]))

        sd = f" ± {c.std(ddof=1):.3f}" if len(c) > 1 else ""
        size = "–" if not us[0]["bundle_bytes"] else f"{per_member('bundle_bytes') / 2**20:.1f}"
        lines.append(
            f"| {model} | {method} | {len(c)} | {us[0]['members']} | "
            f"{c.mean():.3f}{sd} | {cr.mean():.3f} | {'yes' if np.allclose(c, cr) else 'no'} | "
            f"{mae:.1f} | {sel} | {per_member('train_seconds') / 60:.2f} | "
            f"{size} | {np.mean([u['predict_seconds'] for u in us]):.2f} |"
        )
    return lines


def _oracle_by_fold(units: Units) -> dict[int, float]:
    """Per test set, the C-index of the noise-free planted log-hazard (any unit's patients of that
    set: every unit of a fold has the same); empty for a cohort without an oracle."""
    by_fold: dict[int, float] = {}
    for per_fold in units.values():
        for o, u in per_fold.items():
            if u["oracle"] is not None and o not in by_fold:
                by_fold[o] = concordance_index(u["time"], u["event"], u["oracle"])
    return by_fold


def _oracle_row(units: Units) -> list[str]:
    by_fold = _oracle_by_fold(units)
    if not by_fold:
        return []
    c = np.array(list(by_fold.values()))
    sd = f" ± {c.std(ddof=1):.3f}" if len(c) > 1 else ""
    label = "noise-free oracle (the planted log-hazard; no model can know the noise)"
    return [f"| {label} | – | {len(c)} | – | {c.mean():.3f}{sd} | {c.mean():.3f} | – | – | – | – | – | – |"]


def _auto_section(units: Units) -> list[str]:
    """What the selection chose on each pool, and the selection against the best candidate, the
    best baseline and the oracle on the same test sets."""
    key = ("auto", "auto")
    if key not in units:
        return []
    auto = units[key]
    lines = [
        "",
        f"Selection (auto): test C-index {_mean_c(auto):.3f} over {len(auto)} outer test sets; its choice "
        "on each pool (inner cross-validation on the pool alone, never a test patient):",
        "",
    ]
    lines += [
        f"- outer set {o}: {u['choice']} (inner C {u['selection_c_index']:.3f})"
        for o, u in sorted(auto.items())
    ]
    candidates = [k for k in units if k[1] == "candidate"]
    rows = []
    if candidates:
        best = max(candidates, key=lambda k: _mean_c(units[k]))
        rows.append(("the best single candidate (chosen on these test sets: optimistic)", best))
    classical = [k for k in units if is_classical(units, k)]
    if classical:
        rows.append(("the best classical baseline", max(classical, key=lambda k: _mean_c(units[k]))))
    lines += [
        "",
        "| C(auto) - C(other) against | other | its test C | paired test sets | mean | 95% bootstrap CI |",
        "|---|---|---|---|---|---|",
    ]
    for label, other in rows:
        vs = _versus(units, other, key)
        if vs:
            n, point, low, high = vs
            lines.append(f"| {label} | {_name(other)} | {_mean_c(units[other]):.3f} | {n} | {point:+.3f} | "
                         f"{low:+.3f} to {high:+.3f} |")  # fmt: skip
    oracle_c = _oracle_by_fold(units)
    if set(auto) <= set(oracle_c):
        oracle = float(np.mean([oracle_c[o] for o in auto]))
        lines.append(f"| the noise-free oracle | planted log-hazard | {oracle:.3f} | {len(auto)} | "
                     f"{_mean_c(auto) - oracle:+.3f} | – |")  # fmt: skip
    return lines


def _comparisons(units: Units) -> list[str]:
    lines: list[str] = []
    baselines = [k for k in units if is_classical(units, k)]
    if baselines:
        best = max(baselines, key=lambda k: _mean_c(units[k]))
        lines += [
            "",
            f"Every deep method against the best baseline, {best[0]} (test C {_mean_c(units[best]):.3f}):",
            "",
            "| model | method | paired test sets | C(deep) - C(best baseline), mean | 95% bootstrap CI |",
            "|---|---|---|---|---|",
        ]
        for key in sorted(k for k in units if not is_classical(units, k)):
            vs = _versus(units, best, key)
            if vs:
                n, point, low, high = vs
                lines.append(f"| {key[0]} | {key[1]} | {n} | {point:+.3f} | {low:+.3f} to {high:+.3f} |")
    rows = []
    for model in sorted({m for m, method in units if method in METHODS}):
        if (model, "single") in units and (model, "ensemble") in units:
            vs = _versus(units, (model, "single"), (model, "ensemble"))
            if vs:
                n, point, low, high = vs
                rows.append(f"| {model} | {n} | {point:+.3f} | {low:+.3f} to {high:+.3f} |")
    if rows:
        lines += [
            "",
            "| model | paired test sets | C(ensemble) - C(single), mean | 95% bootstrap CI |",
            "|---|---|---|---|",
            *rows,
        ]
    return lines


def report(out: str | os.PathLike) -> str:
    """Markdown: the headline, the method table, the paired comparisons, C per test set."""
    return report_units(read_units(Path(out)))


def report_units(units: Units) -> str:
    """``report`` of units already read (one protocol folder, or several pooled)."""
    lines = [headline(units), "", *_method_table(units), *_oracle_row(units), *_comparisons(units)]
    lines += _auto_section(units)
    lines += ["", "Per test set, C-index of the predicted months:", ""]
    for key in sorted(units):
        cells = [f"{o}: {_scores(u)['c_months']:.3f}" for o, u in sorted(units[key].items())]
        lines.append(f"- {_name(key)}: " + "; ".join(cells))
    return "\n".join(lines)
