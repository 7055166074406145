"""Every registered encoder on this machine's CPU: tiles/s of our build beside the reference build
(timm's, or transformers' for Phikon-v2) from the same weights, in one process, interleaved; the
start-up cost of importing each; and the peak memory of loading the largest encoder.

    python bench/encoders_cpu.py [--repeats 3] [--only uni,uni2-h] [--memory]

Per encoder: one network of each kind at full size in fp32 (the CPU's precision under ``auto``),
sharing the very same weight tensors (our build is made on the meta device and the reference's
tensors are assigned to it, so a 1.1 B-parameter pair costs 4.5 GB, not 9), one warm-up tile, then
``--repeats`` interleaved timings of one 224/448-px tile each; the median is reported, with the
ratio ours / reference and the ratio to UNI (the paper's encoder, the baseline of the table).
``--memory``: writes random H-optimus-0 weights (4.5 GB) to a temporary folder and loads them through
``TileEncoder`` in a fresh process, reporting its peak RSS beside the weights' size.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from survfusion.features.checkpoints import to_our_keys
from survfusion.features.encoders import (
    ENCODERS,
    build_architecture,
    build_reference,
    encoder_spec,
    flops_per_tile,
)


def time_one(model: torch.nn.Module, x: torch.Tensor, call) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        call(model, x)
    return time.perf_counter() - t0


def reference_call(name: str):
    if encoder_spec(name).reference[0] == "transformers-dinov2":
        return lambda m, x: m(pixel_values=x).last_hidden_state[:, 0]
    if encoder_spec(name).arch.get("pool_dim"):  # CONCH: the reference's tower is not a library's
        return None
    return lambda m, x: m(x)


def bench_encoder(name: str, repeats: int) -> dict:
    spec = encoder_spec(name)
    torch.manual_seed(0)
    ref = build_reference(name).eval()
    with torch.device("meta"):
        ours = build_architecture(name).eval()
    ours.load_state_dict(to_our_keys(ref.state_dict(), spec.checkpoint), strict=True, assign=True)
    x = torch.randn(1, 3, spec.input_px, spec.input_px)
    call_ref = reference_call(name)
    runs: dict[str, list[float]] = {"ours": [], "reference": []}
    time_one(ours, x, lambda m, t: m(t))  # warm-up
    if call_ref:
        time_one(ref, x, call_ref)
    for _ in range(repeats):
        runs["ours"].append(time_one(ours, x, lambda m, t: m(t)))
        if call_ref:
            runs["reference"].append(time_one(ref, x, call_ref))
    ours_tps = 1 / statistics.median(runs["ours"])
    ref_tps = 1 / statistics.median(runs["reference"]) if runs["reference"] else float("nan")
    return {"name": name, "ours": ours_tps, "reference": ref_tps, "gflops": flops_per_tile(name) / 1e9}


def import_seconds(module: str, repeats: int = 3) -> float:
    times, stamp = [], "import time; t = time.perf_counter(); "
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", f"{stamp}import {module}; print(time.perf_counter() - t)"],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(out.stdout))
    return statistics.median(times)


def memory_check() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h-optimus-0.safetensors"
        from survfusion.features.weights import init_encoder_weights

        t0 = time.perf_counter()
        init_encoder_weights("h-optimus-0", path, seed=0)
        size = path.stat().st_size
        took = time.perf_counter() - t0
        print(f"memory: wrote {size / 2**30:.2f} GiB of random h-optimus-0 weights in {took:.0f} s")
        # VmHWM, the peak RSS of this process's own memory map (ru_maxrss would carry over the
        # parent's peak across exec on Linux).
        code = (
            "import re, time; hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status')"
            ".read()).group(1)); from survfusion.features.tile_encoder import TileEncoder; "
            "base = hwm(); t = time.perf_counter(); "
            f"e = TileEncoder('h-optimus-0', {str(path)!r}, device='cpu'); e.file_sha256; "
            "print(base, hwm(), time.perf_counter() - t)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        base_kb, peak_kb, seconds = out.split()
        peak = int(peak_kb) * 1024
        print(
            f"memory: TileEncoder('h-optimus-0') loaded in {float(seconds):.1f} s; peak RSS "
            f"{peak / 2**30:.2f} GiB (before loading {int(base_kb) / 2**20:.2f} GiB) for "
            f"{size / 2**30:.2f} GiB of weights: "
            f"{peak / size:.2f}x the weights"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", help="comma-separated encoder names (default: all)")
    ap.add_argument("--memory", action="store_true", help="also the peak memory of loading h-optimus-0")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(ENCODERS)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'default')}"
    )
    print(
        f"start-up (median of 3 fresh processes): import timm {import_seconds('timm'):.2f} s, "
        f"import survfusion.features.vit {import_seconds('survfusion.features.vit'):.2f} s"
    )
    rows = []
    for name in names:
        row = bench_encoder(name, args.repeats)
        rows.append(row)
        print(
            f"{name}: ours {row['ours']:.3f} tiles/s, reference {row['reference']:.3f} tiles/s, "
            f"{row['gflops'] * row['ours']:.0f} GFLOP/s",
            flush=True,
        )
    uni = next((r["ours"] for r in rows if r["name"] == "uni"), float("nan"))
    print(
        "\n| encoder | GFLOPs/tile | ours tiles/s | reference tiles/s | ours / reference | vs UNI "
        "| s per 1,000 tiles |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['gflops']:.1f} | {r['ours']:.3f} | {r['reference']:.3f} | "
            f"{r['ours'] / r['reference']:.2f} | {r['ours'] / uni:.2f} | {1000 / r['ours']:,.0f} |"
        )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    if args.memory:
        memory_check()


if __name__ == "__main__":
    main()
