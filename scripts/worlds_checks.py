"""Options for issue 27 measured on the worlds' outer test sets (docs/RESULTS.md, "Issue 27: worlds ...").

    python scripts/worlds_checks.py rules runs/worlds
    python scripts/worlds_checks.py blocks runs/worlds/histology-s0 [...]
    python scripts/worlds_checks.py inputs runs/worlds/null-s1 [...]

``rules`` replays auto's selection from what its units stored (every candidate's inner C-index per
fold, and each candidate's fit on the whole pool with its test predictions: auto's refit of its
winner is that fit, byte for byte) under two rules: today's highest mean inner C, and Breiman's
one-standard-error rule (the first candidate in the list, simplest first, whose mean is within
one standard error of the paired inner-fold differences of the best). Only inner scores choose;
the test patients only score.

``blocks`` refits CoxNet_ClinRNAHist and CoxNet_ClinRNA on each outer pool with scikit-survival's
per-column penalty factors: ``plain`` (1 each, the kit's), ``equal-variance`` (a block's factor
proportional to its number of columns, so that a priori each block, not each column, carries the
same variance: the 16 slide components and the clinical columns are penalised far less than 2,048
genes) and ``chosen``
(the two compared by the pool's inner folds with the penalty and the mixing).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from survfusion.nets.survival import concordance_index
from survfusion.training.outer_report import _read_unit, _scores

SIMPLEST_FIRST = (
    "CoxNet_ClinRNA",
    "CoxNet_ClinRNAHist",
    "ABMIL_Surv_PG-small",
    "ABMIL_Surv_PG-small-residual",
)


def _test_c(unit: Path) -> float:
    """A unit's test C-index of predicted months, as the reports compute it."""
    return float(_scores(_read_unit(unit))["c_months"])


def choose(candidates: list[dict], rule: str) -> str:
    scores = {c["name"]: np.asarray(c["per_fold"], np.float64) for c in candidates}
    best = max(scores, key=lambda n: scores[n].mean())
    if rule == "best":
        return best
    for name in [n for n in SIMPLEST_FIRST if n in scores] + sorted(set(scores) - set(SIMPLEST_FIRST)):
        d = scores[best] - scores[name]
        se = d.std(ddof=1) / np.sqrt(len(d)) if name != best else 0.0
        if scores[name].mean() >= scores[best].mean() - se:
            return name
    return best


def rules(root: Path) -> None:
    print("| world | outer sets | highest mean inner C | one-SE rule | one-SE choices |")
    print("|---|---|---|---|---|")
    for world in sorted(p for p in root.iterdir() if (p / "ot").is_dir()):
        got: dict[str, list[float]] = {"best": [], "one-se": []}
        picks = []
        for outer in sorted((world / "ot").glob("outer*")):
            unit = outer / "auto" / "unit.json"
            if not unit.is_file():
                continue
            cands = json.loads(unit.read_text())["selection"]["candidates"]
            for rule in got:
                name = choose(cands, rule)
                got[rule].append(_test_c(outer / f"candidate-{name}"))
            picks.append(choose(cands, "one-se"))
        if got["best"]:
            print(f"| {world.name} | {len(got['best'])} | {np.mean(got['best']):.3f} | "
                  f"{np.mean(got['one-se']):.3f} | {', '.join(picks)} |")  # fmt: skip


def blocks(worlds: list[Path]) -> None:
    from survfusion.nets.calibration import RiskToTime
    from survfusion.training.baselines import coxnet_select, design, fit_coxnet
    from survfusion.training.config import TrainConfig, read_config_file
    from survfusion.training.dataset import load_cohort
    from survfusion.training.protocol import outer_folds

    cache: dict[Path, object] = {}
    print("| world | baseline | plain | equal-variance | chosen by inner folds (equal-variance chosen on) |")
    print("|---|---|---|---|---|")
    for world, (name, inputs) in itertools.product(
        worlds, (("CoxNet_ClinRNAHist", "clinical+rna+hist"), ("CoxNet_ClinRNA", "clinical+rna"))
    ):
        seed = int(world.name.rsplit("-s", 1)[1])
        base = read_config_file("configs/synthetic-2048.json")
        cfg = TrainConfig.from_overrides({**base, "model": name, "seed": seed})
        data = cache.get(world) or cache.setdefault(world, load_cohort(world / "cohort", world / "features"))
        fold_of = outer_folds(data, 5, cfg.seed)  # the worlds' own outer test sets (scripts/worlds.sh)
        c: dict[str, list[float]] = {"plain": [], "equal-variance": [], "chosen": []}
        chose_ev = 0
        for k in range(5):
            pool, test = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
            design_k = design(data, pool, inputs, cfg=cfg)
            sizes = [len(s) for s in design_k.split_columns()]
            ev = np.concatenate([np.full(n, n / sizes[1]) for n in sizes])
            t, e, x = data.time_months[pool], data.event[pool], design_k.matrix(data, pool)
            factors = {"plain": None, "equal-variance": ev}
            inner = {
                n: coxnet_select(x, t, e, seed=cfg.seed, penalty_factor=f)["inner_c_index"]
                for n, f in factors.items()
            }
            for how, factor in factors.items():
                fit = fit_coxnet(x, t, e, seed=cfg.seed, penalty_factor=factor)
                cal = RiskToTime().fit(fit(x), t, e, mode=cfg.calibration)
                months = cal.predict(fit(design_k.matrix(data, test)))
                c[how].append(float(concordance_index(data.time_months[test], data.event[test], -months)))
            pick = "equal-variance" if inner["equal-variance"] > inner["plain"] else "plain"
            chose_ev += pick == "equal-variance"
            c["chosen"].append(c[pick][-1])
        print(f"| {world.name} | {name} | {np.mean(c['plain']):.3f} | {np.mean(c['equal-variance']):.3f} | "
              f"{np.mean(c['chosen']):.3f} ({chose_ev} of 5) |")  # fmt: skip


def inputs(worlds: list[Path]) -> None:
    """Each input's own C-index against the outcome on the whole cohort: in the null world every
    one is a chance draw (at n = 176 and about 62 events, |C - 0.5| of a null input is about 0.03)."""
    from survfusion.serving.preprocess import ClinicalEncoder
    from survfusion.training.dataset import load_cohort

    print(
        "| world | largest clinical abs(C - 0.5) | genes: mean, max abs(C - 0.5) | C, total log expression |"
    )
    print("|---|---|---|---|")
    for world in worlds:
        d = load_cohort(world / "cohort", world / "features")
        t, e = d.time_months, d.event
        enc = ClinicalEncoder.fit(d.clinical)
        x = np.stack([enc.transform(c).values for c in d.clinical])
        clin = max(
            abs(concordance_index(t, e, x[:, j]) - 0.5) for j in range(x.shape[1]) if x[:, j].std() > 0
        )
        docs = [d.rna_doc(i) for i in range(len(t))]
        r = np.log1p(np.array([[float(doc[g]) for g in docs[0]] for doc in docs]))
        genes = np.abs(
            np.array([concordance_index(t, e, r[:, j]) for j in range(r.shape[1]) if r[:, j].std() > 0]) - 0.5
        )
        total = concordance_index(t, e, r.sum(axis=1))
        print(
            f"| {world.name} | {clin:.3f} | {np.nanmean(genes):.3f}, {np.nanmax(genes):.3f} | {total:.3f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("rules").add_argument("root", type=Path)
    sub.add_parser("blocks").add_argument("worlds", type=Path, nargs="+")
    sub.add_parser("inputs").add_argument("worlds", type=Path, nargs="+")
    args = ap.parse_args()
    if args.what == "rules":
        rules(args.root)
    else:
        (blocks if args.what == "blocks" else inputs)(args.worlds)


if __name__ == "__main__":
    main()
