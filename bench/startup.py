"""Container start-up: process start to the first tile batch, whole-case time, and what the imports cost.

Each measurement is a fresh ``python`` process on the sample case ``test/input/interf0`` with a model
directory made by ``write_untrained_model`` of test/fixtures.py (vit-tiny; with ``--uni`` the UNI architecture
with random weights: 1.2 GB of safetensors, cached in bench/.data). The file cache is warm (one
untimed run first). With ``--before DIR`` (a checkout of an older commit, e.g. ``git worktree add
/tmp/before <commit>``) its ``inference.py`` runs on the same model directory, interleaved with ours.

- ``first batch``: from just before the process is spawned to the moment the first batch of tiles
  enters the encoder (our code only: it wraps ``TileEncoder.embed``).
- ``whole case``: ``inference.py`` from spawn to exit.
- ``-X importtime``: the top-level packages imported by one ``inference.py`` run, by cumulative time.

    python bench/startup.py [--repeats 5] [--uni] [--before /tmp/before]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))  # test/fixtures.py
DATA = Path(__file__).resolve().parent / ".data"
CASE = ROOT / "test" / "input" / "interf0"

FIRST_BATCH = """
import sys, time
t_spawn = float(sys.argv[1])
import torch
from survfusion.features.extract import embed_slide
from survfusion.serving.sockets import find_case_files
from survfusion.serving.modeldir import load_model

files = find_case_files(sys.argv[2])
model = load_model(sys.argv[3], device="cpu")
original = model.encoder.embed
first = []

def embed(tiles):
    if not first:
        first.append(time.time() - t_spawn)
    return original(tiles)

model.encoder.embed = embed
embed_slide(files.wsi, files.mask, model.encoder, model.extract)
model.check_encoder()
print(f"{first[0]:.4f}")
"""


def model_dir(encoder: str) -> Path:
    from fixtures import write_untrained_model  # test/fixtures.py (on the path above)

    from survfusion.features.weights import init_encoder_weights

    out = DATA / f"startup-model-{encoder}"
    if not (out / "encoder" / "encoder.json").is_file():
        weights = DATA / f"{encoder}-random.safetensors"
        if not weights.is_file():
            print(f"writing random {encoder} weights to {weights} (once)", flush=True)
            init_encoder_weights(encoder, weights, seed=0)
        write_untrained_model(out, weights, encoder=encoder)
    return out


def first_batch_s(model: Path) -> float:
    t = time.time()
    out = subprocess.run(
        [sys.executable, "-c", FIRST_BATCH, repr(t), str(CASE), str(model)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _env(repo: Path) -> dict:
    """The repository's own package first (an older checkout's, not the installed one)."""
    return {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"}


def whole_case_s(repo: Path, model: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, str(repo / "inference.py"), "--input", str(CASE), "--output", str(out),
         "--model", str(model), "--device", "cpu"],
        cwd=repo, capture_output=True, text=True, check=True, env=_env(repo),
    )  # fmt: skip
    return time.perf_counter() - t


def import_offenders(repo: Path, model: Path, out: Path, top: int = 8) -> list[tuple[str, float]]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", str(repo / "inference.py"), "--input", str(CASE), "--output",
         str(out), "--model", str(model), "--device", "cpu"],
        cwd=repo, capture_output=True, text=True, check=True, env=_env(repo),
    )  # fmt: skip
    cumulative: dict[str, float] = {}
    for line in run.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # top-level imports only (not nested inside another)
            name = m.group(3).split(".")[0]
            cumulative[name] = cumulative.get(name, 0.0) + int(m.group(1)) / 1e6
    return sorted(cumulative.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--uni", action="store_true", help="also the UNI architecture (1.2 GB weights)")
    ap.add_argument("--before", type=Path, help="a checkout of an older commit to compare with")
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    repos = {"ours": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    for encoder in ["vit-tiny", *(["uni"] if args.uni else [])]:
        model = model_dir(encoder)
        for repo in repos.values():
            whole_case_s(repo, model, tmp / "warm")  # warm the file cache
        first, whole = [], {k: [] for k in repos}
        for i in range(args.repeats):
            first.append(first_batch_s(model))
            for name, repo in repos.items():
                whole[name].append(whole_case_s(repo, model, tmp / f"{name}{i}"))
        print(f"\n{encoder}: medians of {args.repeats} interleaved runs (warm file cache, CPU)")
        print(f"  process start -> first tile batch (ours): {statistics.median(first):6.2f} s "
              f"(runs {min(first):.2f}-{max(first):.2f})")  # fmt: skip
        base = statistics.median(whole["before"]) if "before" in whole else None
        for name, times in whole.items():
            ratio = f"  x{base / statistics.median(times):.2f} vs before" if base else ""
            print(f"  inference.py whole case ({name:>6}): {statistics.median(times):6.2f} s{ratio}")
    model = model_dir("vit-tiny")
    for name, repo in repos.items():
        offenders = import_offenders(repo, model, tmp / f"imp-{name}")
        print(f"\n-X importtime, {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in offenders))


if __name__ == "__main__":
    main()
