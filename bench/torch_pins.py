"""Candidate torch pins side by side: start-up, a whole case, CPU embedding speed, the wheel's CUDA.

Each candidate is a Python interpreter (a venv) with that torch and the rest of requirements.txt.
Every measurement is a fresh process of that interpreter, and the candidates are interleaved in each
repeat, so the machine's noise falls on all of them alike. Medians, and each candidate's ratio to
the first one.

- ``import torch``: process start to exit of ``python -c "import torch"``.
- ``whole case``: ``inference.py`` on the sample case ``test/input/interf0`` with a vit-tiny model
  directory (``test/fixtures.py``), ``--device cpu``, spawn to exit.
- ``vit-tiny`` / ``uni`` tiles/s: the encoder network alone (random weights, fp32, inference mode) on
  a batch of 16 random tiles, after one warm-up batch; UNI is the real ViT-L/16 architecture.
- the wheel: ``torch.version.cuda`` and the compiled GPU architectures (``sm_75`` is the T4).

    python bench/torch_pins.py --python .venv/bin/python /tmp/v26/bin/python [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "test" / "input" / "interf0"

WHEEL = """
import json, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "arch": torch._C._cuda_getArchFlags(), "threads": torch.get_num_threads(),
                  "cpu": torch.backends.cpu.get_cpu_capability()}))
"""

EMBED = """
import json, sys, time, torch
from survfusion.features.encoders import build_architecture
name, batch, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = build_architecture(name).eval()
x = torch.randn(batch, 3, 224, 224)
with torch.inference_mode():
    model(x)
    t0 = time.perf_counter()
    for _ in range(reps):
        model(x)
print(json.dumps(batch * reps / (time.perf_counter() - t0)))
"""

MODEL = """
import sys
from pathlib import Path
from survfusion.features.weights import init_encoder_weights
sys.path.insert(0, "test")
from fixtures import write_untrained_model
out = Path(sys.argv[1])
init_encoder_weights("vit-tiny", out / "w.safetensors", seed=0)
write_untrained_model(out / "model", out / "w.safetensors", encoder="vit-tiny")
"""


def _run(python: str, *args: str) -> str:
    out = subprocess.run([python, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{python} {' '.join(args[:2])} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def _timed(python: str, *args: str) -> float:
    t0 = time.perf_counter()
    _run(python, *args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", nargs="+", required=True, help="interpreters, the baseline first")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--uni-repeats", type=int, default=2, help="UNI is slow on a CPU: fewer repeats")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="torch-pins-"))
    wheels = {py: json.loads(_run(py, "-c", WHEEL)) for py in args.python}
    models = {}
    for i, py in enumerate(args.python):  # each writes its own model directory (its own torch)
        models[py] = scratch / f"m{i}"
        _run(py, "-c", MODEL, str(models[py]))
    rows: dict[str, dict[str, list[float]]] = {py: {} for py in args.python}
    for rep in range(args.repeats):
        for py in args.python:
            r = rows[py]
            r.setdefault("import torch (s)", []).append(_timed(py, "-c", "import torch"))
            out = scratch / f"out-{rep}"
            r.setdefault("whole case (s)", []).append(
                _timed(py, "inference.py", "--input", str(CASE), "--output", str(out),
                       "--model", str(models[py] / "model"), "--device", "cpu")
            )  # fmt: skip
            r.setdefault("vit-tiny tiles/s", []).append(float(_run(py, "-c", EMBED, "vit-tiny", "16", "8")))
            if rep < args.uni_repeats:
                r.setdefault("uni tiles/s", []).append(float(_run(py, "-c", EMBED, "uni", "16", "1")))
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    base = args.python[0]
    print("\n| torch | CUDA | sm_75 | CPU kernel | " + " | ".join(rows[base]) + " |")
    print("|---" * (4 + len(rows[base])) + "|")
    for py in args.python:
        w = wheels[py]
        cells = []
        for key, values in rows[py].items():
            med = statistics.median(values)
            ratio = med / statistics.median(rows[base][key])
            cells.append(f"{med:.2f}" + ("" if py == base else f" ({ratio:.2f}x)"))
        sm75 = "yes" if "sm_75" in w["arch"].split() else "no"
        print(f"| {w['torch']} | {w['cuda']} | {sm75} | {w['cpu']} | " + " | ".join(cells) + " |")
    print(f"\nmedians of {args.repeats} fresh processes each ({args.uni_repeats} for uni), "
          f"{wheels[base]['threads']} torch threads; ratios to {wheels[base]['torch']}")  # fmt: skip
    for py in args.python:
        print(f"{wheels[py]['torch']}: compiled for {wheels[py]['arch']}")


if __name__ == "__main__":
    main()
