"""Seconds per case of ``explain`` (survfusion/training/explain.py) on the CPU: the modality Shapley
values (8 risk evaluations), integrated gradients over clinical fields and genes (2 x 32 steps per
member), the tile table and the QuPath GeoJSON; no heatmap (it reads the slide). Two cases:

- ``sample``: the sample case's size, 28 vit-tiny tiles (192-d), an ABMIL_Surv_PG over 2,048 genes;
- ``uni-10k``: a 10,000-tile bag at UNI's width (1,024-d), ABMIL_Surv_PG at the paper's size
  (19,359 genes, 41.6M parameters), random weights.

Each is timed with the slide embedding computed once for the gradient steps (the kit's path) and,
interleaved in the same process, with the whole model run at every step (``--full``'s baseline), so
the ratio is what the shortcut buys. Medians of ``--repeats``.

    python bench/explain.py [--repeats 3] [--threads 2]
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
from survfusion.nets.models import Embeddings, build_model, pad_bags
from survfusion.serving.bundle import Bundle, Member
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer, reference_genes
from survfusion.synth.cohort import make_patients, patient_rna
from survfusion.training import explain


def _full_ig(model, bag, clin, genes, which, baseline):
    """The baseline: the whole model (slide included) at every gradient step."""
    feats, mask = pad_bags([bag])
    x = clin if which == "clinical" else genes
    grads = torch.zeros_like(x, dtype=torch.float64)
    for a in (np.arange(explain.IG_STEPS) + 0.5) / explain.IG_STEPS:
        point = (baseline + float(a) * (x - baseline)).detach().requires_grad_(True)
        c, g = (point, genes) if which == "clinical" else (clin, point)
        e = model.encode(feats, c, g, mask)
        (grad,) = torch.autograd.grad(
            model.fuse(Embeddings(e.hist, e.rna, e.clinical, e.attention)).sum(), point
        )
        grads += grad.double()
    return (grads / explain.IG_STEPS)[0].numpy(), (x - baseline)[0].double().numpy()


def _case(tiles: int, width: int, genes: int):
    rng = np.random.default_rng(0)
    patients = make_patients(30, seed=1)
    clinical = ClinicalEncoder.fit([p.clinical for p in patients])
    rna = RnaVectorizer(reference_genes()[:genes], log1p=True)
    model = build_model("ABMIL_Surv_PG", feat_dim=width, rna_dim=genes)
    means = {"hist": rng.normal(size=512), "rna": rng.random(128), "clinical": rng.random(27)}
    cal = RiskToTime().fit(
        rng.normal(size=30), [p.time_months for p in patients], [p.event for p in patients]
    )
    bundle = Bundle("ABMIL_Surv_PG", [Member(model, clinical, rna, means)], cal)
    bag = torch.from_numpy(rng.normal(size=(tiles, width)).astype(np.float32))
    side = int(np.ceil(np.sqrt(tiles)))
    coords = np.array([(i % side, i // side) for i in range(tiles)]) * 448
    return bundle, bag, coords, patients[0].clinical, patient_rna(patients[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kit_ig = explain._ig
    print(f"torch {torch.__version__}, {args.threads} threads; median of {args.repeats}")
    print("| case | tiles x width | genes | kit s / case | whole model at every step s / case | ratio |")
    print("|---|---|---|---|---|---|")
    for name, tiles, width, genes in (("sample", 28, 192, 2048), ("uni-10k", 10_000, 1024, 19_359)):
        bundle, bag, coords, clin, rna = _case(tiles, width, genes)
        times: dict[str, list[float]] = {"kit": [], "full": []}
        with tempfile.TemporaryDirectory() as d:
            for _ in range(args.repeats):
                for mode in ("kit", "full"):
                    explain._ig = kit_ig if mode == "kit" else _full_ig
                    t0 = time.perf_counter()
                    explain.explain_inputs(bundle, name, bag, coords, 448, clin, rna, Path(d))
                    times[mode].append(time.perf_counter() - t0)
        explain._ig = kit_ig
        kit, full = statistics.median(times["kit"]), statistics.median(times["full"])
        print(f"| {name} | {tiles:,} x {width} | {genes:,} | {kit:.2f} | {full:.2f} | {full / kit:.1f}x |")


if __name__ == "__main__":
    main()
