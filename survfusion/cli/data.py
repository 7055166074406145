"""``python -m survfusion synth``: write a synthetic cohort and/or a grand-challenge sample case."""

from __future__ import annotations

import argparse
import json
import time

from survfusion.errors import UserError
from survfusion.progress import progress


def add_synth_parser(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic cohort (real formats, planted signal)")
    p.add_argument("--out", help="cohort folder to write")
    p.add_argument("--patients", type=int, default=176, help="patients (the public CHIMERA cohort has 176)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patients, their outcomes and slides")
    p.add_argument("--slide-px", type=int, default=8192, help="level-0 side of each slide (multiple of 896)")
    p.add_argument("--workers", type=int, default=None, help="processes writing slides (default: up to 2)")
    p.add_argument(
        "--world",
        default="default",
        help="where the planted signal lies: default, histology, needle, clinical, null "
        "(survfusion.synth.worlds; oracle.json gives the noise-free and per-term C-index)",
    )
    p.add_argument(
        "--no-slides",
        action="store_true",
        help="leave out the slides and masks (outcomes, RNA, clinical and oracle only: for synth-features)",
    )
    p.add_argument(
        "--layout",
        choices=("kit", "release"),
        default="kit",
        help="kit: outcomes.csv, slides/, masks/, rna/, clinical/; release: the CHIMERA release as "
        "downloaded "
        "(data/<pid>/..., outcomes inside <pid>_CD.json, a QC CSV, and the organisers' .pt/.npy features)",
    )
    p.add_argument(
        "--release-encoder",
        default="uni",
        help="with --layout release: the encoder whose width the organisers' .pt features take",
    )
    p.add_argument("--case-dir", help="also write one patient as a grand-challenge job folder here")
    p.add_argument("--case-slide-px", type=int, default=2688, help="slide size of the --case-dir patient")
    p.set_defaults(func=run_synth)
    p = sub.add_parser(
        "synth-features",
        help="synthetic tile features of any encoder's width for a synthetic cohort (no encoder run)",
    )
    p.add_argument("--cohort", required=True, help="a cohort written by 'synth'")
    p.add_argument("--out", required=True, help="features folder to write (<case_id>.h5)")
    p.add_argument("--encoder", default="uni", help="encoder whose width the files take")
    p.add_argument("--weights", help="that encoder's weights file, hashed (not run) so 'package' accepts it")
    p.add_argument("--tiles", type=int, default=64, help="tiles per patient")
    p.add_argument("--seed", type=int, default=0, help="seed of the class prototypes and the noise")
    p.set_defaults(func=run_synth_features)


def run_synth(args: argparse.Namespace) -> int:
    from survfusion.synth.cohort import write_case, write_cohort

    if not args.out and not args.case_dir:
        raise UserError("synth: give --out COHORT, --case-dir DIR, or both")
    if args.out:
        t0 = time.perf_counter()
        slides = 0 if args.no_slides else args.patients
        with progress(total=slides, unit="slide", desc="synth", disable=not slides) as bar:
            summary = write_cohort(
                args.out,
                patients=args.patients,
                seed=args.seed,
                slide_px=args.slide_px,
                workers=args.workers,
                progress=lambda _: bar.update(),
                world=args.world,
                slides=not args.no_slides,
                layout=args.layout,
            )
        if args.layout == "release":
            from survfusion.features.encoders import encoder_spec
            from survfusion.synth.features import write_release_features

            write_release_features(
                args.out, width=encoder_spec(args.release_encoder).embed_dim, seed=args.seed
            )
        print(
            f"synth: {args.patients} patients of the {summary['world']} world -> {args.out} in "
            f"{time.perf_counter() - t0:.0f} s; event rate {summary['event_rate']:.2f}; C-index of the "
            f"noise-free log-hazard {summary['noise_free_c_index']:.3f} (with its noise, which no "
            f"model can know: {summary['oracle_c_index']:.3f})"
        )
        print(json.dumps({"terms": summary["terms_c_index"], "seen": summary["seen_c_index"]}))
    if args.case_dir:
        path = write_case(args.case_dir, seed=args.seed, slide_px=args.case_slide_px)
        print(f"synth: grand-challenge case -> {path}")
    return 0


def run_synth_features(args: argparse.Namespace) -> int:
    from survfusion.synth.features import write_synthetic_features

    width = write_synthetic_features(
        args.cohort, args.out, encoder=args.encoder, weights=args.weights, tiles=args.tiles, seed=args.seed
    )
    print(
        f"synth-features: {args.cohort} -> {args.out}: {args.tiles} tiles per patient, "
        f"{width}-d ({args.encoder})"
    )
    return 0
