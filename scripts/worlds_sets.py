"""Issue 27's worlds table over every cohort seed ever run, at the level of test sets.

    python scripts/worlds_sets.py keep runs/worlds/WORLD-sSEED      # archive one finished run
    python scripts/worlds_sets.py table [--out docs/RESULTS-worlds-sets.md]

A world-seed's full run (scripts/worlds.sh) takes about 40 minutes here, and ``runs/`` is lost with
the machine. So:

- ``keep`` copies a run's per-patient test predictions (every unit's ``test.csv`` and ``unit.json``,
  a few KB each) into ``docs/worlds/runs/WORLD-sSEED/ot/``, which the repository carries;
  ``python scripts/worlds_table.py docs/worlds/runs`` gives their full per-patient report.
- ``docs/worlds/transcribed.csv`` holds the per-test-set C-indices of the runs whose per-patient files
  were lost (the report of 2026-12-08, docs/RESULTS-worlds.md, three decimals); ``transcribe``
  re-derives it from that report, so anyone can check it.
- ``table`` pools both sources per world: the mean test C-index (predicted months) of every method
  and of the noise-free oracle on the same test sets (the oracle recomputed from the generator, which
  is deterministic: ``make_patients`` and the protocol's own outer deal; checked against every
  archived run's ``oracle_risk``), and the paired differences the issue's targets name, with a 95%
  bootstrap interval that resamples **test sets** (paired). The sets of one cohort seed share
  training patients, so this interval is, if anything, too narrow; the per-patient intervals of
  docs/RESULTS-worlds*.md are the other half of the uncertainty.
- ``blend`` scores, on the archived runs only (it needs each patient's risks), rules fixed before
  any blend was scored: ``blend-4`` in commit 146b469 (2026-12-08 02:37 UTC, before any archived run
  existed), ``blend-3`` at 02:46 (before the first run finished; only the candidates' C on outer set
  0 of two runs had been looked at). On each outer test set, each of the blend's candidates' risks
  is z-scored over that set's patients (no label is read), and the blend is their plain mean:
  ``blend-4`` takes the four default candidates, ``blend-3`` all but the residual one (what a
  mean-combination bundle can hold today). It approximates a bundle that averages the pool-fitted
  models on the scale of their training risks (survfusion.serving.bundle); it is a question for
  the next round, not a method of the kit. Printed against every candidate and auto, paired, with
  the per-patient bootstrap of outer_report.paired_bootstrap.
"""

from __future__ import annotations

import argparse
import csv
import functools
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from survfusion.nets.survival import concordance_index
from survfusion.synth.oracle import outer_oracle
from survfusion.training.outer_report import _read_unit, _scores, paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "worlds" / "runs"
TRANSCRIBED = ROOT / "docs" / "worlds" / "transcribed.csv"
PATIENTS, OUTER = 176, 5  # scripts/worlds.sh
ORDER = ("default", "histology", "needle", "clinical", "null")
CANDIDATES = ("CoxNet_ClinRNA", "CoxNet_ClinRNAHist", "ABMIL_Surv_PG-small", "ABMIL_Surv_PG-small-residual")
DEEP = ("ABMIL_Surv_PG-small", "ABMIL_Surv_PG-small-residual")
FIELDS = ("world", "seed", "outer_set", "method", "c_months", "source")


def keep(run: Path) -> Path:
    """Copy a run's small per-patient outputs into the repository's archive."""
    m = re.fullmatch(r"(.+)-s(\d+)", run.name)
    if not m:
        raise SystemExit(f"keep: {run} is not a WORLD-sSEED run folder")
    dest = RUNS / run.name / "ot"
    units = sorted((run / "ot").glob("outer*/*/test.csv"))
    if not units:
        raise SystemExit(f"keep: {run}/ot holds no finished unit")
    for test in units:
        to = dest / test.parent.relative_to(run / "ot")
        to.mkdir(parents=True, exist_ok=True)
        for name in ("test.csv", "unit.json"):
            shutil.copy2(test.parent / name, to / name)
    print(f"keep: {len(units)} units of {run.name} -> {dest.relative_to(ROOT)}")
    return dest


def _label(model: str, method: str) -> str:
    return (
        method if method in ("auto", "blend") else model if method == "candidate" else f"{model} ({method})"
    )


def transcribe(report: Path) -> list[dict]:
    """Per-set C-indices of a docs/RESULTS-worlds.md report: its '### world (world-sA, world-sB)'
    headings name the seeds in order (set k*100 + o is outer set o of the k-th), and its lines
    '- NAME (METHOD): 0: 0.547; 1: ...' hold the sets."""
    rows, seeds, world = [], [], ""
    for line in report.read_text().splitlines():
        if h := re.fullmatch(r"### (\S+) \((.+)\)", line):
            world = h.group(1)
            seeds = [int(s.rsplit("-s", 1)[1]) for s in h.group(2).split(", ")]
        elif world and (m := re.fullmatch(r"- (\S+)(?: \((\w+)\))?: (\d+: .*)", line)):
            name, method = m.group(1), m.group(2) or ("auto" if m.group(1) == "auto" else "baseline")
            if method == "baseline":
                continue  # the baseline row repeats the candidate of the same name
            for item in m.group(3).split("; "):
                k, c = item.split(": ")
                rows.append(
                    {
                        "world": world,
                        "seed": seeds[int(k) // 100],
                        "outer_set": int(k) % 100,
                        "method": _label(name, method),
                        "c_months": float(c),
                        "source": report.name,
                    }
                )
    return rows


@functools.cache  # archived_rows checks against it, table scores it: one generation per seed
def oracle_sets(world: str, seed: int) -> dict[int, tuple[set[str], float]]:
    """Each outer test set's patients and the C-index of their noise-free log-hazard, recomputed."""
    sets = outer_oracle(PATIENTS, seed, world, outer=OUTER, protocol_seed=seed)  # as worlds.sh runs
    return dict(enumerate(sets))


def archived_rows() -> list[dict]:
    rows = []
    for ot in sorted(RUNS.glob("*-s*/ot")):
        world, seed = ot.parent.name.rsplit("-s", 1)
        oracle = oracle_sets(world, int(seed))
        for test in sorted(ot.glob("outer*/*/test.csv")):
            u = _read_unit(test.parent)
            o = int(test.parent.parent.name.removeprefix("outer"))
            ids, c_oracle = oracle[o]
            if set(u["case_id"]) != ids or u["oracle"] is None:
                raise SystemExit(f"{test}: its patients are not the recomputed outer set {o}")
            if abs(concordance_index(u["time"], u["event"], u["oracle"]) - c_oracle) > 1e-6:
                raise SystemExit(f"{test}: its oracle C differs from the recomputed one")
            rows.append(
                {
                    "world": world,
                    "seed": int(seed),
                    "outer_set": o,
                    "method": _label(u["model"], u["method"]),
                    "c_months": _scores(u)["c_months"],
                    "source": "docs/worlds/runs",
                }
            )
    return rows


def _boot(diffs: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (n_boot, len(diffs)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(diffs.mean()), float(low), float(high)


def _fmt(d: tuple[float, float, float] | None) -> str:
    return "–" if d is None else f"{d[0]:+.3f} ({d[1]:+.3f} to {d[2]:+.3f})"


def table(rows: list[dict]) -> str:
    by: dict[str, dict[tuple[int, int], dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by[r["world"]][(int(r["seed"]), int(r["outer_set"]))][r["method"]] = float(r["c_months"])
    methods = ("auto", *CANDIDATES)
    out = [
        "| world | seeds | test sets | " + " | ".join(methods) + " | blend | noise-free oracle | "
        "auto - best candidate (optimistic) | auto - best baseline | auto - oracle | "
        "blend - best candidate (optimistic) | blend - auto | blend - best baseline | blend - oracle | "
        "PG-small - CoxNet_ClinRNA | best deep - CoxNet_ClinRNAHist | every method within 0.50 ± 0.04 |",
        "|" + "---|" * (len(methods) + 15),
    ]
    for world in sorted(by, key=lambda w: (ORDER.index(w) if w in ORDER else len(ORDER), w)):
        sets = sorted(k for k, v in by[world].items() if all(m in v for m in methods))
        oracle = {s: oracle_sets(world, s) for s in {k[0] for k in sets}}
        c = {m: np.array([by[world][k][m] for k in sets]) for m in methods}
        c["oracle"] = np.array([oracle[s][o][1] for s, o in sets])
        has_blend = all("blend" in by[world][k] for k in sets)
        if has_blend:
            c["blend"] = np.array([by[world][k]["blend"] for k in sets])

        def diff(a: str, b: str, c: dict[str, np.ndarray] = c) -> str:
            return _fmt(_boot(c[a] - c[b])) if a in c and b in c else "–"

        best = max(CANDIDATES, key=lambda m: c[m].mean())
        base = max(("CoxNet_ClinRNA", "CoxNet_ClinRNAHist"), key=lambda m: c[m].mean())
        deep = max(DEEP, key=lambda m: c[m].mean())
        band = all(abs(c[m].mean() - 0.5) <= 0.04 for m in (*methods, "blend") if m in c)
        out.append(
            f"| {world} | {len({s for s, _ in sets})} | {len(sets)} | "
            + " | ".join(f"{c[m].mean():.3f}" for m in methods)
            + (f" | {c['blend'].mean():.3f}" if has_blend else " | –")
            + f" | {c['oracle'].mean():.3f} | {best}: {diff('auto', best)} | {base}: "
            f"{diff('auto', base)} | {diff('auto', 'oracle')} | {diff('blend', best)} | "
            f"{diff('blend', 'auto')} | {diff('blend', base)} | {diff('blend', 'oracle')} | "
            f"{diff('ABMIL_Surv_PG-small', 'CoxNet_ClinRNA')} | {deep}: "
            f"{diff(deep, 'CoxNet_ClinRNAHist')} | "
            + (("yes" if band else "no") if world == "null" else "–")
            + " |"
        )
    return "\n".join(out)


def merged(old: list[dict], new: list[dict]) -> tuple[list[dict], str]:
    """One score per (world, seed, set, method): the archived run's where it has one, else the
    transcribed one; and a line on how the two agree where both exist (the archive's baseline unit
    against the transcribed elastic net, which the lost runs' reports show equal to its candidate)."""
    key = lambda r, m=None: (r["world"], int(r["seed"]), int(r["outer_set"]), m or r["method"])  # noqa: E731
    have = {key(r): r for r in new}
    diffs = [
        abs(float(have[k]["c_months"]) - float(r["c_months"]))
        for r in old
        for k in [key(r), key(r, "CoxNet_ClinRNA (baseline)") if r["method"] == "CoxNet_ClinRNA" else None]
        if k in have
    ]
    rows = [r for r in new if r["method"] != "CoxNet_ClinRNA (baseline)"]
    rows += [r for r in old if key(r) not in have]
    note = (
        f"archived against transcribed: {len(diffs)} test-set scores rerun, largest difference "
        f"{max(diffs):.4f} (the transcription has 3 decimals)"
        if diffs
        else "archived against transcribed: no score in both"
    )
    return rows, note


BLENDS = {  # fixed before any archived run was read (module docstring)
    "blend-4": CANDIDATES,
    "blend-3": CANDIDATES[:3],  # what a mean-combination bundle can hold today (a residual adds)
}


def _z(risk: np.ndarray) -> np.ndarray:
    sd = risk.std()
    return (risk - risk.mean()) / sd if sd > 0 else np.zeros_like(risk)


def blend() -> str:
    """The pre-registered blends (module docstring) against every candidate and auto."""
    pairs: dict[tuple[str, str, str], list[tuple[dict, dict]]] = defaultdict(list)
    runs: dict[str, set[str]] = defaultdict(set)
    for ot in sorted(RUNS.glob("*-s*/ot")):
        world = ot.parent.name.rsplit("-s", 1)[0]
        for outer in sorted(ot.glob("outer*")):
            read = [_read_unit(t.parent) for t in outer.glob("*/test.csv")]
            units = {_label(u["model"], u["method"]): u for u in read}
            if not all(m in units for m in ("auto", *CANDIDATES)):
                continue
            runs[world].add(ot.parent.name)
            ref = units["auto"]
            if any(units[m]["case_id"] != ref["case_id"] for m in CANDIDATES):
                raise SystemExit(f"{outer}: the candidates and auto list different patients")
            for name, members in BLENDS.items():
                mix = np.mean([_z(units[m]["risk"]) for m in members], axis=0)
                b = {**ref, "risk": mix, "months": -mix}  # only the order matters to a C-index
                for m in ("auto", *CANDIDATES, "blend"):
                    if m in units:
                        pairs[(world, name, m)].append((units[m], b))
    out = [
        "| world | runs | test sets | blend | its C | against | its C | C(blend) - C(it), 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for world in sorted(runs, key=lambda w: (ORDER.index(w) if w in ORDER else len(ORDER), w)):
        for name in BLENDS:
            for m in ("auto", *CANDIDATES, "blend"):  # "blend": the kit's own (pool-standardised)
                ps = pairs[(world, name, m)]
                if not ps:
                    continue
                c_b = np.mean([_scores(b)["c_months"] for _, b in ps])
                c_m = np.mean([_scores(a)["c_months"] for a, _ in ps])
                point, low, high = paired_bootstrap(ps)
                out.append(
                    f"| {world} | {', '.join(sorted(runs[world]))} | {len(ps)} | {name} | {c_b:.3f} | {m} | "
                    f"{c_m:.3f} | {point:+.3f} ({low:+.3f} to {high:+.3f}) |"
                )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("keep").add_argument("run", type=Path)
    sub.add_parser("transcribe").add_argument("report", type=Path)
    t = sub.add_parser("table")
    t.add_argument("--out", type=Path)
    sub.add_parser("blend")
    args = ap.parse_args()
    if args.cmd == "keep":
        keep(args.run)
    elif args.cmd == "transcribe":
        rows = transcribe(args.report)
        TRANSCRIBED.parent.mkdir(parents=True, exist_ok=True)
        with open(TRANSCRIBED, "w", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            w.writerows(rows)
        print(f"transcribe: {len(rows)} test-set scores -> {TRANSCRIBED.relative_to(ROOT)}")
    elif args.cmd == "blend":
        print(blend())
    else:
        with open(TRANSCRIBED, newline="") as f:
            old = list(csv.DictReader(f))
        rows, note = merged(old, archived_rows())
        text = table(rows) + "\n\n" + note
        print(text)
        if args.out:
            args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
