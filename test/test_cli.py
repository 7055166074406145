"""What a person sees: every command's --help, progress output on a terminal or in a log, the
figures' contents, one warning line per problem of an ensemble."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest

from survfusion import progress as progress_mod
from survfusion.cli.main import build_parser, main
from survfusion.serving.predict import merge_member_warnings
from survfusion.training.figures import SMALL_GROUP, attention_grid, plot_km_quartiles

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_option_of_every_command_is_described(name, capsys):
    command = _subparsers()[name]
    assert command.description, f"{name} has no description"
    for action in command._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    for action in command._actions:  # a default worth saying is shown
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
            assert f"(default: {action.default})" in " ".join(shown.split()), action.dest


def test_top_level_help_reads_as_prose():
    out = subprocess.run(
        [sys.executable, "-m", "survfusion", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "``" not in out and "the pipeline, in order" in out


def test_inference_help_describes_each_option_and_its_default():
    out = subprocess.run(
        [sys.executable, "inference.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for option, default in (("--input", "/input"), ("--output", "/output"), ("--model", "/opt/ml/model")):
        assert option in out and f"(default: {default})" in out
    assert "likelihood-of-bladder-cancer-recurrence.json" in "".join(out.split())  # wrapped at hyphens
    assert "python -m survfusion package" in out


def test_train_refuses_an_unknown_model_before_it_starts(tmp_path, capsys):
    code = main(["train", "--cohort", str(tmp_path / "c"), "--features", str(tmp_path / "f"),
                 "--model", "ABMIL_Nope", "--out", str(tmp_path / "run")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""  # no start line for a run that never starts
    assert "unknown model 'ABMIL_Nope'; valid names:" in captured.err and "ABMIL_Surv_PG" in captured.err


def test_progress_in_a_log_is_a_few_whole_lines(capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "on_terminal", lambda: False)
    with progress_mod.progress(total=200, desc="slides", unit="slide") as bar:
        for _ in range(200):
            bar.set_postfix(c="0.700")
            bar.update()
    for _ in progress_mod.progress(range(7), desc="inner", nested=True):  # nested: silent in a log
        pass
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    assert 2 <= len(lines) <= 100 // progress_mod.LOG_EVERY_PCT + 1
    assert lines[-1].startswith("slides: 200/200 slide (100%)") and lines[-1].endswith("c=0.700")
    assert not any(line.startswith("inner") for line in lines)


def test_progress_on_a_terminal_is_tqdm(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(progress_mod, "on_terminal", lambda: True)
    bar = progress_mod.progress(total=3, desc="x", disable=True)
    assert isinstance(bar, tqdm)
    bar.close()


def test_member_warnings_become_one_line_per_problem():
    per_member = [
        ["RNA: 145 values above 100x the gene's largest training value; clipped", "RNA: 2 genes missing"],
        ["RNA: 152 values above 100x the gene's largest training value; clipped", "RNA: 2 genes missing"],
        ["RNA: 2 genes missing", "clinical: age missing; using the training mean 70.1"],
    ]
    assert merge_member_warnings(per_member) == [
        "RNA: 145-152 values above 100x the gene's largest training value; clipped (2 of 3 members)",
        "RNA: 2 genes missing",
        "clinical: age missing; using the training mean 70.1 (1 of 3 members)",
    ]
    assert merge_member_warnings([["a 1", "b"]]) == ["a 1", "b"]  # one member: its own lines


def test_km_figure_flags_small_groups_and_carries_the_c_index(tmp_path):
    rng = np.random.default_rng(0)
    n = 4 * (SMALL_GROUP - 1)  # every quartile under SMALL_GROUP patients
    time, event, risk = rng.uniform(1, 100, n), rng.random(n) < 0.4, rng.normal(size=n)
    warnings = plot_km_quartiles(time, event, risk, tmp_path / "km.png", title="t", c_index=(0.7, 0.6, 0.8))
    assert (tmp_path / "km.png").stat().st_size > 10_000
    assert len(warnings) == 1 and "Q1: 3" in warnings[0] and "anecdotes" in warnings[0]
    big = 40
    assert plot_km_quartiles(rng.uniform(1, 9, big), rng.random(big) < 0.5, rng.normal(size=big),
                             tmp_path / "km2.png", c_index=None) == []  # fmt: skip


def test_attention_grid_covers_only_the_tiles_scaled_to_the_slide_maximum():
    coords = np.array([[0, 0], [448, 0], [0, 896]])  # level-0 px; tiles of 448 px; downsample 112
    heat = attention_grid((12, 12), coords, 448, 112.0, np.array([0.2, 0.5, 0.3]))
    assert np.nanmax(heat) == 1.0 and np.isnan(heat).sum() == 144 - 3 * 16
    np.testing.assert_array_equal(heat[0:4, 4:8], 1.0)  # the 0.5 tile, the slide's maximum
    assert heat[0, 0] == pytest.approx(0.2 / 0.5)
