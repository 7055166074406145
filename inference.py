"""grand-challenge entry point for CHIMERA Task 3: one case in, predicted months to recurrence out.

    python inference.py [--input /input] [--output /output] [--model /opt/ml/model]
                        [--resources /opt/app/resources] [--device auto] [--strict]

A thin shell over ``survfusion.predict``: it finds the inputs, loads the model directory, logs one line
per stage to stdout and warnings to stderr, and writes ``likelihood-of-bladder-cancer-recurrence.json``
(a bare number of months). Exit code 0 means the output file holds a finite number >= 0; otherwise one
line on stderr says why (no traceback). Paths default to the environment variables SURVFUSION_INPUT,
SURVFUSION_OUTPUT, SURVFUSION_MODEL, SURVFUSION_RESOURCES, then to the grand-challenge paths.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="CHIMERA Task 3: predicted months to high-grade recurrence")
    p.add_argument("--input", default=env("SURVFUSION_INPUT", "/input"))
    p.add_argument("--output", default=env("SURVFUSION_OUTPUT", "/output"))
    p.add_argument("--model", default=env("SURVFUSION_MODEL", "/opt/ml/model"))
    p.add_argument("--resources", default=env("SURVFUSION_RESOURCES", "/opt/app/resources"))
    p.add_argument("--device", default=env("SURVFUSION_DEVICE", "auto"))
    p.add_argument("--strict", action="store_true", help="fail instead of falling back on any input problem")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"[survfusion] {message}", flush=True)


def warn(message: str) -> None:
    print(f"[survfusion] warning: {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    # Same input, same bytes out: deterministic kernels (cuBLAS needs this workspace setting for it).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        import torch

        from survfusion.errors import UserError
        from survfusion.gcio import find_case_files, write_output
        from survfusion.predict import load_model, predict_case

        torch.use_deterministic_algorithms(True, warn_only=True)
        log(f"start    input={args.input} output={args.output} model={args.model}")
        files = find_case_files(args.input)
        for note in files.notes:
            warn(note)
        t_load = time.perf_counter()
        model = load_model(args.model, device=args.device)
        name = f"{model.bundle.model_name} + {model.encoder.name}"
        log(f"load     {time.perf_counter() - t_load:7.2f} s  {name} on {model.encoder.device}")
        prediction = predict_case(files, model, strict=args.strict, log=log, warn=warn)
        path = write_output(args.output, prediction.months)
        log(f"done     {time.perf_counter() - t0:7.2f} s  {prediction.months:.4f} months -> {path}")
        return 0
    except UserError as err:
        print(f"[survfusion] error: {err}", file=sys.stderr, flush=True)
        return 1
    except Exception as err:  # an unforeseen failure still ends in one line, not a traceback
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"[survfusion] error: internal {type(err).__name__}: {first}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
