"""Hostile inputs, each as a fresh ``inference.py`` process under an 8 GiB address-space cap and a
120 s timeout: outcome, exit code, peak RSS and wall time per variant.

The variants are the table of ``test/cases.py`` (``HOSTILE``) plus the ones too large for the test
suite: a single-page (not pyramidal) 20,001 x 20,001 slide without a mask (the Otsu thumbnail must be
streamed, not read whole: 1.2 GB of pixels), and the 10^6 x 10^6 header with and without a mask.
Model: ``test/fixtures.py``'s ``write_untrained_model`` with vit-tiny on the CPU.

    python bench/hostile.py [VARIANT-SUBSTRING ...]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "test"))
from cases import HOSTILE, case, mask, wsi, wsi_huge_header  # noqa: E402

CAP_BYTES = 8 * 2**30
RUN = """
import resource, sys
import inference
code = inference.main(sys.argv[1:])
print(f"MAXRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
sys.exit(code)
"""


def single_page_slide(path: Path, side: int = 20_001) -> None:
    """One page, no pyramid, 512-px deflate tiles: white with a band of textured 'tissue'."""
    import tifffile

    rng = np.random.default_rng(0)
    pink = np.array([200, 120, 170], np.int16)  # H&E-like colour: saturated, so Otsu finds it
    texture = (pink + rng.integers(-25, 25, (512, 512, 3))).astype(np.uint8)
    white = np.full((512, 512, 3), 245, np.uint8)

    def tiles():
        for ty in range(-(-side // 512)):
            for tx in range(-(-side // 512)):
                yield texture if 15 <= ty <= 22 and 10 <= tx <= 28 else white

    tmp = path.with_suffix(".part")
    tifffile.imwrite(
        tmp, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(512, 512), compression="zlib",
        compressionargs={"level": 1}, resolution=(40000, 40000), resolutionunit="CENTIMETER",
    )  # fmt: skip
    tmp.rename(path)  # never a half-written file under the cached name


def cached_single_page() -> Path:
    path = HERE / ".data" / "single-page-20001.tif"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        single_page_slide(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    return path


def extra_variants():
    def single_page_no_mask(path: Path) -> None:
        import os

        target = wsi(path)
        target.unlink()
        os.link(cached_single_page(), target)
        mask(path).unlink()

    def huge_header_no_mask(path: Path) -> None:
        wsi_huge_header(path)
        mask(path).unlink()

    return [
        ("single-page 20,001^2 slide, no mask", single_page_no_mask),
        ("WSI header 10^6 x 10^6 px, no mask", huge_header_no_mask),
    ]


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))


def run_case(path: Path, model: Path, out: Path) -> tuple[int, float, float, str]:
    cmd = [sys.executable, "-c", RUN, "--input", str(path), "--output", str(out), "--model", str(model),
           "--device", "cpu"]  # fmt: skip
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit_memory
        )
    except subprocess.TimeoutExpired:
        return -1, 120.0, float("nan"), "TIMEOUT"
    wall = time.perf_counter() - t0
    lines = res.stderr.strip().splitlines()
    rss = next((int(x.split()[1]) / 2**20 for x in lines if x.startswith("MAXRSS")), float("nan"))
    said = [x.removeprefix("[survfusion] ") for x in lines if x.startswith("[survfusion]")]
    outcome = said[-1] if said else "(no warning)"
    return res.returncode, wall, rss, outcome


def main() -> None:
    from fixtures import write_untrained_model  # test/fixtures.py (on the path above)

    from survfusion.features.weights import init_encoder_weights

    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    weights = tmp / "vit-tiny.safetensors"
    init_encoder_weights("vit-tiny", weights)
    model = write_untrained_model(tmp / "model", weights)
    only = sys.argv[1:]  # optional: names (substrings) of the variants to run
    variants = [(name, mutate) for name, mutate, *_ in HOSTILE] + extra_variants()
    variants = [v for v in variants if not only or any(o in v[0] for o in only)]
    print("| variant | exit | peak RSS | time | what the log says last |\n|---|---|---|---|---|")
    for name, mutate in variants:
        path = case(tmp, name, mutate)
        code, wall, rss, outcome = run_case(path, model, tmp / f"{path.name}-out")
        outcome = outcome.replace("|", "/")[:150]
        print(f"| {name} | {code} | {rss:.2f} GiB | {wall:.1f} s | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
