"""``python -m survfusion train``, ``evaluate`` and ``compare``: argument handling only."""

from __future__ import annotations

import argparse
import json

from survfusion.errors import UserError


def add_train_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a model on a cohort's features (the paper's recipe by default)")
    p.add_argument("--cohort", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--model", help="registered model name (python -m survfusion models)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        help="JSON/YAML file overriding any TrainConfig setting; repeat it to layer files (later wins)",
    )
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--folds", type=int, help="k-fold cross-validation instead of one 85:15 split")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    p.set_defaults(func=run_train)

    p = sub.add_parser("evaluate", help="score a bundle on a cohort: tables and figures")
    p.add_argument("--bundle", required=True)
    p.add_argument("--cohort", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cases", choices=("train", "val", "all"), default="val")
    p.add_argument("--heatmaps", type=int, default=3, help="attention heatmaps for this many cases")
    p.add_argument("--heatmap-cases", nargs="+", metavar="CASE_ID", help="heatmaps for these cases instead")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser(
        "package", help="assemble the model directory (bundle + encoder weights) for the container"
    )
    p.add_argument("--run", required=True, help="a training run folder (its bundle/ is used)")
    p.add_argument(
        "--encoder-weights", required=True, help="the tile encoder's weights used for the features"
    )
    p.add_argument("--out", default="model", help="model directory (default: model/)")
    p.set_defaults(func=run_package)

    p = sub.add_parser("compare", help="runs side by side (the paper's Table 2)")
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.json)")
    p.add_argument("--out", help="also write the table as Markdown here")
    p.set_defaults(func=run_compare)


def run_train(args: argparse.Namespace) -> int:
    from survfusion.dataset import load_cohort
    from survfusion.train import TrainConfig, read_config_file, run_cross_validation, run_training

    overrides = {}
    for path in args.config:
        overrides.update(read_config_file(path))
    for key in ("model", "max_epochs", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = TrainConfig.from_overrides(overrides)
    data = load_cohort(args.cohort, args.features)
    n_events = int(data.event.sum())
    print(f"train: {cfg.model}, {len(data)} patients ({n_events} events), seed {cfg.seed} -> {args.out}")
    if args.folds:
        summary = run_cross_validation(
            data, cfg, args.out, folds=args.folds, cohort_dir=args.cohort, device=args.device
        )
        mean, sd = summary["val_c_index_mean"], summary["val_c_index_sd"]
        print(f"train: {args.folds}-fold C-index {mean:.3f} ± {sd:.3f}")
    else:
        m = run_training(data, cfg, args.out, cohort_dir=args.cohort, device=args.device)
        oracle = f"; oracle {m['oracle_val_c_index']:.3f}" if "oracle_val_c_index" in m else ""
        print(
            f"train: best epoch {m['best_epoch']} of {m['epochs_run']}; held-out C-index "
            f"{m['val_c_index']:.3f} (risk {m['val_c_index_risk']:.3f}{oracle}); {m['seconds']:.0f} s"
        )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from survfusion.evaluate import evaluate

    metrics = evaluate(
        args.bundle,
        args.cohort,
        args.features,
        args.out,
        cases=args.cases,
        heatmaps=args.heatmaps,
        heatmap_cases=args.heatmap_cases,
    )
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=1))
    return 0


def run_package(args: argparse.Namespace) -> int:
    from pathlib import Path

    from survfusion.modeldir import write_model_dir

    out = write_model_dir(args.out, Path(args.run) / "bundle", args.encoder_weights)
    print(
        f"package: {out}/bundle + {out}/encoder/ ({Path(args.encoder_weights).name} as safetensors; "
        "checked by loading)"
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from survfusion.evaluate import compare_runs

    table = compare_runs(args.runs)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    if not table:
        raise UserError("compare: no run had a metrics.json")
    return 0
