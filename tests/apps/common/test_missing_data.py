"""A run whose dataset is missing or unreadable stops with one line and exit 2 before it writes anything: no
config, no logger folders, no versions that the next, real run would count past."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.common.cli import main

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


@pytest.mark.parametrize(
    ("app", "recipe", "option", "expected"),
    [
        ("speech", "sc_tiny", "--data.root", "data.root not found"),
        ("s4nd", "tiny", "--data.root", "data.root not found"),
        ("sashimi", "piano_tiny", "--data.root", "not found; build a stand-in"),
        ("vis4mer", "tiny", "--data.root", "no feature cache"),
        ("sssd", "tiny", "--data.path", "data file not found"),
        ("lra", "tiny_listops", "--data.root", "not found"),
        ("pendulum", "tiny", "--data.root", "not found"),
        ("smoke", "tiny", "--data.data_dir", "not found"),
    ],
)
@pytest.mark.parametrize("verb", ["fit", "test"])
def test_a_missing_dataset_writes_no_run(app, recipe, option, expected, verb, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SSM_RUNS", str(runs))
    missing = tmp_path / "nowhere" / ("series.npy" if option == "--data.path" else "data")
    assert main([app, verb, "-c", str(RECIPES / app / f"{recipe}.yaml"), option, str(missing)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # Lightning's INFO lines on the Trainer may come first
    assert last.startswith(f"ssm {app} {verb}: error:") and expected in last, last
    assert not runs.exists(), sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))


def test_data_that_cannot_be_read_writes_no_run(tmp_path, monkeypatch, capsys):
    """Not only a missing folder: the data modules load their data before the run writes anything."""
    runs, root = tmp_path / "runs", tmp_path / "speech"
    (root / "yes").mkdir(parents=True)
    for name in ("validation_list.txt", "testing_list.txt"):
        (root / name).write_text("")
    monkeypatch.setenv("SSM_RUNS", str(runs))
    assert main(["speech", "fit", "-c", str(RECIPES / "speech" / "sc_tiny.yaml"), "--data.root", str(root),
                 "--data.words", str(["yes", "no"])]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"word folder {root / 'no'} not found" in last, last
    table = tmp_path / "series.csv"
    table.write_text("date,a,b\n1,2,3\n2,x,4\n3,5,6\n")
    assert main(["sssd", "fit", "-c", str(RECIPES / "sssd" / "tiny.yaml"), "--data.path", str(table),
                 "--data.length", "2", "--data.channels", "2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{table}: non-numeric value" in last, last
    assert not runs.exists()


@pytest.mark.parametrize("verb", ["fit", "test"])
def test_a_missing_checkpoint_writes_no_run(verb, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SSM_RUNS", str(runs))
    missing = tmp_path / "nowhere.ckpt"
    assert main(["smoke", verb, "-c", str(RECIPES / "smoke" / "tiny.yaml"), "--ckpt_path", str(missing)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"checkpoint not found: {missing}" in last and "runs/smoke/tiny/checkpoints/best.ckpt" in last, last
    assert not runs.exists()
