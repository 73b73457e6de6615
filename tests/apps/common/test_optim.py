"""The optimiser as one value: OptimConfig, the one configure_optimizers, and the layer spec on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from apps.common.cli import main
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.smoke.module import DelayedRecallModule

TINY = str(Path(__file__).resolve().parents[3] / "recipes" / "smoke" / "tiny.yaml")


def test_ssm_lr_by_kind_reaches_the_optimizer():
    module = DelayedRecallModule(vocab=4, d_model=8, n_layers=1, layer={"name": "s4", "d_state": 4},
                                 optim={"lr": 1e-2, "ssm_lr": {"A": 1e-3, "dt": 2e-3}, "scheduler": "plateau"})
    config = module.configure_optimizers()
    groups = {g["name"]: g for g in config["optimizer"].param_groups}
    assert groups["ssm_A"]["lr"] == 1e-3 and groups["ssm_dt"]["lr"] == 2e-3 and groups["ssm_B"]["lr"] == 1e-2
    assert groups["decay"]["weight_decay"] == 0.01 and groups["ssm_A"]["weight_decay"] == 0.0
    assert config["lr_scheduler"]["monitor"] == "val/acc"


def test_a_partial_optim_keeps_the_module_defaults_and_is_saved_as_plain_values():
    module = DelayedRecallModule(vocab=4, d_model=8, n_layers=1, optim={"lr": 0.05})
    assert module.optim == OptimConfig(lr=0.05, ssm_lr=1e-3)  # ssm_lr: the smoke model's default
    assert module.hparams.optim == module.optim.as_dict() and isinstance(module.hparams.optim, dict)


@pytest.mark.parametrize(("optim", "message"), [
    ({"lr": -1.0}, "must be positive"),
    ({"scheduler": "sometimes"}, "model.optim.scheduler: unknown 'sometimes'"),
    ({"ssm_lr": {"Q": 0.1}}, "unknown parameter kind 'Q'"),
    ({"momentum": 0.9}, "model.optim.momentum: unknown option"),
])
def test_bad_optimiser_values_name_the_key(optim, message):
    with pytest.raises(ValueError, match=message):
        DelayedRecallModule(vocab=4, d_model=8, n_layers=1, optim=optim)


def test_the_older_positional_call_still_works():
    """``TaskModule(lr, weight_decay, ssm_lr, ssm_weight_decay, scheduler, warmup_steps, monitor, monitor_mode)``."""
    module = TaskModule(0.004, 0.0, None, 0.0, "cosine", 10, "val/nll", "min")
    assert module.optim == OptimConfig(lr=0.004, weight_decay=0.0, warmup_steps=10)
    assert (module.monitor, module.monitor_mode) == ("val/nll", "min")


def test_layer_and_optim_from_the_command_line_arrive_typed(capsys):
    args = ["smoke", "fit", "-c", TINY, "--model.layer.name", "s5", "--model.layer.d_state", "16",
            "--model.layer.dropout", "0.25", "--model.optim.ssm_lr", "{A: 0.001, B: 0.005}", "--print_config"]
    with pytest.raises(SystemExit):
        main(args)
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["layer"] == {"name": "s5", "d_state": 16, "dropout": 0.25}
    module = DelayedRecallModule(**model, vocab=4)
    layer = module.net.backbone.center[0].layer
    assert type(layer).__name__ == "S5" and layer.d_state == 16 and isinstance(layer.d_state, int)
    assert layer.dropout.p == 0.25 and module.net.backbone.center[0].dropout is not layer.dropout
    assert module.optim.ssm_lr == {"A": 0.001, "B": 0.005}
    assert torch.isfinite(module.net(torch.zeros(1, 8, dtype=torch.long))).all()
