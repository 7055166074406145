"""grand-challenge entry point for CHIMERA Task 3: one case in, predicted months to recurrence out.

    python inference.py [--input /input] [--output /output] [--model /opt/ml/model]
                        [--device auto] [--precision auto] [--strict]

A thin shell over ``survfusion.serving.predict``: it finds the inputs, loads the model directory,
logs one line per stage to stdout and warnings to stderr, and writes
``likelihood-of-bladder-cancer-recurrence.json`` (a bare number of months). Exit code 0 means the
output file holds a finite number >= 0. Otherwise the last line on stderr is ``[survfusion] error:
...``: one line alone for a problem of the input or the model directory (``UserError``) and for a
device fault we foresaw (``ComputeError``: CUDA out of memory on one tile, a GPU torch cannot use);
an unforeseen exception (a CUDA error, a bug) prints its traceback above that line, so a failed job
can be debugged from its log. Paths default to the environment variables SURVFUSION_INPUT,
SURVFUSION_OUTPUT, SURVFUSION_MODEL, then to the grand-challenge paths (the image's baked-in
/opt/app/resources holds no file this code reads: the gene order and clinical schema are package
data); SURVFUSION_DEVICE and SURVFUSION_PRECISION set the other two.

Only what one case needs is imported (torch, numpy, tifffile, safetensors): no scikit-survival,
lifelines, scikit-learn, pandas, matplotlib, timm or torchvision (``test_inference.py`` checks it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback


def parse_args(argv=None) -> argparse.Namespace:
    from survfusion.features.request import PRECISION_HELP  # dataclasses only: no torch at --help

    env = os.environ.get
    p = argparse.ArgumentParser(
        description="CHIMERA Task 3 (grand-challenge): predict the months to high-grade recurrence of one "
        "case from its H&E slide, tissue mask, bulk RNA-seq and clinical JSON, and write them as a bare "
        "number to OUTPUT/likelihood-of-bladder-cancer-recurrence.json. Exit code 0 means that file holds "
        "a finite number >= 0; otherwise the last line on stderr says why.",
        epilog="Each default comes from an environment variable when it is set (SURVFUSION_INPUT, "
        "SURVFUSION_OUTPUT, SURVFUSION_MODEL, SURVFUSION_DEVICE, SURVFUSION_PRECISION), else the "
        "grand-challenge path. Make a model directory with 'python -m survfusion package --run RUN "
        "--encoder-weights W' (or ./demo.sh); ./export.sh packs it for upload.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--input",
        default=env("SURVFUSION_INPUT", "/input"),
        help="the job folder: inputs.json and each socket's file",
    )
    p.add_argument("--output", default=env("SURVFUSION_OUTPUT", "/output"), help="folder for the output file")
    p.add_argument(
        "--model",
        default=env("SURVFUSION_MODEL", "/opt/ml/model"),
        help="model directory (bundle/ and encoder/), as the model tarball extracts",
    )
    p.add_argument(
        "--device",
        default=env("SURVFUSION_DEVICE", "auto"),
        help="auto (the GPU when torch can use one; a visible GPU it cannot use fails), cpu, cuda, cuda:N",
    )
    p.add_argument(
        "--precision",
        default=env("SURVFUSION_PRECISION", "auto"),
        help=PRECISION_HELP,
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail instead of falling back on any input problem (otherwise: one warning, then the fallback)",
    )
    return p.parse_args(argv)  # fmt: skip


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

        from survfusion.errors import ComputeError, UserError
        from survfusion.features.device import describe_device
        from survfusion.serving.modeldir import load_model
        from survfusion.serving.predict import predict_case
        from survfusion.serving.sockets import find_case_files, write_output
    except Exception:  # a broken image: say so with the traceback
        return _fail("internal: cannot import the package", trace=True)
    try:
        _deterministic(torch)
        log(f"start    input={args.input} output={args.output} model={args.model}")
        files = find_case_files(args.input)  # before the model loads: a wrong folder fails at once
        for note in files.notes:
            warn(note)
        t_load = time.perf_counter()
        model = load_model(args.model, device=args.device, precision=args.precision)
        name = f"{model.bundle.model_name} + {model.encoder.name} ({model.encoder.precision})"
        where = describe_device(model.encoder.device)
        log(f"load     {time.perf_counter() - t_load:7.2f} s  {name} on {where}")
        if model.encoder.precision_note:  # e.g. UNI2-h's bf16 recipe on a T4, which has no fast bf16
            log(f"precision        {model.encoder.precision_note}")
        prediction = predict_case(files, model, strict=args.strict, log=log, warn=warn)
        path = write_output(args.output, prediction.months)
        if os.environ.get(EXPLAIN_ENV):  # local runs only (./test_run.sh): never on grand-challenge
            _explain(model, prediction, files, args.output)
        if model.encoder.device.type == "cuda":
            log(f"memory   peak GPU {torch.cuda.max_memory_allocated(model.encoder.device) / 2**30:.2f} GiB")
        log(f"done     {time.perf_counter() - t0:7.2f} s  {prediction.months:.4f} months -> {path}")
        return 0
    except (UserError, ComputeError) as err:  # foreseen: the message is the whole story
        return _fail(str(err))
    except Exception as err:  # unforeseen (a CUDA error, a bug): the traceback, then the one line
        first = str(err).splitlines()[0] if str(err) else ""
        return _fail(f"internal {type(err).__name__}: {first}", trace=True)


EXPLAIN_ENV = "SURVFUSION_EXPLAIN"  # set (to 1) to write explain/ beside the output


def _explain(model, prediction, files, output) -> None:
    """The case's explanation (survfusion/training/explain.py) in ``output/explain/``; any failure
    is a warning: the prediction is written already and stands."""
    t0 = time.perf_counter()
    try:
        from pathlib import Path

        from survfusion.training.explain import explain_inputs

        used = prediction.inputs
        name = files.wsi.stem if files.wsi is not None else "case"
        explain_inputs(
            model.bundle, name, used["bag"], used["coords"], used["tile_lv0"], used["clinical"],
            used["rna"], Path(output) / "explain", files.wsi, absent=used["replaced"],
        )  # fmt: skip
        log(f"explain  {time.perf_counter() - t0:7.2f} s  -> {output}/explain/{name}.md")
    except Exception as err:  # an opt-in extra: the prediction is already written
        first = str(err).splitlines()[0] if str(err) else ""
        warn(f"explanation not written ({type(err).__name__}: {first}); the prediction stands")


def _deterministic(torch) -> None:
    """Deterministic kernels, as ``torch.use_deterministic_algorithms(True, warn_only=True)`` sets them,
    minus that wrapper's import of torch._inductor (1.7 s of every start on 2 cores, measured in
    bench/startup.py) to set a torch.compile flag that inference never uses."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private setter: pay for the import
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def _fail(message: str, *, trace: bool = False) -> int:
    if trace:
        traceback.print_exc(file=sys.stderr)
    print(f"[survfusion] error: {message}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
