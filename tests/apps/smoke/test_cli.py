"""The ``ssm`` CLI end to end on the smoke app: fit, resume, errors, DDP."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from apps.common.cli import main
from apps.common.prepared import MARKER

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "smoke" / "tiny.yaml")


#: every test here runs with runs under tmp_path (tests/apps/conftest.py)
pytestmark = pytest.mark.usefixtures("runs_dir")


def ssm(*args: str, env_runs: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "SSM_RUNS": str(env_runs), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "apps.common.cli", *args], env=env, capture_output=True,
                          text=True, check=check, **kw)


def test_help_lists_apps(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "smoke" in out and "usage: ssm" in out
    assert main(["smoke", "--help"]) == 0
    assert "prepare" in capsys.readouterr().out


def test_fit_writes_checkpoints_logs_and_prints_paths(capsys, runs_dir):
    assert main(["smoke", "fit", "-c", TINY]) == 0
    out = capsys.readouterr().out
    ckpts = runs_dir / "smoke" / "tiny" / "checkpoints"
    assert (ckpts / "last.ckpt").is_file() and (ckpts / "best.ckpt").is_file()
    assert str(ckpts / "last.ckpt") in out
    metrics = list((runs_dir / "smoke" / "tiny" / "csv").rglob("metrics.csv"))
    assert metrics and "val/acc" in metrics[0].read_text()
    assert list((runs_dir / "smoke" / "tiny" / "tensorboard").rglob("events.out.tfevents*"))
    assert not list(ckpts.glob("*.tmp"))
    assert main(["smoke", "test", "-c", TINY, "--ckpt_path", str(ckpts / "best.ckpt")]) == 0


def test_print_config():
    with pytest.raises(SystemExit) as e:
        main(["smoke", "fit", "-c", TINY, "--print_config"])
    assert e.value.code == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-c", TINY, "--model.no_such_key", "1"], "no_such_key"),
        (["-c", "recipes/smoke/missing.yaml"], "recipe file not found: recipes/smoke/missing.yaml"),
        (["-c", TINY, "--trainer.max_epochs", "three"], "max_epochs"),
        (["-c", TINY, "--data.data_dir", "nowhere/smoke"], "data.data_dir not found: nowhere/smoke"),
        (["-c", TINY, "--model.optim.scheduler", "sometimes"], "model.optim.scheduler"),
        (["-c", TINY, "--model.layer.d_state", "many"], "model.layer.d_state: expected an integer"),
        (["-c", TINY, "--model.layer.colour", "red"], "model.layer.colour: s4d has no option"),
        (["-c", TINY, "--model.layer.name", "lstm"], "model.layer.name: unknown layer"),
        (["-c", TINY, "--model.optim.ssm_lr", "{Q: 0.1}"], "unknown parameter kind"),
    ],
    ids=["unknown-key", "missing-recipe", "bad-value", "missing-data-dir", "bad-choice", "bad-layer-value",
         "unknown-layer-option", "unknown-layer", "bad-ssm-lr-kind"],
)
def test_user_errors_are_one_line_with_exit_2(args, expected, capsys):
    assert main(["smoke", "fit", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err and err.startswith("ssm smoke fit: error:")


def test_a_recipe_path_given_from_another_folder_is_named_in_full(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a user outside the source tree, with the README's relative path
    assert main(["smoke", "fit", "-c", "recipes/smoke/tiny.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"did you mean {TINY}?" in err and str(tmp_path) in err
    assert main(["smoke", "fit", "-c", "recipes/smoke/missing.yaml"]) == 2
    assert f"the recipes are in {ROOT / 'recipes' / 'smoke'}/" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_debug_shows_the_traceback():
    with pytest.raises(Exception, match="recipe file not found"):
        main(["smoke", "fit", "-c", "missing.yaml", "--debug"])


def test_unknown_app_and_verb(capsys):
    assert main(["nope", "fit"]) == 2
    assert main(["smoke", "dance"]) == 2
    assert "unknown verb 'dance'" in capsys.readouterr().err


def test_prepare_then_fit_from_data_dir(tmp_path, capsys):
    out = tmp_path / "smoke-data"
    assert main(["smoke", "prepare", "--out", str(out), "--length", "32", "--delay", "4", "--sizes", "64,32,32",
                 "--vocab", "4"]) == 0
    assert {p.name for p in out.iterdir()} == {"train.pt", "val.pt", "test.pt", MARKER}
    assert main(["smoke", "fit", "-c", TINY, "--data.data_dir", str(out), "--trainer.max_epochs", "1"]) == 0


def _final_step(ckpt: Path) -> tuple[int, int]:
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    return blob["global_step"], blob["epoch"]


def test_killed_fit_resumes_to_the_same_final_step(runs_dir):
    """A fit killed after its first checkpoint resumes from last.ckpt and ends at the planned step."""
    epochs = 25  # 64 examples / batch 16 = 4 steps per epoch -> 100 steps
    args = ["smoke", "fit", "-c", TINY, "--trainer.max_epochs", str(epochs)]
    env = {**os.environ, "SSM_RUNS": str(runs_dir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "apps.common.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = runs_dir / "smoke" / "tiny" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill, _ = _final_step(last)
    assert 0 < step_at_kill < 4 * epochs, "the run was not interrupted halfway"
    ssm(*args[:], "--ckpt_path", str(last), env_runs=runs_dir)
    assert _final_step(last) == (4 * epochs, epochs - 1)


def test_ddp_spawn_on_two_cpu_processes_trains(runs_dir):
    result = ssm("smoke", "fit", "-c", TINY, "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2",
                 "--trainer.accelerator", "cpu", "--trainer.max_epochs", "4", env_runs=runs_dir, timeout=300)
    assert "fit done" in result.stdout
    rows = list(csv.DictReader(open(next((runs_dir / "smoke" / "tiny" / "csv").rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 4 and min(losses[-2:]) < losses[0]


@pytest.mark.parametrize("name", ["dss", "s4nd"])  # s4nd: the N-D layer runs over the sequence (dim 1)
def test_model_layer_takes_a_bare_name(runs_dir, name):
    """``--model.layer NAME`` swaps the recipe's whole layer spec for that layer with its defaults."""
    assert main(["smoke", "fit", "-c", TINY, "--model.layer", name, "--trainer.max_epochs", "1"]) == 0
    config = (runs_dir / "smoke" / "tiny" / "config.yaml").read_text()
    assert f"layer: {name}" in config


def test_a_data_dir_that_does_not_fit_the_recipe_is_one_line(tmp_path, capsys):
    """Splits prepared with a larger vocabulary than data.vocab, or files that are not splits, are refused with
    one line naming the file (they reached the embedding as an IndexError traceback)."""
    out = tmp_path / "smoke-data"
    assert main(["smoke", "prepare", "--out", str(out), "--length", "32", "--delay", "4", "--sizes", "8,8,8",
                 "--vocab", "8"]) == 0
    capsys.readouterr()
    assert main(["smoke", "fit", "-c", TINY, "--data.data_dir", str(out)]) == 2  # the recipe's vocab is 4
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after Lightning's INFO lines about the devices
    assert err.startswith("ssm smoke fit: error:") and f"{out / 'train.pt'} holds token values 0..7" in err and "data.vocab" in err
    (out / "val.pt").write_text("not a tensor file")
    assert main(["smoke", "fit", "-c", TINY, "--data.data_dir", str(out), "--data.vocab", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ssm smoke fit: error:") and f"cannot read {out / 'val.pt'}" in err and "ssm smoke prepare" in err
    torch.save({"tokens": torch.zeros(2, 3)}, out / "val.pt")
    assert main(["smoke", "fit", "-c", TINY, "--data.data_dir", str(out), "--data.vocab", "8"]) == 2
    assert f"{out / 'val.pt'} does not hold the" in capsys.readouterr().err
