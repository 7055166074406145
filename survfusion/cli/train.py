"""``python -m survfusion train``, ``evaluate`` and ``compare``: argument handling only."""

from __future__ import annotations

import argparse

from survfusion.errors import UserError


def _cohort_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cohort",
        required=True,
        help="cohort folder (outcomes.csv, slides/, rna/, clinical/), or the CHIMERA release as downloaded "
        "(data/<pid>/<pid>_CD.json ...; outcomes from the clinical JSON)",
    )
    p.add_argument("--features", required=True, help="the cohort's feature files (extract, import-features)")
    _qc_arg(p)


def _qc_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--qc",
        choices=("report", "exclude"),
        default="report",
        help="a release's task3_quality_control.csv: report the cases it flags and keep them, or exclude "
        "them (each with a line; survfusion.training.release documents the rule)",
    )


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")


def add_train_parsers(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a cohort's features (the paper's recipe by default)",
        epilog="For a first run: --config configs/synthetic-fast.json (log1p RNA over the 2,048 genes of "
        "highest training variance). Without --config, training follows the paper's text: raw DESeq2 "
        "values of all 19,359 genes, about 4x slower per epoch, with risks in the hundreds that then "
        "show in tables and figures (docs/RESULTS.md measures both). configs/README.md lists the others.",
    )
    _cohort_args(p)
    p.add_argument(
        "--model",
        help="registered model name (python -m survfusion models), a linear baseline, auto (choose "
        "among --candidates by inner cross-validation and package the winner) or blend (fit every "
        "candidate and package the average of their risks); default: the config's, ABMIL_Surv_PG",
    )
    p.add_argument(
        "--candidates",
        help="with --model auto or blend: JSON/YAML list of candidates (default: the documented list)",
    )
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        help="JSON/YAML file overriding any TrainConfig setting; repeat it to layer files (later wins)",
    )
    p.add_argument("--max-epochs", type=int, help="override the config's max_epochs (the paper: 200)")
    p.add_argument("--seed", type=int, help="override the config's seed (split, initialisation, batches)")
    p.add_argument(
        "--folds",
        type=int,
        help="k-fold cross-validation instead of one 85:15 split (with --ensemble: 5 unless given)",
    )
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="one bundle of all fold models, calibrated on their out-of-fold risks (measured against "
        "the single split: docs/RESULTS.md)",
    )
    p.add_argument(
        "--seeds", type=int, default=1, help="with --ensemble: deal the folds again with this many seeds"
    )
    _device_arg(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("evaluate", help="score a bundle on a cohort: tables and figures")
    p.add_argument("--bundle", required=True, help="a bundle folder, or the training run folder holding it")
    _cohort_args(p)
    p.add_argument("--out", required=True, help="folder for cases.csv, metrics.json and the figures")
    p.add_argument(
        "--cases",
        default="auto",
        help="patients to score: test (the cohort's patients the bundle never saw: honest), val (a "
        "single run's validation split: optimistic), train or all (in-sample where the bundle trained "
        "on them); auto: val for a single run, else test, else all",
    )
    p.add_argument("--heatmaps", type=int, default=3, help="attention heatmaps for this many cases")
    p.add_argument("--heatmap-cases", nargs="+", metavar="CASE_ID", help="heatmaps for these cases instead")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser(
        "package", help="assemble the model directory (bundle + encoder weights) for the container"
    )
    p.add_argument("--run", required=True, help="a training run folder (its bundle/ is used), or a bundle")
    p.add_argument(
        "--encoder-weights", required=True, help="the tile encoder's weights used for the features"
    )
    p.add_argument("--out", default="model", help="model directory to fill")
    p.add_argument(
        "--accept-imported-tiling",
        action="store_true",
        help="package a bundle trained on imported features although the container would not tile and "
        "embed the slides exactly as they were (package names each difference)",
    )
    p.set_defaults(func=run_package)

    p = sub.add_parser(
        "outer-test",
        help="single split vs fold ensemble on outer test sets no training step ever sees (docs/RESULTS.md)",
    )
    _cohort_args(p)
    p.add_argument("--out", required=True, help="protocol folder (finished units are kept and skipped)")
    p.add_argument(
        "--models",
        nargs="+",
        default=["ABMIL_Surv_PG", "ABMIL_Surv"],
        help="registered model names (each as single split and ensemble) and classical baselines "
        "(CoxPH_Clin, CoxNet_ClinRNA, RSF_ClinRNA), all on the same outer test sets",
    )
    p.add_argument("--config", action="append", default=[], help="as for train (layered, later wins)")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--max-epochs", type=int, help="override the config's max_epochs")
    p.add_argument("--outer", type=int, default=5, help="outer test sets (at least 5)")
    p.add_argument("--folds", type=int, default=5, help="folds of each ensemble")
    p.add_argument("--only", type=int, nargs="+", help="run only these outer folds (parallel processes)")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=("single", "ensemble", "auto", "blend"),
        help="a deep model's methods to run (default: single and ensemble; single where only auto or "
        "blend is named); auto adds every candidate of --candidates and the selection among them by "
        "inner cross-validation on each pool (nested: its outer score is the whole procedure's); blend "
        "adds the average of every blendable candidate fitted on the pool",
    )
    p.add_argument(
        "--candidates",
        help="JSON/YAML list of {name, model, config, method} for auto and blend (default: the "
        "documented list, survfusion.training.selection.DEFAULT_CANDIDATES)",
    )
    p.add_argument("--report", action="store_true", help="only write the report of the finished units")
    _device_arg(p)
    p.set_defaults(func=run_outer_test)

    p = sub.add_parser("compare", help="runs side by side (the paper's Table 2)")
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.json)")
    p.add_argument("--out", help="also write the table as Markdown here")
    p.set_defaults(func=run_compare)


def _config(args: argparse.Namespace, keys=("model", "max_epochs", "seed")):
    """TrainConfig from the --config files (later wins), then the command line's settings."""
    from survfusion.training.config import TrainConfig, read_config_file

    overrides = {}
    for path in args.config:
        overrides.update(read_config_file(path))
    for key in keys:
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    return TrainConfig.from_overrides(overrides)


def run_outer_test(args: argparse.Namespace) -> int:
    from pathlib import Path

    from survfusion.training.outer_report import report
    from survfusion.training.protocol import run_protocol

    if not args.report:
        from survfusion.nets.registry import check_model_name
        from survfusion.training.baselines import is_baseline
        from survfusion.training.dataset import load_cohort

        cfg = _config(args, keys=("max_epochs", "seed"))
        for name in args.models:
            if not is_baseline(name):
                check_model_name(name)
        from survfusion.training.selection import read_candidates

        candidates = read_candidates(args.candidates) if args.candidates else None
        data = load_cohort(args.cohort, args.features, qc=args.qc)
        run_protocol(
            data, cfg, args.out, models=args.models, outer=args.outer, folds=args.folds, only=args.only,
            methods=args.methods, candidates=candidates, cohort_dir=args.cohort, device=args.device,
        )  # fmt: skip
    table = report(args.out)
    (Path(args.out) / "report.md").write_text(table + "\n")
    print(table)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from survfusion.training.dataset import load_cohort
    from survfusion.training.folds import run_cross_validation
    from survfusion.training.train import SELECTED_NOTE, run_training

    if args.seeds != 1 and not args.ensemble:
        raise UserError("--seeds needs --ensemble")
    from survfusion.nets.registry import check_model_name
    from survfusion.training.baselines import is_baseline

    if args.model in ("auto", "blend"):
        return _train_auto(args)
    cfg = _config(args)
    if not is_baseline(cfg.model):
        check_model_name(cfg.model)  # before anything is loaded or printed
    elif args.ensemble or args.folds:
        raise UserError(f"train: {cfg.model} is a classical baseline: it trains on the single split")
    data = load_cohort(args.cohort, args.features, qc=args.qc)
    n_events = int(data.event.sum())
    print(f"train: {cfg.model}, {len(data)} patients ({n_events} events), seed {cfg.seed} -> {args.out}")
    if args.ensemble:
        from survfusion.training.ensemble import DEFAULT_FOLDS, describe, run_ensemble

        m = run_ensemble(
            data,
            cfg,
            args.out,
            folds=args.folds or DEFAULT_FOLDS,
            seeds=args.seeds,
            cohort_dir=args.cohort,
            device=args.device,
        )
        print(f"train: {describe(m)}")
    elif args.folds:
        summary = run_cross_validation(
            data, cfg, args.out, folds=args.folds, cohort_dir=args.cohort, device=args.device
        )
        mean, sd = summary["val_c_index_mean"], summary["val_c_index_sd"]
        last, last_sd = summary["val_c_index_last_epoch_mean"], summary["val_c_index_last_epoch_sd"]
        print(
            f"train: {args.folds}-fold validation C-index at each fold's best epoch {mean:.3f} ± {sd:.3f}, "
            f"at its last epoch {last:.3f} ± {last_sd:.3f} [{summary['note']}]"
        )
    elif is_baseline(cfg.model):
        from survfusion.training.baselines import run_baseline_training

        m = run_baseline_training(data, cfg, args.out, cohort_dir=args.cohort)
        print(
            f"train: {cfg.model} ({m['baseline']}); validation C-index {m['val_c_index']:.3f} on "
            f"{m['n_val']} patients (no epoch chosen on them), {m['nonzero_coefficients']} of "
            f"{m['inputs']} coefficients non-zero"
        )
    else:
        m = run_training(data, cfg, args.out, cohort_dir=args.cohort, device=args.device)
        if not m.get("n_val"):  # a fixed-epoch recipe (val_fraction 0): nothing held out to report
            print(
                f"train: {m['epochs_run']} epochs on all {m['n_train']} patients, none held out (a fixed "
                f"epoch count: outer-test scores the recipe); {m['seconds']:.0f} s"
            )
            return 0
        oracle = f"; oracle {_f(m.get('oracle_val_c_index'))}" if "oracle_val_c_index" in m else ""
        print(
            f"train: best epoch {m['best_epoch']} of {m['epochs_run']}; validation C-index at the best "
            f"epoch {_f(m['val_c_index'])} (risk {_f(m['val_c_index_risk'])}{oracle}), at the last epoch "
            f"{_f(m['val_c_index_last_epoch'])} [{SELECTED_NOTE}]; {m['seconds']:.0f} s"
        )
    return 0


def _train_auto(args: argparse.Namespace) -> int:
    """``train --model auto``: the selection on the whole cohort, the winner fitted on all of it;
    ``--model blend``: every blendable candidate fitted on all of it, their risks averaged."""
    from survfusion.training.dataset import load_cohort
    from survfusion.training.selection import read_candidates, train_auto

    if args.ensemble or args.folds or args.seeds != 1:
        raise UserError(
            f"train --model {args.model}: the candidates say how each trains (--candidates), not --folds"
        )
    cfg = _config(args, keys=("max_epochs", "seed"))
    candidates = read_candidates(args.candidates)
    data = load_cohort(args.cohort, args.features, qc=args.qc)
    print(f"train: {args.model} over {len(candidates)} candidates, {len(data)} patients -> {args.out}")
    if args.model == "blend":
        from survfusion.training.blend import train_blend

        bundle = train_blend(
            data, cfg, candidates, args.out, cohort_dir=args.cohort, device=args.device, log=print
        )
        names = ", ".join(bundle.metrics["blend"]["candidates"])
        print(f"train: blend of {names} ({len(bundle.members)} members); bundle in {args.out}/bundle")
        return 0
    sel = train_auto(data, cfg, candidates, args.out, cohort_dir=args.cohort, device=args.device, log=print)
    for row in sel.to_dict()["candidates"]:
        print(f"  {row['name']:32s} inner C-index {row['inner_c_index']:.3f}")
    print(f"train: auto chose {sel.winner} [{sel.to_dict()['why']}]; bundle in {args.out}/bundle")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from survfusion.training.evaluate import evaluate, summary_lines

    metrics = evaluate(
        args.bundle,
        args.cohort,
        args.features,
        args.out,
        cases=args.cases,
        heatmaps=args.heatmaps,
        heatmap_cases=args.heatmap_cases,
        qc=args.qc,
    )
    print("\n".join(summary_lines(metrics, args.out)))
    return 0


def run_package(args: argparse.Namespace) -> int:
    from pathlib import Path

    from survfusion.serving.bundle_io import resolve_bundle_dir
    from survfusion.serving.modeldir import write_model_dir

    out = write_model_dir(
        args.out, resolve_bundle_dir(args.run), args.encoder_weights,
        accept_imported_tiling=args.accept_imported_tiling,
    )  # fmt: skip
    print(
        f"package: {out}/bundle + {out}/encoder/ ({Path(args.encoder_weights).name} as safetensors; "
        "checked by loading)"
    )
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from survfusion.training.evaluate import compare_runs

    table = compare_runs(args.runs)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    if not table:
        raise UserError("compare: no run had a metrics.json")
    return 0
