"""Where a training step of ABMIL_Surv_PG spends its time (batch 2, ~70 tiles of 192-d features).

The RNA encoder's first layer holds 19,359 x 2,048 = 39.6M of the model's 41.6M parameters, so a
step is dominated by its weight gradient and by the optimiser update over it. Compared side by side:
all genes vs the top 2,048 (``rna_top_genes``), and Adam's default multi-tensor update vs the fused one.

    python bench/train_step.py [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from survfusion.nets.models import build_model, pad_bags
from survfusion.nets.survival import cox_loss


def measure(genes: int, fused: bool, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model("ABMIL_Surv_PG", feat_dim=192, rna_dim=genes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=fused or None)
    feats, mask = pad_bags([torch.randn(70, 192), torch.randn(60, 192)])
    clin, rna = torch.randn(2, 27), torch.rand(2, genes)
    time_m, event = torch.tensor([5.0, 9.0]), torch.tensor([1, 0])
    parts: dict[str, list[float]] = {"forward": [], "backward": [], "optimiser": []}
    for i in range(steps + 3):
        t0 = time.perf_counter()
        loss = cox_loss(model(feats, clin, rna, mask), time_m, event)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= 3:  # warm-up
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                parts[k].append(v)
    return {k: 1000 * statistics.median(v) for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"ABMIL_Surv_PG training step, batch 2, {threads} threads; medians of {args.steps} steps (ms)")
    rows = {}
    for genes in (19359, 2048):
        for fused in (False, True):
            rows[(genes, fused)] = measure(genes, fused, args.steps)
    base = sum(rows[(19359, False)].values())
    for (genes, fused), r in rows.items():
        total = sum(r.values())
        adam = "fused  " if fused else "foreach"
        print(
            f"genes {genes:>5}  adam {adam}  forward {r['forward']:6.1f}  backward {r['backward']:6.1f}  "
            f"optimiser {r['optimiser']:6.1f}  total {total:6.1f}  x{base / total:4.1f}"
        )


if __name__ == "__main__":
    main()
