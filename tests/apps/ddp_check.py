"""Evaluate one model on one datamodule with one process and with two (DDP on CPU, gloo), for the
``test_ddp*.py`` tests of every app: the metrics must be the same."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

#: fork starts the two processes in a fraction of a second; ``ddp_spawn`` (the CLI's choice) runs the same
#: strategy with freshly started interpreters, checked end to end in tests/apps/smoke/test_ddp.py
STRATEGY = "ddp_fork"


def evaluate(model: pl.LightningModule, datamodule: pl.LightningDataModule, verb: str = "validate",
             devices: int = 1, strategy: str = STRATEGY, root: Any = None) -> dict[str, float]:
    """The metrics of ``trainer.<verb>`` (validate / test) of ``model``, as rank 0 logs them."""
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy if devices > 1 else "auto",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root)
    out = getattr(trainer, verb)(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in out[0].items()}


def one_and_two(model: pl.LightningModule, datamodule: pl.LightningDataModule, verb: str = "validate",
                root: Any = None) -> tuple[dict[str, float], dict[str, float]]:
    """``(one-process metrics, two-process metrics)`` of the same model and data."""
    torch.manual_seed(0)
    one = evaluate(model, datamodule, verb, devices=1, root=root)
    two = evaluate(model, datamodule, verb, devices=2, root=root)
    return one, two


def assert_same(one: dict[str, float], two: dict[str, float], rel: float = 1e-5) -> None:
    """The same metric names, and values within ``rel`` (float32 sums in another order)."""
    assert one.keys() == two.keys(), (sorted(one), sorted(two))
    for key in one:
        assert abs(one[key] - two[key]) <= rel * max(1.0, abs(one[key])), (key, one[key], two[key])
