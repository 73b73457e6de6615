"""Smoke metrics under DDP: two CPU processes report what one process reports."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apps.smoke.data import DelayedRecallData
from apps.smoke.module import DelayedRecallModule
from tests.apps.ddp_check import assert_same, one_and_two

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "smoke" / "tiny.yaml")


def _model() -> DelayedRecallModule:
    torch.manual_seed(0)
    return DelayedRecallModule(vocab=4, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 4})


@pytest.mark.parametrize("verb", ["validate", "test"])
def test_two_processes_equal_one_on_an_odd_sized_split(verb, tmp_path):
    # 13 sequences in batches of 4: the sampler pads rank 1 with sequence 0, batches end unevenly
    data = DelayedRecallData(vocab=4, length=16, delay=2, train_size=8, val_size=13, test_size=13, batch_size=4)
    one, two = one_and_two(_model(), data, verb, root=tmp_path)
    stage = "val" if verb == "validate" else "test"
    assert set(one) == {f"{stage}/loss", f"{stage}/acc"}
    assert_same(one, two)


def _cli(*args: str, runs: Path) -> None:
    env = {**os.environ, "SSM_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "apps.common.cli", *args], env=env, capture_output=True, text=True,
                   check=True, timeout=600)


def _last_metrics(runs: Path, version: int) -> dict[str, float]:
    path = runs / "smoke" / "tiny" / "csv" / f"version_{version}" / "metrics.csv"
    row = list(csv.DictReader(open(path)))[-1]
    return {k: float(v) for k, v in row.items() if k.startswith("val/") and v}


@pytest.mark.slow
def test_cli_ddp_spawn_validate_equals_one_process(runs_dir):
    """`ssm smoke validate` with --trainer.strategy ddp_spawn on two CPU processes, end to end."""
    args = ["smoke", "validate", "-c", TINY, "--data.val_size", "33"]
    _cli(*args, runs=runs_dir)
    _cli(*args, "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
         runs=runs_dir)
    one, two = _last_metrics(runs_dir, 0), _last_metrics(runs_dir, 1)
    assert set(one) == {"val/loss", "val/acc"}
    assert_same(one, two)
