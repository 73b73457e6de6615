"""Generator checkpoints load safely, including those written before ``layer``/``optim`` became one value each."""

from __future__ import annotations

import pytest
import torch

from apps.common.errors import UserError
from apps.sashimi.generate import load_generator
from apps.sashimi.module import WaveformGenerator


def test_an_old_spelling_generator_checkpoint_loads(tmp_path):
    new = WaveformGenerator(d_model=8, n_layers=1, pool=[2], layer={"name": "s4", "d_state": 8},
                            optim={"lr": 0.003, "scheduler": "constant"})
    old_hparams = {"_class_path": "apps.sashimi.generator.WaveformGenerator", "d_model": 8, "n_layers": 1, "pool": [2], "expand": 2, "ff_expand": 2, "layer": "s4", "d_state": 8,
                   "dropout": 0.0, "unet": False, "layer_kwargs": None, "quantization": None, "bits": 8,
                   "sample_rate": None, "lr": 0.003, "weight_decay": 0.0, "ssm_lr": None, "ssm_weight_decay": 0.0,
                   "scheduler": "constant", "warmup_steps": 0, "monitor": "val/nll", "monitor_mode": "min"}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": new.state_dict(), "hyper_parameters": old_hparams,
                "waveform": {"quantization": "linear", "bits": 8, "sample_rate": 8000}}, path)
    module = load_generator(path)
    assert module.hparams["layer"] == {"name": "s4", "d_state": 8}
    assert module.optim.lr == 0.003 and module.optim.scheduler == "constant"
    assert module.quantization == "linear" and module.sample_rate == 8000
    for key, value in new.state_dict().items():
        assert torch.equal(module.state_dict()[key], value)


def test_a_crafted_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload()}}, path)
    with pytest.raises(UserError, match="evil.ckpt"):
        load_generator(path)
    assert not marker.exists()
