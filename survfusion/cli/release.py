"""``python -m survfusion import-features`` and ``cohort-card``: the CHIMERA release as downloaded."""

from __future__ import annotations

import argparse
from pathlib import Path

from survfusion.errors import UserError
from survfusion.progress import progress


def add_release_parsers(sub) -> None:
    from survfusion.features.importer import ORGANISERS_MAX_TILES
    from survfusion.features.request import PRECISIONS

    p = sub.add_parser(
        "import-features",
        help="the organisers' .pt + .npy tile features -> this kit's feature files (<pid>.h5)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--release", help="the release folder (its features/features/ and features/coordinates/)"
    )
    src.add_argument("--pt-dir", help="a folder of <pid>_HE.pt files (with --npy-dir)")
    p.add_argument("--npy-dir", help="the folder of their <pid>_HE.npy coordinates (with --pt-dir)")
    p.add_argument("--out", required=True, help="feature folder to write (<pid>.h5)")
    p.add_argument("--encoder", default="uni", help="the encoder that made them (its width is checked)")
    p.add_argument(
        "--encoder-weights",
        help="that encoder's weights file, hashed (not run), so 'package' can check the container "
        "embeds alike",
    )
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="the precision they were made at")
    p.add_argument("--min-tissue", type=float, help="their tissue rule, if you know it (unknown by default)")
    p.add_argument(
        "--max-tiles", type=int, default=ORGANISERS_MAX_TILES, help="their cap on tiles per slide (0: none)"
    )
    p.set_defaults(func=run_import_features)

    p = sub.add_parser(
        "cohort-card",
        help="a data card of a cohort (Markdown + figure) from file headers: what the container will meet",
    )
    p.add_argument("--cohort", required=True, help="a cohort folder or the CHIMERA release as downloaded")
    p.add_argument("--out", required=True, help="folder for card.md, card.json and card.png")
    from survfusion.cli.train import _qc_arg

    _qc_arg(p)
    p.set_defaults(func=run_cohort_card)


def run_import_features(args: argparse.Namespace) -> int:
    from survfusion.features.importer import import_features
    from survfusion.training.release import COORDS_DIR, FEATURES_DIR, release_data_dir, release_root

    if args.release:
        data = release_data_dir(args.release)
        root = release_root(data) if data else Path(args.release)
        pt_dir, npy_dir = root / FEATURES_DIR, root / COORDS_DIR
    else:
        if not args.npy_dir:
            raise UserError("import-features: --pt-dir needs --npy-dir (the coordinates)")
        pt_dir, npy_dir = Path(args.pt_dir), Path(args.npy_dir)
    n = len(list(pt_dir.glob("*.pt"))) if pt_dir.is_dir() else 0
    with progress(total=n, unit="case", desc="import-features") as bar:
        request = import_features(
            pt_dir,
            npy_dir,
            args.out,
            encoder=args.encoder,
            weights=args.encoder_weights,
            precision=args.precision,
            min_tissue=args.min_tissue,
            max_tiles=args.max_tiles or None,
            progress=lambda _: bar.update(),
        )
    print(
        f"import-features: {n} case(s) -> {args.out} ({request.encoder}, {request.tile_px} px at "
        f"{request.target_spacing_um:g} µm/px, cap {request.max_tiles})"
    )
    for reason in request.unreproduced:
        print(f"import-features: the container would not reproduce this: {reason}")
    return 0


def run_cohort_card(args: argparse.Namespace) -> int:
    from survfusion.training.card import write_card

    paths = write_card(args.cohort, args.out, qc=args.qc)
    print(f"cohort-card: {', '.join(str(p) for p in paths)}")
    return 0
