"""Tile-embedding throughput: precision, batch size, and reading overlapped with the encoder.

Baseline (the paper's code path): fp32, batch 64, read a batch then embed it (no overlap).
Ours: ``--precision auto`` (fp16 on pre-Ampere GPUs, bf16 on Ampere+, fp32 on CPU), several batch
sizes, the background ``BatchReader`` overlapping reading with the encoder. Tiles are real reads of
the benchmark slide (``bench/bigslide.py``) at 1.0 µm/px, all configurations in one process.

On CPU it uses ``vit-tiny``; with a GPU, the UNI architecture (ViT-L/16, random weights) and the
card's measured matmul peak, so utilisation = tiles/s x 123 GFLOP / peak.

    python bench/encoder.py [--tiles 384] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigslide import ensure_big_slide

from survfusion.encoders import TileEncoder, encoder_spec, init_encoder_weights, resolve_device
from survfusion.extract import BatchReader, ExtractConfig, plan_tiles
from survfusion.slide import open_slide


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


def run(slide_path, mask_path, encoder: TileEncoder, batch: int, overlap: bool, n_tiles: int) -> float:
    cfg = ExtractConfig(batch_size=batch)
    with open_slide(slide_path, threads=4) as slide:
        plan = plan_tiles(slide, mask_path, cfg)
        plan = type(plan)(plan.read, plan.coords_lv0[:n_tiles], plan.coverage[:n_tiles], plan.tissue_source)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=384)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = "uni" if device.type == "cuda" else "vit-tiny"
    slide, mask = ensure_big_slide()
    weights = Path(tempfile.mkdtemp()) / f"{name}.safetensors"
    init_encoder_weights(name, weights, seed=0)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"encoder {name} on {device} ({gpu}), {args.tiles} tiles of the benchmark slide, "
        f"{torch.get_num_threads()} torch threads, medians of {args.repeats} runs"
    )
    peak = None
    if device.type == "cuda":
        peak = {
            p: matmul_peak_tflops(device, d)
            for p, d in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32))
        }
        print("measured matmul peak (TFLOP/s): " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items()))
    batches = (64, 128, 256) if device.type == "cuda" else (16, 64, 128)
    configs = [("fp32", 64, False)] + [("auto", b, True) for b in batches] + [("auto", 64, False)]
    if device.type == "cpu":
        configs.append(("bf16", 64, True))
    encoders = {
        p: TileEncoder(name, weights, device=str(device), precision=p) for p in {c[0] for c in configs}
    }
    results = {}
    for _ in range(args.repeats):
        for prec, batch, overlap in configs:
            rate = run(slide, mask, encoders[prec], batch, overlap, args.tiles)
            results.setdefault((prec, batch, overlap), []).append(rate)
    base = statistics.median(results[("fp32", 64, False)])
    flops = encoder_spec(name).flops_per_tile
    for (prec, batch, overlap), rates in results.items():
        med = statistics.median(rates)
        used = encoders[prec].precision
        util = ""
        if peak:
            util = f"  {100 * med * flops / (peak[used] * 1e12):5.1f}% of {used} peak"
        print(
            f"precision {prec:>4} ({used}) batch {batch:>3} overlap {'yes' if overlap else 'no ':>3}: "
            f"{med:8.1f} tiles/s  x{med / base:4.2f} vs baseline{util}"
        )


if __name__ == "__main__":
    main()
