"""``ssm lra``: prepare, fit, test and table end to end on tiny data, and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.common.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY_LISTOPS = str(ROOT / "recipes" / "lra" / "tiny_listops.yaml")
TINY_PATHFINDER = str(ROOT / "recipes" / "lra" / "tiny_pathfinder.yaml")
LISTOPS_ARGS = ["--n-train", "64", "--n-val", "16", "--n-test", "16", "--min-len", "20", "--max-len", "80",
                "--max-depth", "4", "--max-args", "4"]

#: every test here runs with runs under tmp_path (tests/apps/conftest.py)
pytestmark = pytest.mark.usefixtures("runs_dir")


@pytest.fixture
def listops_root(tmp_path) -> Path:
    root = tmp_path / "lra_tiny"
    assert main(["lra", "prepare", "listops", "--out", str(root), *LISTOPS_ARGS]) == 0
    return root


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_help_lists_the_verbs(capsys):
    assert main(["lra", "--help"]) == 0
    out = capsys.readouterr().out
    assert "prepare" in out and "table" in out and "fit" in out
    assert main(["lra", "prepare", "--help"]) == 0


def test_listops_fit_test_table_end_to_end(listops_root, runs_dir, capsys):
    overrides = ["--data.root", str(listops_root), "--trainer.max_epochs", "1"]
    assert main(["lra", "fit", "-c", TINY_LISTOPS, *overrides]) == 0
    run = runs_dir / "lra" / "tiny_listops"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert "best val/acc" in capsys.readouterr().out
    assert main(["lra", "test", "-c", TINY_LISTOPS, *overrides, "--ckpt_path",
                 str(run / "checkpoints" / "best.ckpt")]) == 0
    record = json.loads((run / "test_metrics.json").read_text())
    assert record["task"] == "listops" and record["layer"] == "s4d" and record["metrics"]["test/count"] == 16
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
    assert main(["lra", "table", "--runs", str(runs_dir / "lra")]) == 0
    assert "ours: s4d" in (runs_dir / "lra" / "lra_table.md").read_text()


def test_listops_subtrees_fit_runs(listops_root):
    assert main(["lra", "fit", "-c", TINY_LISTOPS, "--data.root", str(listops_root), "--data.task",
                 "listops_subtrees", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]) == 0


def test_s4nd_is_swapped_in_by_name_and_runs_over_the_sequence(listops_root, runs_dir):
    overrides = ["--data.root", str(listops_root), "--model.layer.name", "s4nd", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    assert main(["lra", "fit", "-c", TINY_LISTOPS, *overrides]) == 0  # a 2-D shape error before
    run = runs_dir / "lra" / "tiny_listops"
    assert main(["lra", "validate", "-c", TINY_LISTOPS, *overrides, "--ckpt_path",
                 str(run / "checkpoints" / "last.ckpt")]) == 0


def test_pathfinder_prepare_and_fit_end_to_end(tmp_path, runs_dir, capsys):
    pytest.importorskip("apps.lra.pathfinder")
    root = tmp_path / "pf"
    assert main(["lra", "prepare", "pathfinder", "--size", "32", "--n", "40", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    grid = root / "pathfinder32_examples.png"
    assert grid.is_file() and str(grid) in out
    assert main(["lra", "fit", "-c", TINY_PATHFINDER, "--data.root", str(root), "--trainer.max_epochs", "1"]) == 0
    assert (runs_dir / "lra" / "tiny_pathfinder" / "checkpoints" / "last.ckpt").is_file()
    assert main(["lra", "fit", "-c", TINY_PATHFINDER, "--data.root", str(root), "--data.task",
                 "pathfinder_segmentation", "--trainer.max_epochs", "1"]) == 0


def test_prepare_keeps_an_existing_dataset_and_refuses_a_foreign_folder(tmp_path, listops_root, capsys):
    capsys.readouterr()
    before = (listops_root / "listops-1000" / "basic_train.tsv").read_bytes()
    assert main(["lra", "prepare", "listops", "--out", str(listops_root), *LISTOPS_ARGS, "--seed", "1"]) == 0
    assert "kept" in capsys.readouterr().out
    assert (listops_root / "listops-1000" / "basic_train.tsv").read_bytes() == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["lra", "prepare", "listops", "--out", str(foreign), *LISTOPS_ARGS]) == 2
    _one_line_error(capsys, "not written by `ssm ... prepare`")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_prepare_is_deterministic_from_its_seed(tmp_path):
    for name in ("a", "b"):
        assert main(["lra", "prepare", "listops", "--out", str(tmp_path / name), *LISTOPS_ARGS]) == 0
    a = (tmp_path / "a" / "listops-1000" / "basic_test.tsv").read_bytes()
    assert a == (tmp_path / "b" / "listops-1000" / "basic_test.tsv").read_bytes()


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["prepare", "images"], ["unknown dataset 'images'"]),
        (["prepare", "listops", "--n-train", "0"], ["--n-train must be >= 1"]),
        (["prepare", "listops", "--min-len", "90", "--max-len", "50"], ["--min-len 90 is above --max-len 50"]),
        (["frobnicate"], ["unknown verb 'frobnicate'"]),
    ],
)
def test_verb_errors_are_one_line(argv, needles, tmp_path, capsys):
    assert main(["lra", *argv, "--out", str(tmp_path / "x")] if argv[0] == "prepare" and len(argv) > 1
                else ["lra", *argv]) == 2
    _one_line_error(capsys, *needles)


@pytest.mark.parametrize(
    "overrides,needles",
    [
        (["--data.task", "sudoku"], ["data.task: unknown task 'sudoku'"]),
        (["--data.root", "{missing}"], ["not found for data.task listops", "ssm lra prepare listops"]),
        (["--model.pooling", "max"], ["model.pooling: unknown 'max'"]),
        (["--model.layer.name", "lstm"], ["model.layer.name"]),
        (["--data.batch_size", "0"], ["data.batch_size"]),
        (["--model.layer", "{name: mega, bidirectional: true}"], ["'mega' cannot take the padded batches"]),
    ],
)
def test_fit_errors_are_one_line(overrides, needles, listops_root, tmp_path, capsys):
    overrides = [o.replace("{missing}", str(tmp_path / "missing")) for o in overrides]
    argv = ["lra", "fit", "-c", TINY_LISTOPS, "--data.root", str(listops_root), *overrides,
            "--trainer.max_epochs", "1"]
    assert main(argv) == 2
    _one_line_error(capsys, *needles)


def test_pathfinder_task_without_its_folder_names_the_prepare_command(listops_root, capsys):
    assert main(["lra", "fit", "-c", TINY_PATHFINDER, "--data.root", str(listops_root)]) == 2
    _one_line_error(capsys, "pathfinder32", "ssm lra prepare pathfinder --size 32")


RECIPES = sorted((ROOT / "recipes" / "lra").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_builds_its_model_and_data(path, monkeypatch):
    import yaml

    from apps.lra.data import LRAData
    from apps.lra.module import LRAModule

    monkeypatch.setattr(LRAData, "check_root", lambda self: None)  # the recipes' data folders are not here
    recipe = yaml.safe_load(path.read_text())
    assert set(recipe) == {"seed_everything", "trainer", "model", "data"}
    data = LRAData(**recipe["data"])
    module = LRAModule(task=data.task, **recipe["model"])
    assert module.info.n_classes >= 2
    assert "max_time" not in recipe["trainer"] or path.stem.endswith("_cpu")
