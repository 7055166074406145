"""Peak memory (max RSS) of ``extract`` on the 40,000 x 32,000 benchmark slide, as a subprocess.

python bench/memory.py [--encoder vit-tiny]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigslide import ensure_big_slide

from survfusion.features.h5 import read_features
from survfusion.features.weights import init_encoder_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="vit-tiny")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    slide, mask = ensure_big_slide()
    tmp = Path(tempfile.mkdtemp())
    weights = tmp / "w.safetensors"
    init_encoder_weights(args.encoder, weights)
    cmd = [
        sys.executable,
        "-m",
        "survfusion",
        "extract",
        "--slide",
        str(slide),
        "--mask",
        str(mask),
        "--out",
        str(tmp / "f"),
        "--encoder",
        args.encoder,
        "--weights",
        str(weights),
        "--device",
        args.device,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    n = read_features(tmp / "f" / f"{slide.stem}.h5").n_tiles
    print(
        f"extract {slide.name} (40000 x 32000 px, {slide.stat().st_size / 1e6:.0f} MB) with {args.encoder}: "
        f"{n} tiles in {seconds:.1f} s; peak RSS {peak_gb:.2f} GiB"
    )


if __name__ == "__main__":
    main()
