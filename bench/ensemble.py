"""What an ensemble costs per member, beside a single model, in one process.

At the paper's dimensions (ABMIL_Surv_PG, UNI's 1024-d tile features, 27 clinical inputs) with all
19,359 genes and with the 2,048-gene option: the bundle's size on disk, the time to load and verify
it (checksums, safetensors, dims) and the time of the survival model on one patient's bag of tiles
(the tile encoder runs once per slide whatever the member count, so it is not in these numbers).
Members are untrained (seeded weights): sizes and times do not depend on the values.

    .venv/bin/python bench/ensemble.py [--members 5] [--tiles 15000] [--reps 5]

Prints one table; medians over ``--reps``; K-member / 1-member ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from survfusion.nets.calibration import RiskToTime
from survfusion.nets.models import build_model
from survfusion.serving.bundle import Bundle, Member
from survfusion.serving.bundle_io import load_bundle, save_bundle
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer, reference_genes


def make(members: int, genes: int, seed: int = 0) -> Bundle:
    rng = np.random.default_rng(seed)
    names = reference_genes()[:genes]
    clinical = ClinicalEncoder.fit([{"age": 60, "no_instillations": 10}, {"age": 80, "no_instillations": 30}])
    parts = []
    for k in range(members):
        torch.manual_seed(seed + k)
        model = build_model("ABMIL_Surv_PG", feat_dim=1024, rna_dim=genes)
        means = {"hist": rng.normal(size=512), "rna": rng.random(128), "clinical": rng.random(27)}
        parts.append(Member(model, clinical, RnaVectorizer(names, log1p=True), means, 0.1 * k, 1.0 + 0.1 * k))
    calibration = RiskToTime().fit(rng.normal(size=100), rng.uniform(1, 100, 100), rng.random(100) < 0.4)
    return Bundle("ABMIL_Surv_PG", parts, calibration)


def median_seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--tiles", type=int, default=15_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(0)
    bag = [torch.randn(args.tiles, 1024, generator=g)]
    rng = np.random.default_rng(1)
    record = {"age": 70, "sex": "Male", "no_instillations": 12}
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {args.tiles} tiles, {args.reps} reps")
    print("| genes | members | bundle MB | MB/member | load s | load s/member | model s | model s/member |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for genes in (19_359, 2_048):
            values = rng.gamma(2.0, 50.0, genes).tolist()
            expression = dict(zip(reference_genes()[:genes], values, strict=True))
            rows = {}
            for k in (1, args.members):
                path = save_bundle(make(k, genes), Path(tmp) / f"b{genes}-{k}")
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
                load = median_seconds(lambda path=path: load_bundle(path), args.reps)
                bundle = load_bundle(path)
                bundle.risks(bag, [record], [expression])  # warm-up
                model = median_seconds(lambda b=bundle, x=expression: b.risks(bag, [record], [x]), args.reps)
                rows[k] = (size, load, model)
                print(
                    f"| {genes:,} | {k} | {size:.1f} | {size / k:.1f} | {load:.2f} | {load / k:.2f} | "
                    f"{model:.3f} | {model / k:.3f} |"
                )
            s1, l1, m1 = rows[1]
            sk, lk, mk = rows[args.members]
            ratios = f"{sk / s1:.2f} | | {lk / l1:.2f} | | {mk / m1:.2f} |"
            print(f"| {genes:,} | ratio {args.members}:1 | {ratios} |")


if __name__ == "__main__":
    main()
