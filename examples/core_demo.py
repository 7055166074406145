"""Core demo: train ABMIL_Surv_PG on a toy cohort with a planted signal, calibrate, bundle, reload.

Runs in about a minute on 2 CPU cores with small dimensions; it shows the core pieces working
together (models, Cox loss, C-index, calibration, bundle). The full pipeline (synthetic slides,
feature extraction, the container) comes with the later issues.

    python examples/core_demo.py [--out runs/core-demo] [--epochs 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from survfusion.bundle import Bundle, load_bundle, save_bundle
from survfusion.calibration import RiskToTime
from survfusion.models import build_model, pad_bags
from survfusion.preprocess import ClinicalEncoder, RnaVectorizer, clinical_schema, reference_genes
from survfusion.survival import concordance_bootstrap, concordance_index, cox_loss

FEAT_DIM, N_GENES = 32, 200


def toy_cohort(n: int, rng: np.random.Generator):
    """Tiles of two kinds (their mix per patient matters), a gene program, clinical stage; PH times."""
    schema = clinical_schema()
    genes = reference_genes()[:N_GENES]
    frac_a = rng.beta(2, 2, n)
    program = rng.normal(size=n)
    records = []
    for _ in range(n):
        rec = {k: str(rng.choice(v)) for k, v in schema["categorical"].items()}
        rec["age"], rec["no_instillations"] = str(int(rng.normal(69, 9))), str(int(rng.uniform(5, 35)))
        records.append(rec)
    stage_t1 = np.array([r["stage"] == "T1HG" for r in records], dtype=float)
    log_hazard = 2.0 * (frac_a - 0.5) + 0.8 * program + 0.7 * stage_t1 + rng.normal(scale=0.3, size=n)
    centre_a = rng.normal(size=FEAT_DIM)
    bags, rna = [], []
    for i in range(n):
        n_tiles = int(rng.integers(20, 60))
        kind_a = rng.random(n_tiles) < frac_a[i]
        bags.append(
            torch.tensor(
                rng.normal(size=(n_tiles, FEAT_DIM)) + np.outer(kind_a, centre_a), dtype=torch.float32
            )
        )
        expr = rng.lognormal(3, 1, N_GENES)
        expr[:10] *= np.exp(0.7 * program[i])
        rna.append(dict(zip(genes, expr.tolist(), strict=True)))
    event_time = rng.exponential(40 * np.exp(-log_hazard))
    censor = rng.uniform(5, 200, n)
    return (
        bags,
        records,
        rna,
        genes,
        np.minimum(event_time, censor).round(1),
        event_time <= censor,
        log_hazard,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/core-demo")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    bags, records, rna_json, genes, time_m, event, oracle = toy_cohort(160, rng)
    train = rng.permutation(160)
    val, train = train[:32], train[32:]
    clinical = ClinicalEncoder.fit([records[i] for i in train])
    rna_vec = RnaVectorizer(genes, log1p=True)
    clin_x = torch.tensor(np.stack([clinical.transform(r).values for r in records]))
    rna_x = torch.tensor(np.stack([rna_vec.transform(r).values for r in rna_json]))
    model = build_model("ABMIL_Surv_PG", feat_dim=FEAT_DIM, rna_dim=N_GENES)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5)
    t_ = torch.tensor(time_m)
    e_ = torch.tensor(event)

    def risks(idx):
        model.eval()
        with torch.no_grad():
            feats, mask = pad_bags([bags[i] for i in idx])
            return model(feats, clin_x[idx], rna_x[idx], mask).double().numpy()

    for epoch in range(args.epochs):
        model.train()
        for batch in np.array_split(rng.permutation(train), len(train) // 8):
            feats, mask = pad_bags([bags[i] for i in batch])
            loss = cox_loss(model(feats, clin_x[batch], rna_x[batch], mask), t_[batch], e_[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (epoch + 1) % 10 == 0:
            c_val = concordance_index(time_m[val], event[val], risks(val))
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.3f}  val C-index {c_val:.3f}")

    cal = RiskToTime().fit(risks(train), time_m[train], event[train])
    bundle = Bundle("ABMIL_Surv_PG", model, clinical, rna_vec, cal, config=vars(args))
    path = save_bundle(bundle, f"{args.out}/bundle")
    loaded = load_bundle(path)
    feats, mask = pad_bags([bags[i] for i in val])
    r_val = loaded.risk(feats, clin_x[val], rna_x[val], mask)
    months = loaded.months(r_val)
    ci = concordance_bootstrap(time_m[val], event[val], -months, n_boot=500)
    print(f"bundle written to {path} and reloaded")
    print(
        f"held-out C-index of predicted months: {ci.estimate:.3f} (95% CI {ci.low:.3f}-{ci.high:.3f}); "
        f"of risks: {concordance_index(time_m[val], event[val], r_val):.3f}; "
        f"oracle: {concordance_index(time_m[val], event[val], oracle[val]):.3f}"
    )
    print(f"predicted months for the first 5 held-out patients: {np.round(months[:5], 1).tolist()}")
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
