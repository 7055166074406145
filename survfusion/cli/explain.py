"""``python -m survfusion explain``: argument handling only (survfusion/training/explain.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from survfusion.errors import UserError


def add_explain_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="why a case got its number: modality Shapley values, top genes and fields, tiles as "
        "QuPath GeoJSON",
    )
    p.add_argument("--bundle", help="a bundle, or the run or model directory holding it (with --cohort)")
    p.add_argument("--cohort", help="cohort folder or the CHIMERA release (with --features)")
    p.add_argument("--features", help="the cohort's feature files")
    p.add_argument(
        "--case",
        help="instead of a cohort: a grand-challenge job folder (inputs.json ...), embedded as the container "
        "does with --model's encoder",
    )
    p.add_argument("--model", default="model", help="with --case: the model directory (package)")
    p.add_argument("--cases", nargs="+", metavar="CASE_ID", help="cases to explain (default: the first 3)")
    p.add_argument("--out", required=True, help="folder for <case>.json, .geojson, .md and _heatmap.png")
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from survfusion.features.h5 import feature_path, read_tile_classes
    from survfusion.serving.bundle_io import load_bundle, resolve_bundle_dir
    from survfusion.training.cohort import cohort_jobs
    from survfusion.training.dataset import load_cohort
    from survfusion.training.explain import explain_case

    if args.case:
        return _explain_job(args)
    if not (args.bundle and args.cohort and args.features):
        raise UserError("explain: give --bundle, --cohort and --features, or --case DIR [--model DIR]")
    bundle = load_bundle(resolve_bundle_dir(args.bundle))
    data = load_cohort(args.cohort, args.features)
    wanted = args.cases or data.case_ids[:3]
    unknown = [c for c in wanted if c not in data.case_ids]
    if unknown:
        raise UserError(f"explain: no such case in the cohort: {', '.join(unknown[:5])}")
    try:
        slides = {j.case_id: j.slide for j in cohort_jobs(args.cohort)}
    except UserError:
        slides = {}  # a cohort without slides: no heatmap, the rest as usual
    for cid in wanted:
        labels = read_tile_classes(feature_path(args.features, cid))  # None unless the file labels its tiles
        r = explain_case(bundle, data, data.case_ids.index(cid), Path(args.out), slides.get(cid), labels)
        s = r["shapley"]
        print(
            f"explain {cid}: {r['predicted_months']:.1f} months; risk {r['risk']:+.3f} = reference "
            f"{r['reference_risk']:+.3f} + slide {s['hist']:+.3f} + RNA {s['rna']:+.3f} + clinical "
            f"{s['clinical']:+.3f} -> {args.out}/{cid}.md"
        )
        if r["tiles"]["classes"]:
            c = r["tiles"]["classes"][0]
            print(
                f"explain {cid}: top {c['top_tiles']} tiles by attention are {c['top_share']:.0%} "
                f"{c['class']} against {c['bag_share']:.0%} of the bag ({c['enrichment']:.1f}x)"
            )
    return 0


def _explain_job(args: argparse.Namespace) -> int:
    """One grand-challenge case through the container's own path (``predict_case``), explained."""
    import sys

    from survfusion.serving.modeldir import load_model
    from survfusion.serving.predict import predict_case
    from survfusion.serving.sockets import find_case_files
    from survfusion.training.explain import explain_inputs

    def quiet(_: str) -> None:
        pass

    files = find_case_files(args.case)
    model = load_model(args.model, device="cpu")
    p = predict_case(files, model, log=quiet, warn=lambda m: print(f"explain: warning: {m}", file=sys.stderr))
    name = files.wsi.stem if files.wsi is not None else Path(args.case).name
    u = p.inputs
    r = explain_inputs(
        model.bundle, name, u["bag"], u["coords"], u["tile_lv0"], u["clinical"], u["rna"], Path(args.out),
        files.wsi, absent=u["replaced"],
    )  # fmt: skip
    s = r["shapley"]
    print(
        f"explain {name}: {r['predicted_months']:.1f} months; risk {r['risk']:+.3f} = reference "
        f"{r['reference_risk']:+.3f} + slide {s['hist']:+.3f} + RNA {s['rna']:+.3f} + clinical "
        f"{s['clinical']:+.3f} -> {args.out}/{name}.md"
    )
    return 0
