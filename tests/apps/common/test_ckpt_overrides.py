"""``ssm <app> test|validate|predict --ckpt_path X --model.KEY V``: the checkpoint's hyper-parameters fill the
model, the explicit ``--model.*`` options apply on top (with a note), a recipe's ``model:`` values do not, and
an option that changes the trained architecture is one clear line (exit 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from apps.common.cli import load_app, main
from apps.common.lightning import model_options, run_lightning

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "smoke" / "tiny.yaml")
#: a tiny, quick run: one training step on small splits
QUICK = ["--trainer.max_steps", "1", "--data.train_size", "16", "--data.val_size", "16", "--data.test_size", "16"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A smoke checkpoint trained with d_model 8 and dropout 0.1 (the tiny recipe says 16 and 0.0)."""
    root = tmp_path_factory.mktemp("ckpt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSM_RUNS", str(root / "runs"))
        run_lightning("smoke", load_app("smoke"), "fit",
                      ["-c", TINY, *QUICK, "--model.d_model", "8", "--model.dropout", "0.1"])
    ckpt = root / "trained.ckpt"
    shutil.copy(root / "runs" / "smoke" / "tiny" / "checkpoints" / "last.ckpt", ckpt)
    return ckpt


def _test(ckpt: Path, *args: str, recipe: str = TINY):
    return run_lightning("smoke", load_app("smoke"), "test", ["-c", recipe, *QUICK, "--ckpt_path", str(ckpt), *args])


def test_model_options_takes_both_forms_only_of_model_keys():
    args = ["-c", "r.yaml", "--model.dropout", "0.3", "--data.length", "8", "--model.optim.lr=0.5",
            "--model.layer.d_state", "4", "--ckpt_path", "x.ckpt", "--model.shift", "-1"]
    assert model_options(args) == ["--model.dropout", "0.3", "--model.optim.lr", "0.5", "--model.layer.d_state", "4",
                                   "--model.shift", "-1"]
    assert model_options(["--model.compile", "--trainer.max_steps", "1"]) == ["--model.compile"]
    assert model_options(["-c", "r.yaml", "--data.length", "8"]) == []


def test_explicit_model_options_override_the_checkpoint(checkpoint, runs_dir, capsys):
    cli = _test(checkpoint, "--model.dropout", "0.3", "--model.optim.lr=0.5")
    out = capsys.readouterr().out
    assert cli.model.hparams.dropout == 0.3 and cli.model.optim.lr == 0.5  # both option forms took effect
    assert cli.model.hparams.d_model == 8  # the checkpoint's, not the recipe's 16
    assert "note: --model.dropout 0.3 overrides the checkpoint's 0.1" in out
    assert "note: --model.optim.lr 0.5 overrides the checkpoint's 0.01" in out
    saved = yaml.safe_load((runs_dir / "smoke" / "tiny" / "config.test.yaml").read_text())["model"]
    assert saved["dropout"] == 0.3 and saved["optim"]["lr"] == 0.5 and saved["d_model"] == 8


def test_an_option_equal_to_the_checkpoint_prints_no_note(checkpoint, runs_dir, capsys):
    cli = _test(checkpoint, "--model.dropout=0.1")
    assert cli.model.hparams.dropout == 0.1
    assert "note: --model" not in capsys.readouterr().out


def test_a_recipes_model_values_do_not_override_the_checkpoint(checkpoint, runs_dir, tmp_path, capsys):
    recipe = yaml.safe_load(Path(TINY).read_text())
    recipe["model"]["dropout"] = 0.4
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cli = _test(checkpoint, recipe=str(path))
    assert cli.model.hparams.dropout == 0.1 and cli.model.hparams.d_model == 8
    assert "note: --model" not in capsys.readouterr().out


def test_an_architecture_changing_option_is_one_line(checkpoint, runs_dir, capsys):
    code = main(["smoke", "test", "-c", TINY, *QUICK, "--ckpt_path", str(checkpoint), "--model.d_model", "16"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1, captured.err
    assert f"checkpoint {checkpoint} does not fit the model" in err[0]
    assert "is [4, 8] in the checkpoint, [4, 16] in the model" in err[0]
    assert "--model.d_model changes the trained architecture; drop it" in err[0]
    assert "note: --model.d_model 16 overrides the checkpoint's 8" in captured.out


def test_an_override_of_the_wrong_type_is_refused(checkpoint, runs_dir, capsys):
    assert main(["smoke", "test", "-c", TINY, "--ckpt_path", str(checkpoint), "--model.dropout", "lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.dropout" in err[0]


def test_the_progress_bar_can_be_turned_off(checkpoint, runs_dir):
    """``--trainer.enable_progress_bar false`` used to clash with the default rich bar (a one-line error);
    now the run has no progress bar."""
    cli = _test(checkpoint, "--trainer.enable_progress_bar", "false")
    assert cli.trainer.progress_bar_callback is None
