"""Seconds to train one outer fold (the pool of outer set 0) for every candidate recipe and the
paper's recipe, in one process on one cohort, with torch's dropout and with the kit's, interleaved.

    python bench/recipe_fit.py --cohort C --features F [--repeats 3] [--skip-paper]

The cohort's RNA is parsed once before any timing (``CohortData.raw_rna`` is cached, as in
outer-test). Per recipe: ``--repeats`` fits, alternating the dropout implementation
(``survfusion.nets.dropout.Dropout`` against ``torch.nn.Dropout`` patched in), the median
reported with the ratio. A classical baseline has no dropout: one row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import survfusion.nets.fusions as fusions
import survfusion.nets.models as models
from survfusion.training.config import TrainConfig
from survfusion.training.dataset import load_cohort
from survfusion.training.protocol import outer_folds
from survfusion.training.selection import DEFAULT_CANDIDATES, Candidate, fit_candidate

KIT = models.Dropout
BASE = Path(__file__).resolve().parents[1] / "configs" / "synthetic-2048.json"  # the data options


def _use(dropout) -> None:
    models.Dropout = dropout  # type: ignore[misc]
    fusions.Dropout = dropout  # type: ignore[misc]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-paper", action="store_true")
    args = ap.parse_args()
    base = TrainConfig.from_overrides(json.loads(BASE.read_text()))
    data = load_cohort(args.cohort, args.features)
    data.raw_rna()
    pool = np.flatnonzero(outer_folds(data, 5, 0) != 0)
    cands = list(DEFAULT_CANDIDATES)
    if not args.skip_paper:
        cands.append(Candidate("ABMIL_Surv_PG (paper recipe)", "ABMIL_Surv_PG", {}))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads); {len(data)} patients, pool "
          f"{len(pool)}, {data.bags[0].shape[0]} tiles x {data.bags[0].shape[1]}")  # fmt: skip
    print("| recipe | torch dropout (s) | kit dropout (s) | ratio |")
    print("|---|---|---|---|")
    for cand in cands:
        kinds = [("kit", KIT)] if cand.method == "baseline" else [("torch", torch.nn.Dropout), ("kit", KIT)]
        secs: dict[str, list[float]] = {k: [] for k, _ in kinds}
        for _ in range(args.repeats):
            for name, dropout in kinds:
                _use(dropout)
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    fit_candidate(data, base, cand, pool, Path(tmp) / "fit")
                    secs[name].append(time.perf_counter() - t0)
        _use(KIT)
        kit = statistics.median(secs["kit"])
        if "torch" in secs:
            ref = statistics.median(secs["torch"])
            print(f"| {cand.name} | {ref:.1f} | {kit:.1f} | {ref / kit:.2f}x |", flush=True)
        else:
            print(f"| {cand.name} | – | {kit:.1f} | – |", flush=True)


if __name__ == "__main__":
    main()
