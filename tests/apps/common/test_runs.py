"""A new fit never overwrites an earlier run; test and validate never rewrite the run's files."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from apps.common.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "smoke" / "tiny.yaml")


#: every test here runs with runs under tmp_path (tests/apps/conftest.py)
pytestmark = pytest.mark.usefixtures("runs_dir")


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_second_fit_goes_to_a_new_version_and_resume_stays_in_its_run(runs_dir, capsys):
    first = runs_dir / "smoke" / "tiny"
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1"]) == 0
    before = _snapshot(first)
    assert "checkpoints/best.ckpt" in before and "config.yaml" in before
    capsys.readouterr()
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1", "--seed_everything", "3"]) == 0
    out = capsys.readouterr().out
    second = runs_dir / "smoke" / "tiny-v2"
    assert f"this run writes under {second}" in out and (second / "checkpoints" / "best.ckpt").is_file()
    assert _snapshot(first) == before  # the first run, byte for byte
    # a resume writes into the run that holds the checkpoint, and only there
    third_before = _snapshot(second)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "2",
                     "--ckpt_path", str(second / "checkpoints" / "last.ckpt")]) == 0
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]  # a resume finds its folder full
    assert _snapshot(second) != third_before and _snapshot(first) == before
    assert not (runs_dir / "smoke" / "tiny-v3").exists()


def test_test_and_validate_write_beside_the_run(runs_dir):
    run = runs_dir / "smoke" / "tiny"
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1"]) == 0
    config, best = (run / "config.yaml").read_bytes(), (run / "checkpoints" / "best.ckpt").read_bytes()
    metrics = {p: p.read_bytes() for p in run.rglob("metrics.csv")}
    for verb in ("test", "validate"):
        assert main(["smoke", verb, "-c", TINY, "--ckpt_path", str(run / "checkpoints" / "best.ckpt")]) == 0
        assert (run / f"config.{verb}.yaml").is_file()
    assert (run / "config.yaml").read_bytes() == config and (run / "checkpoints" / "best.ckpt").read_bytes() == best
    assert all(p.read_bytes() == text for p, text in metrics.items())
    assert len(list(run.rglob("metrics.csv"))) == len(metrics) + 2  # one new CSV log per verb
    # a checkpoint kept elsewhere (copied, downloaded) is tested without Lightning's best-k bookkeeping warning
    kept = runs_dir / "downloaded.ckpt"
    kept.write_bytes(best)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["smoke", "test", "-c", TINY, "--ckpt_path", str(kept),
                     "--trainer.default_root_dir", str(runs_dir / "elsewhere")]) == 0
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]


def test_a_named_run_folder_that_holds_a_run_is_refused(runs_dir, tmp_path, capsys):
    named = tmp_path / "my_run"
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(named)]) == 0
    before = _snapshot(named)
    capsys.readouterr()
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1",
                 "--trainer.default_root_dir", str(named)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--ckpt_path" in err[0]
    assert _snapshot(named) == before


def test_predict_writes_its_predictions_and_never_over_earlier_ones(runs_dir, capsys):
    import torch

    run = runs_dir / "smoke" / "tiny"
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1"]) == 0
    ckpt = str(run / "checkpoints" / "best.ckpt")
    for name in ("predictions.pt", "predictions-v2.pt"):
        capsys.readouterr()
        assert main(["smoke", "predict", "-c", TINY, "--ckpt_path", ckpt]) == 0
        assert str(run / name) in capsys.readouterr().out
        batches = torch.load(run / name, weights_only=True)["batches"]
        assert len(batches) >= 1 and all(isinstance(b, torch.Tensor) for b in batches)


def test_predict_of_an_app_without_predictions_is_refused(runs_dir, capsys):
    recipe = str(ROOT / "recipes" / "sashimi" / "piano_tiny.yaml")
    assert main(["sashimi", "predict", "-c", recipe, "--data.root", str(runs_dir)]) == 2
    assert "has no predictions to write" in capsys.readouterr().err


def test_ssm_data_moves_the_recipes_data_paths(runs_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSM_DATA", str(tmp_path / "elsewhere"))
    assert main(["smoke", "prepare", "--out", str(tmp_path / "elsewhere" / "smoke"), "--sizes", "32,16,16",
                 "--vocab", "4", "--length", "32", "--delay", "4"]) == 0
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1", "--data.data_dir", "data/smoke"]) == 0
    # there is no ./data/smoke here: the run read $SSM_DATA/smoke, and its config says so
    assert f"data_dir: {tmp_path / 'elsewhere' / 'smoke'}" in (runs_dir / "smoke" / "tiny" / "config.yaml").read_text()


def test_a_folder_left_by_a_failed_fit_is_reused(runs_dir, capsys):
    run = runs_dir / "smoke" / "tiny"
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1", "--data.data_dir", "nowhere"]) == 2
    (run / "csv").mkdir(parents=True, exist_ok=True)  # what a fit that failed in its first step leaves
    (run / "config.yaml").write_text("# the failed run's config\n")
    assert main(["smoke", "fit", "-c", TINY, "--trainer.max_epochs", "1"]) == 0
    assert (run / "checkpoints" / "best.ckpt").is_file() and not (runs_dir / "smoke" / "tiny-v2").exists()


def test_a_verbs_default_output_is_in_the_run_or_beside_a_checkpoint_kept_elsewhere(tmp_path):
    from apps.common.runs import beside_checkpoint

    run = tmp_path / "runs" / "app" / "recipe"
    assert beside_checkpoint(run / "checkpoints" / "best.ckpt", "samples") == run / "samples"
    assert beside_checkpoint(tmp_path / "downloads" / "model.ckpt", "samples") == tmp_path / "downloads" / "samples"
    assert beside_checkpoint(tmp_path / "exports" / "piano", "zero-shot") == tmp_path / "exports" / "zero-shot"

