"""Tile-embedding throughput: precision, weights dtype, batch size, reading overlapped with the encoder.

Baseline (the paper's code path): fp32, batch 64, read a batch then embed it (no overlap).
Ours: ``--precision auto`` (fp16 below compute capability 8.0, bf16 from 8.0, fp32 on CPU) under
autocast or with the weights cast to that dtype (``cast``), several batch sizes, the background
``BatchReader`` overlapping reading with the encoder; on a GPU also explicit fp16 and bf16 rows.
Tiles are real reads of the benchmark slide (``bench/bigslide.py``) at 1.0 µm/px, all
configurations in one process, interleaved repeats. The reader alone with 3 decoding threads (what
a T4 machine's 4 vCPUs leave it) shows whether reading keeps ahead of the encoder.

On CPU it uses ``vit-tiny``; with a GPU, the UNI architecture (ViT-L/16, random weights) and the
card's measured matmul peak, so utilisation = tiles/s x 123 GFLOP / peak. ``--compile`` adds a
torch.compile row (GPU) with its compile time and the tiles it takes to pay for it.

    python bench/encoder.py [--tiles 384] [--device auto] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigslide import ensure_big_slide

from survfusion.features.device import resolve_device
from survfusion.features.encoders import flops_per_tile
from survfusion.features.extract import BatchReader, plan_tiles
from survfusion.features.request import ExtractConfig
from survfusion.features.tile_encoder import TileEncoder
from survfusion.features.weights import init_encoder_weights
from survfusion.slides.reader import open_slide


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def tile_plan(slide, mask_path, n_tiles: int):
    plan = plan_tiles(slide, mask_path, ExtractConfig())
    return dataclasses.replace(plan, coords_lv0=plan.coords_lv0[:n_tiles], coverage=plan.coverage[:n_tiles])


def read_only(slide_path, mask_path, n_tiles: int, threads: int, batch: int = 64) -> float:
    """Tiles/s of the background reader alone (decoding on ``threads`` threads, nothing consuming)."""
    with open_slide(slide_path, threads=threads) as slide:
        plan = tile_plan(slide, mask_path, n_tiles)
        t0 = time.perf_counter()
        for _ in BatchReader(slide, plan, batch, prefetch=2):
            pass
        return len(plan.coords_lv0) / (time.perf_counter() - t0)


def run(slide_path, mask_path, encoder: TileEncoder, batch: int, overlap: bool, n_tiles: int) -> float:
    with open_slide(slide_path, threads=4) as slide:
        plan = tile_plan(slide, mask_path, n_tiles)
        pin = encoder.device.type == "cuda"
        sync = torch.cuda.synchronize if pin else (lambda: None)
        encoder.embed(
            torch.zeros(batch, plan.read.read_px, plan.read.read_px, 3, dtype=torch.uint8)
        )  # warm-up
        sync()
        t0 = time.perf_counter()
        if overlap:
            for tiles in BatchReader(slide, plan, batch, prefetch=2, pin=pin):
                encoder.embed(tiles)
        else:
            ds = slide.levels[plan.read.level].downsample
            xy = np.rint(plan.coords_lv0 / ds).astype(np.int64)
            size = (plan.read.read_px, plan.read.read_px)
            for i in range(0, len(xy), batch):
                encoder.embed(torch.from_numpy(slide.read_regions(plan.read.level, xy[i : i + batch], size)))
        sync()
        return len(plan.coords_lv0) / (time.perf_counter() - t0)


def compile_row(encoder: TileEncoder, slide, mask, batch: int, n_tiles: int, eager: float) -> str:
    """torch.compile of the encoder: compile time (first batch) and steady tiles/s."""
    import copy

    compiled = copy.copy(encoder)
    compiled.model = torch.compile(encoder.model)
    t0 = time.perf_counter()
    try:
        compiled.embed(torch.zeros(batch, 224, 224, 3, dtype=torch.uint8))
        torch.cuda.synchronize()
    except Exception as err:  # a missing compiler or triton on this machine: report, not crash
        return f"torch.compile: failed ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    compile_s = time.perf_counter() - t0
    rate = run(slide, mask, compiled, batch, True, n_tiles)
    gain = 1 / eager - 1 / rate
    pays = f"pays for itself after {compile_s / gain:,.0f} tiles" if gain > 0 else "never pays (slower)"
    return (
        f"torch.compile batch {batch}: compile {compile_s:.1f} s, {rate:.1f} tiles/s "
        f"vs {eager:.1f} eager; {pays}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=384)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row (GPU)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    name = "uni" if cuda else "vit-tiny"
    slide, mask = ensure_big_slide()
    weights = Path(tempfile.mkdtemp()) / f"{name}.safetensors"
    init_encoder_weights(name, weights, seed=0)
    gpu = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(
        f"encoder {name} on {device} ({gpu}), {args.tiles} tiles of the benchmark slide, "
        f"{torch.get_num_threads()} torch threads, medians of {args.repeats} runs"
    )
    peak = None
    if cuda:
        peak = {
            p: matmul_peak_tflops(device, d)
            for p, d in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32))
        }
        print("measured matmul peak (TFLOP/s): " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items()))
    batches = (64, 128, 256, 512) if cuda else (16, 64, 128)
    # (precision, cast weights, batch, overlap); the first row is the baseline
    configs = [("fp32", False, 64, False)] + [("auto", False, b, True) for b in batches]
    configs += [("auto", True, b, True) for b in batches] + [("auto", False, 64, False)]
    if cuda:
        configs += [(p, c, 256, True) for p in ("fp16", "bf16") for c in (False, True)]
    else:
        configs += [("bf16", False, 16, True), ("bf16", True, 16, True)]
    encoders = {
        (p, c): TileEncoder(name, weights, device=str(device), precision=p, cast_weights=c)
        for p, c in {(c[0], c[1]) for c in configs}
    }
    results: dict[tuple, list[float]] = {}
    reads: list[float] = []
    for _ in range(args.repeats):
        for prec, cast, batch, overlap in configs:
            rate = run(slide, mask, encoders[(prec, cast)], batch, overlap, args.tiles)
            results.setdefault((prec, cast, batch, overlap), []).append(rate)
        reads.append(read_only(slide, mask, args.tiles, threads=3))
    base = statistics.median(results[("fp32", False, 64, False)])
    flops = flops_per_tile(name)
    for (prec, cast, batch, overlap), rates in results.items():
        med = statistics.median(rates)
        enc = encoders[(prec, cast)]
        util = (
            f"  {100 * med * flops / (peak[enc.precision] * 1e12):5.1f}% of {enc.precision} peak"
            if peak
            else ""
        )
        print(
            f"precision {prec:>4} ({enc.precision}, weights {enc.weights_dtype}) batch {batch:>3} "
            f"overlap {'yes' if overlap else 'no ':>3}: {med:8.1f} tiles/s  x{med / base:4.2f} "
            f"vs baseline{util}"
        )
    print(f"reader alone, 3 decoding threads: {statistics.median(reads):8.1f} tiles/s")
    if args.compile and cuda:
        best = max((k for k in results if k[0] == "auto"), key=lambda k: statistics.median(results[k]))
        enc = encoders[(best[0], best[1])]
        print(compile_row(enc, slide, mask, best[2], args.tiles, statistics.median(results[best])))


if __name__ == "__main__":
    main()
