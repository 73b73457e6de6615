"""``ssm synthetic``: fit through LightningCLI, the suite and robustness verbs, and their errors."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest

from apps.common.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "synthetic" / "tiny.yaml")
SMALL_MODEL = ["--d-model", "8", "--n-layers", "1", "--d-state", "8"]


#: every test here runs with runs under tmp_path (tests/apps/conftest.py)
pytestmark = pytest.mark.usefixtures("runs_dir")


def test_help_lists_the_verbs(capsys):
    assert main(["synthetic", "--help"]) == 0
    out = capsys.readouterr().out
    assert "suite" in out and "robustness" in out and "fit" in out


def test_fit_tiny_recipe_logs_r2_and_checkpoints(capsys, runs_dir):
    assert main(["synthetic", "fit", "-c", TINY]) == 0
    out = capsys.readouterr().out
    ckpts = runs_dir / "synthetic" / "tiny" / "checkpoints"
    assert (ckpts / "last.ckpt").is_file() and (ckpts / "best.ckpt").is_file()
    assert "best val/r2" in out
    metrics = next((runs_dir / "synthetic" / "tiny" / "csv").rglob("metrics.csv")).read_text()
    assert "val/r2" in metrics and "train/loss" in metrics
    assert main(["synthetic", "test", "-c", TINY, "--ckpt_path", str(ckpts / "best.ckpt")]) == 0


def test_fit_links_the_task_to_the_model(runs_dir):
    assert (
        main(
            [
                "synthetic",
                "fit",
                "-c",
                TINY,
                "--data.task",
                "mips",
                "--data.length",
                "16",
                "--data.mips_dim",
                "2",
                "--trainer.max_epochs",
                "1",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.task", "juggle"], "unknown 'juggle'"),
        (["--model.layer.name", "nope"], "unknown layer 'nope'"),
    ],
    ids=["unknown-task", "unknown-layer"],
)
def test_fit_errors_are_one_line(args, expected, capsys):
    assert main(["synthetic", "fit", "-c", TINY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_suite_writes_markdown_csv_and_heatmap(tmp_path, capsys):
    out = tmp_path / "suite"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code = main(["synthetic", "suite", "--layers", "s4d", "--tasks", "shift,cumsum", "--length", "16", "--steps", "2",
                     "--evals", "1", "--val-size", "4", "--batch-size", "2", *SMALL_MODEL, "--accelerator", "cpu",
                     "--out", str(out)])
    assert code == 0
    noise = ("LeafSpec", "`IterableDataset` has `__len__`")  # Lightning's, about its own code or workers we lack
    assert not [w for w in seen if any(n in str(w.message) for n in noise)]
    printed = capsys.readouterr().out
    for name in ("results.md", "results.csv", "heatmap.png"):
        assert (out / name).is_file() and str(out / name) in printed
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["task"], r["layer"]) for r in rows] == [("shift", "s4d"), ("cumsum", "s4d")]
    assert all(float(r["r2"]) <= 1 and float(r["position_r2"]) <= 1 for r in rows)
    md = (out / "results.md").read_text()
    assert "| Shift |" in md and "| CumSum |" in md
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--layers", "s4d,lstm"], "unknown layer lstm in --layers; choose from"),
        (["--tasks", "shift,juggle"], "unknown task juggle in --tasks; choose from shift, cumsum"),
        (["--d-model", "-1"], "--d-model must be at least 1, got -1"),  # was a tensor-shape traceback
        (["--val-size", "0"], "--val-size must be at least 1, got 0"),  # was "torch.cat(): expected a non-empty..."
        (["--evals", "0"], "--evals must be at least 1, got 0"),
        (["--ssm-lr", "nan"], "--ssm-lr must be a finite positive number, got nan"),
    ],
    ids=["layer", "task", "negative-width", "no-validation", "no-evals", "nan-lr"],
)
def test_suite_unknown_names(args, expected, capsys):
    assert main(["synthetic", "suite", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_robustness_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "robust"
    assert (
        main(
            [
                "synthetic",
                "robustness",
                "--layers",
                "s4d",
                "--downsample",
                "7",
                "--epochs",
                "1",
                "--max-steps",
                "2",
                "--train-size",
                "100",
                "--val-size",
                "50",
                *SMALL_MODEL,
                "--omegas",
                "0.1,1",
                "--accelerator",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for name in ("robustness.md", "robustness.csv", "robustness.png"):
        assert (out / name).is_file() and str(out / name) in printed
    rows = list(csv.DictReader(open(out / "robustness.csv")))
    assert rows[0]["layer"] == "s4d" and {"clean", "omega=0.1", "omega=1.0", "worst_drop"} <= set(rows[0])
    assert 0 <= float(rows[0]["clean"]) <= 1


def test_robustness_bad_input(capsys):
    assert main(["synthetic", "robustness", "--omegas", "low,high"]) == 2
    assert "--omegas must be comma-separated numbers" in capsys.readouterr().err
    assert main(["synthetic", "robustness", "--layers", "s4d", "--downsample", "3"]) == 2
    assert "--downsample must divide 28" in capsys.readouterr().err


def test_a_study_never_overwrites_an_earlier_ones_results(tmp_path, monkeypatch, capsys):
    """A second ``ssm synthetic suite`` (or ``robustness``) wrote its tables over the first's in the default folder
    or the given --out; now the default moves to ``suite-v2`` and a used --out is refused before any training."""
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "results.csv").write_text("task,layer,r2\nshift,s4d,0.5\n")
    (earlier / "robustness.csv").write_text("layer,clean\ns4d,0.9\n")
    for verb, table in (("suite", "results.csv"), ("robustness", "robustness.csv")):
        assert main(["synthetic", verb, "--layers", "s4d", "--out", str(earlier)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--out {earlier} already holds the results" in err and table in err
    assert (earlier / "results.csv").read_text() == "task,layer,r2\nshift,s4d,0.5\n"
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    default = tmp_path / "runs" / "synthetic" / "suite"
    default.mkdir(parents=True)
    (default / "results.csv").write_text("kept\n")
    assert main(["synthetic", "suite", "--layers", "s4d", "--tasks", "shift", "--length", "16", "--steps", "1",
                 "--evals", "1", "--val-size", "4", "--batch-size", "2", *SMALL_MODEL, "--accelerator", "cpu"]) == 0
    assert f"this one writes under {default.with_name('suite-v2')}" in capsys.readouterr().out
    assert (default / "results.csv").read_text() == "kept\n"
    assert (default.with_name("suite-v2") / "results.csv").is_file()
