"""``python -m survfusion extract`` and ``init-encoder``: argument handling and the cohort loop only."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from survfusion.errors import UserError
from survfusion.features.request import PRECISION_HELP
from survfusion.progress import progress, write


def add_extract_parser(sub) -> None:
    from survfusion.features.request import ExtractConfig  # the defaults live there, once

    p = sub.add_parser("extract", help="tile slides inside their tissue masks and embed the tiles")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--slide", help="one slide (its case id is the file name without extension)")
    src.add_argument(
        "--cohort",
        help="a cohort folder (slides/<case_id>.tif with masks/<case_id>.tif) or the CHIMERA release as "
        "downloaded (data/<pid>/<pid>_HE.tif with <pid>_HE_mask.tif)",
    )
    src.add_argument("--list", help="a CSV with columns slide[, mask, case_id]")
    p.add_argument("--mask", help="tissue mask for --slide")
    from survfusion.cli.train import _qc_arg

    _qc_arg(p)
    p.add_argument("--out", required=True, help="output folder: one <case_id>.h5 per slide")
    p.add_argument(
        "--encoder",
        default="uni",
        help="tile encoder: uni (the paper's), uni2-h, virchow2, h-optimus-0, h-optimus-1, gigapath, "
        "conch-v1.5, phikon-v2, vit-tiny (tests); NAME@D cuts it to D blocks; "
        "'python -m survfusion encoders' compares them",
    )
    p.add_argument(
        "--weights",
        required=True,
        help="encoder weights as the publisher ships them (.bin/.pth/.safetensors), loaded strictly",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", help=PRECISION_HELP)
    p.add_argument(
        "--cast-weights", action="store_true", help="hold the weights in fp16/bf16 instead of autocast"
    )
    d = ExtractConfig()
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="tiles per batch (default: 128 on a GPU, 16 on a CPU)",
    )
    p.add_argument(
        "--target-spacing",
        type=float,
        help=f"µm/px of the tiles (1.0 = 10x; default: the encoder's, {d.target_spacing_um} for uni as "
        "in the paper)",
    )
    p.add_argument(
        "--tile-px",
        type=int,
        help=f"tile side in pixels at --target-spacing (default: the encoder's, {d.tile_px} for uni)",
    )
    p.add_argument(
        "--min-tissue", type=float, default=d.min_tissue, help="minimum tissue fraction of a kept tile"
    )
    p.add_argument(
        "--tolerance", type=float, default=d.tolerance, help="a level this close to the spacing is read as is"
    )
    p.add_argument("--spacing-um", type=float, help="override the slides' level-0 spacing")
    p.add_argument(
        "--max-tiles",
        type=int,
        help="keep a spatially uniform subset of at most N tiles per slide (time limits)",
    )
    p.add_argument("--threads", type=int, default=d.read_threads, help="tile-decoding threads")
    p.add_argument("--shard", default="0/1", help="process shard i of n (0-based), e.g. 2/8")
    p.set_defaults(func=run_extract)


def add_init_encoder_parser(sub) -> None:
    p = sub.add_parser("init-encoder", help="create random encoder weights locally (tests, demos)")
    p.add_argument(
        "--encoder",
        default="vit-tiny",
        help="encoder whose reference gets random weights (NAME@D: D blocks)",
    )
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.set_defaults(func=run_init_encoder)


def run_init_encoder(args: argparse.Namespace) -> int:
    from survfusion.features.weights import init_encoder_weights

    digest = init_encoder_weights(args.encoder, args.out, seed=args.seed)
    print(f"{args.out}: {args.encoder} weights, seed {args.seed}, sha256 {digest}")
    return 0


def _jobs(args: argparse.Namespace):
    from survfusion.training.cohort import SlideJob, cohort_jobs, list_jobs, parse_shard, shard

    if args.slide:
        jobs = [SlideJob(Path(args.slide).stem, Path(args.slide), Path(args.mask) if args.mask else None)]
    elif args.mask:
        raise UserError(
            "--mask goes with --slide; a cohort's masks live in masks/, a list's in its mask column"
        )
    else:
        jobs = cohort_jobs(args.cohort, qc=args.qc) if args.cohort else list_jobs(args.list)
    return shard(jobs, *parse_shard(args.shard))


def run_extract(args: argparse.Namespace) -> int:
    from survfusion.features.extract import extract_slide, feature_request
    from survfusion.features.h5 import cache_matches, feature_path
    from survfusion.features.request import ExtractConfig
    from survfusion.features.tile_encoder import TileEncoder

    jobs = _jobs(args)
    encoder = TileEncoder(
        args.encoder,
        args.weights,
        device=args.device,
        precision=args.precision,
        cast_weights=args.cast_weights,
    )
    cfg = ExtractConfig(
        target_spacing_um=args.target_spacing or encoder.spec.spacing_um,
        tile_px=args.tile_px or encoder.spec.tile_px,
        min_tissue=args.min_tissue,
        tolerance=args.tolerance,
        spacing_override_um=args.spacing_um,
        max_tiles=args.max_tiles,
        batch_size=args.batch_size,
        read_threads=args.threads,
    )
    request = feature_request(encoder, cfg)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"extract: {len(jobs)} slide(s) -> {out_dir} | {encoder.name} on {encoder.device} "
        f"({encoder.precision}) | {cfg.tile_px} px at {cfg.target_spacing_um} µm/px | "
        f"{encoder.embed_dim}-d embeddings",
        flush=True,
    )
    if encoder.precision_note:
        print(f"extract: {encoder.precision_note}", flush=True)
    written, skipped, failed, tiles, t0 = 0, 0, [], 0, time.perf_counter()
    for job in progress(jobs, unit="slide", desc="slides", disable=len(jobs) < 2):
        out = feature_path(out_dir, job.case_id)
        try:
            if cache_matches(out, request):
                skipped += 1
                continue
            with progress(unit="tile", desc=job.case_id, nested=True) as bar:

                def on_batch(n, total, bar=bar):
                    bar.total = total
                    bar.update(n)

                result = extract_slide(job.slide, job.mask, out, encoder, cfg, on_batch=on_batch)
            for warning in result.warnings:
                write(f"warning: {job.case_id}: {warning}")
            written += 1
            tiles += len(result.features)
        except (UserError, OSError) as err:  # the slide's fault; device faults and bugs stop the run
            failed.append((job.case_id, f"{type(err).__name__}: {err}"))
            write(f"FAILED {job.case_id}: {err}")
    elapsed = time.perf_counter() - t0
    print(
        f"extract: {len(jobs)} slide(s): {written} written ({tiles} tiles, {tiles / max(elapsed, 1e-9):.1f} "
        f"tiles/s), {skipped} skipped (already done), {len(failed)} failed; {elapsed:.1f} s"
    )
    for case_id, message in failed:
        print(f"  failed {case_id}: {message}", file=sys.stderr)
    return 1 if failed else 0


def add_encoders_parser(sub) -> None:
    p = sub.add_parser("encoders", help="list the tile encoders: width, size, cost, input, T4 time estimate")
    p.add_argument("--tiles", type=int, default=10_000, help="tiles per slide for the T4 time column")
    p.set_defaults(func=run_encoders)


def encoder_table(tiles: int) -> list[dict]:
    """One row per registered encoder (parameters and FLOPs counted on the meta device)."""
    from survfusion.features.encoders import (
        ENCODERS,
        auto_precision,
        flops_per_tile,
        parameter_count,
        t4_seconds,
    )

    rows = []
    for name, spec in ENCODERS.items():
        fast, slow = t4_seconds(name, tiles)
        rows.append(
            {
                "name": name,
                "model": spec.title,
                "width": spec.embed_dim,
                "params_M": parameter_count(name) / 1e6,
                "GFLOPs_per_tile": flops_per_tile(name) / 1e9,
                "input": f"{spec.tile_px} px @ {spec.spacing_um:g} µm/px -> "
                f"{'centre ' if spec.fit == 'crop' else ''}{spec.input_px}",
                "precision": f"{spec.precision} (T4: {auto_precision(spec, cuda_major=7)})",
                "t4_s": (fast, slow),
                "weights": spec.checkpoint,
            }
        )
    return rows


def run_encoders(args: argparse.Namespace) -> int:
    from survfusion.features.encoders import T4_SUSTAINED_TFLOPS

    if args.tiles < 1:
        raise UserError("encoders: --tiles must be at least 1")
    rows = encoder_table(args.tiles)
    head = ["encoder", "width", "params", "GFLOPs/tile", "input", "precision (ref; T4 auto)",
            f"T4 s / {args.tiles:,} tiles", "weights keys"]  # fmt: skip
    body = [
        [
            r["name"],
            str(r["width"]),
            f"{r['params_M']:,.0f} M",
            f"{r['GFLOPs_per_tile']:.1f}",
            r["input"],
            r["precision"],
            f"{r['t4_s'][0]:,.0f}-{r['t4_s'][1]:,.0f}",
            r["weights"],
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *body]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    lo16, hi16 = T4_SUSTAINED_TFLOPS["fp16"]
    lo32, hi32 = T4_SUSTAINED_TFLOPS["fp32"]
    print(
        f"\nT4 time = FLOPs / a sustained {lo16}-{hi16} TFLOP/s in fp16 (13-30% of its 65 TFLOP/s "
        f"tensor-core peak, the range that gives UNI 70-160 tiles/s) or {lo32}-{hi32} TFLOP/s in fp32 "
        "(of 8.1): an estimate, not a measurement. vit-tiny is for tests; NAME@D is entry NAME cut to "
        "D blocks."
    )
    return 0
