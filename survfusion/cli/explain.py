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
    p.add_argument("--bundle", required=True, help="a bundle, or the run or model directory holding it")
    p.add_argument("--cohort", required=True, help="cohort folder or the CHIMERA release")
    p.add_argument("--features", required=True, help="the cohort's feature files")
    p.add_argument("--cases", nargs="+", metavar="CASE_ID", help="cases to explain (default: the first 3)")
    p.add_argument("--out", required=True, help="folder for <case>.json, .geojson, .md and _heatmap.png")
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from survfusion.serving.bundle_io import load_bundle, resolve_bundle_dir
    from survfusion.training.cohort import cohort_jobs
    from survfusion.training.dataset import load_cohort
    from survfusion.training.explain import explain_case

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
        r = explain_case(bundle, data, data.case_ids.index(cid), Path(args.out), slides.get(cid))
        s = r["shapley"]
        print(
            f"explain {cid}: {r['predicted_months']:.1f} months; risk {r['risk']:+.3f} = reference "
            f"{r['reference_risk']:+.3f} + slide {s['hist']:+.3f} + RNA {s['rna']:+.3f} + clinical "
            f"{s['clinical']:+.3f} -> {args.out}/{cid}.md"
        )
    return 0
