"""The command line, ``python -m survfusion <command>`` (``survfusion/__main__.py`` calls ``main``).

- ``models``: list the registered models with their parameter counts at the paper's dimensions.
- ``check-bundle DIR``: verify a model bundle (checksums, dims) and print its manifest summary.
- ``init-encoder``: create local random weights for a tile encoder (tests, demos).
- ``extract``: slides (+ tissue masks) -> one HDF5 feature file per slide.
- ``synth``: a synthetic cohort in the real formats (and a grand-challenge sample case).
- ``train`` (``--folds K --ensemble`` for a fold ensemble), ``evaluate``, ``compare``: the experiment.
- ``outer-test``: the paper's single split vs the fold ensemble on outer test sets.
- ``import-features``, ``cohort-card``: the CHIMERA release as downloaded (its features, its data card).
- ``package``: assemble the container's model directory (bundle + encoder weights as safetensors).
"""

from __future__ import annotations

import argparse
import sys

from survfusion.cli.data import add_synth_parser
from survfusion.cli.explain import add_explain_parser
from survfusion.cli.extract import add_encoders_parser, add_extract_parser, add_init_encoder_parser
from survfusion.cli.release import add_release_parsers
from survfusion.cli.train import add_train_parsers
from survfusion.errors import UserError


def _models(_: argparse.Namespace) -> int:
    from survfusion.nets.models import build_model, count_parameters, model_names

    for name in model_names():
        print(f"{name:<20} {count_parameters(build_model(name)):>12,} parameters")
    return 0


def _check_bundle(args: argparse.Namespace) -> int:
    from survfusion.serving.bundle_io import load_bundle, read_manifest, resolve_bundle_dir

    path = resolve_bundle_dir(args.bundle)
    bundle = load_bundle(path)
    m = read_manifest(path)
    print(
        f"{path}: OK  model={m['model']['name']} members={len(bundle.members)} "
        f"params={m['model']['parameters']:,} (per member) calibration={m['calibration']['mode']} "
        f"rna_log1p={m['preprocessing']['rna_log1p']} format={m['format_version']}"
    )
    return 0


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help line (when it has one worth saying); descriptions and
    epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        quiet = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if action.option_strings and not quiet and "%(default)" not in text and "default:" not in text:
            text += " (default: %(default)s)"
        return text


PIPELINE = """\
the pipeline, in order (each command's --help describes its options):
  synth        a synthetic cohort to try things on (or bring the CHIMERA release as downloaded)
  cohort-card  what a cohort holds, from file headers: a Markdown page and a figure
  extract      slides -> one feature file per slide (UNI, or another of 'encoders'),
               or import-features: the organisers' published .pt features
  train        features + RNA + clinical -> a run folder with its bundle/
  evaluate     a bundle on a cohort: C-index with its interval, KM curves, heatmaps
  explain      why a case got its number: modalities, genes, fields, tiles (QuPath GeoJSON)
  package      a run's bundle + the encoder's weights -> model/ (what the container mounts)
  then ./test_run.sh and ./export.sh; inference.py is the container's entry point
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="survfusion",
        description="CHIMERA Task 3 kit: multimodal survival models from slides, RNA and clinical data.",
        epilog=PIPELINE,
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("models", help="list models and parameter counts").set_defaults(func=_models)
    p = sub.add_parser("check-bundle", help="verify a model bundle")
    p.add_argument("bundle", help="a bundle folder, or the training run or model directory holding it")
    p.set_defaults(func=_check_bundle)
    add_synth_parser(sub)
    add_encoders_parser(sub)
    add_init_encoder_parser(sub)
    add_extract_parser(sub)
    add_train_parsers(sub)
    add_release_parsers(sub)
    add_explain_parser(sub)
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, command in sub.choices.items():
        command.formatter_class = HelpFormatter
        command.description = command.description or helps.get(name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
