"""Issue 27's table: every world's nested comparison pooled over its cohort seeds.

    python scripts/worlds_table.py runs/worlds [--out docs/worlds-table.md]

reads ``runs/worlds/WORLD-sSEED/ot`` (scripts/worlds.sh), pools each world's outer test sets over
its seeds (``outer_report.read_pooled``: the same patients pair, never two draws), and prints one
summary row per world: the mean test C-index (predicted months) of auto, of every candidate and of
the noise-free oracle on the same test sets, and the paired differences the issue's targets name
with 95% bootstrap intervals over the patients of every test set; then each world's full report.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from survfusion.training.outer_report import (
    _mean_c,
    _oracle_by_fold,
    _versus,
    is_classical,
    read_pooled,
    report_units,
)

AUTO = ("auto", "auto")


def _fmt(vs) -> str:
    if vs is None:
        return "–"
    _, point, low, high = vs
    return f"{point:+.3f} ({low:+.3f} to {high:+.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    worlds: dict[str, list[Path]] = {}
    for d in sorted(args.root.glob("*-s*/ot")):
        m = re.fullmatch(r"(.+)-s(\d+)", d.parent.name)
        if m and any(d.glob("outer*/*/test.csv")):
            worlds.setdefault(m.group(1), []).append(d)
    order = ["default", "histology", "needle", "clinical", "null"]
    names = sorted(worlds, key=lambda w: (order.index(w) if w in order else len(order), w))
    head = [
        "| world | seeds | test sets | auto | "
        + "CoxNet_ClinRNA | CoxNet_ClinRNAHist | ABMIL_Surv_PG-small | "
        "ABMIL_Surv_PG-small-residual | noise-free oracle | auto - best candidate | auto - best baseline | "
        "PG-small - CoxNet_ClinRNA | best deep - CoxNet_ClinRNAHist | auto chose |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows, details = [], []
    for w in names:
        units = read_pooled(worlds[w])
        cands = {k[0]: k for k in units if k[1] == "candidate"}

        def c(name: str, units=units, cands=cands) -> str:
            return f"{_mean_c(units[cands[name]]):.3f}" if name in cands else "–"

        sets = sorted(units[AUTO]) if AUTO in units else []
        oracle = _oracle_by_fold(units)
        oc = f"{sum(oracle[o] for o in sets) / len(sets):.3f}" if sets and set(sets) <= set(oracle) else "–"
        best_cand = max(cands.values(), key=lambda k: _mean_c(units[k])) if cands else None
        base = [k for k in units if is_classical(units, k)]
        best_base = max(base, key=lambda k: _mean_c(units[k])) if base else None
        deep = [k for k in cands.values() if not is_classical(units, k)]
        best_deep = max(deep, key=lambda k: _mean_c(units[k])) if deep else None
        chose = Counter(u["choice"] for u in units[AUTO].values()) if AUTO in units else Counter()
        rows.append(
            f"| {w} | {len(worlds[w])} | {len(sets)} | {_mean_c(units[AUTO]):.3f} | "
            f"{c('CoxNet_ClinRNA')} | {c('CoxNet_ClinRNAHist')} | {c('ABMIL_Surv_PG-small')} | "
            f"{c('ABMIL_Surv_PG-small-residual')} | {oc} | "
            f"{_fmt(_versus(units, best_cand, AUTO)) if best_cand else '–'} | "
            f"{_fmt(_versus(units, best_base, AUTO)) if best_base else '–'} | "
            + (
                _fmt(_versus(units, cands["CoxNet_ClinRNA"], cands["ABMIL_Surv_PG-small"]))
                if {"CoxNet_ClinRNA", "ABMIL_Surv_PG-small"} <= set(cands)
                else "–"
            )
            + " | "
            + (
                f"{best_deep[0]}: {_fmt(_versus(units, cands['CoxNet_ClinRNAHist'], best_deep))}"
                if best_deep and "CoxNet_ClinRNAHist" in cands
                else "–"
            )
            + " | "
            + ", ".join(f"{k} {v}" for k, v in chose.most_common())
            + " |"
            if AUTO in units
            else f"| {w} | {len(worlds[w])} | – | (auto unfinished) |"
        )
        details += [
            "",
            f"### {w} ({', '.join(str(d.parent.name) for d in worlds[w])})",
            "",
            report_units(units),
        ]
    text = "\n".join(head + rows + details) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
