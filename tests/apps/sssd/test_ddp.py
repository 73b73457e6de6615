"""SSSD under DDP: validation loss and the test table over every series of the split, from every
process, with per-series seeds, so two CPU processes report (and write) what one process does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.sssd.data import SeriesData
from apps.sssd.module import SSSDModule
from tests.apps.ddp_check import assert_same, one_and_two

C, L = 3, 16


def _model() -> SSSDModule:
    torch.manual_seed(0)
    model = SSSDModule(channels=C, res_channels=8, skip_channels=8, n_layers=1, layer={"name": "s4d", "d_state": 4},
                       embed_dim_in=8, embed_dim_mid=16, embed_dim_out=16, diffusion_steps=20, mask_ratio=0.5,
                       test_ratios=[0.5, 0.25], test_samples=3, sampler="ddim", sampler_steps=3)
    model.set_stats(np.zeros(C), np.ones(C))
    return model


@pytest.mark.parametrize("verb", ["validate", "test"])
def test_two_processes_equal_one_on_an_odd_sized_split(verb, tmp_path):
    rng = np.random.default_rng(0)
    series = np.sin(np.linspace(0, 6, L))[None, :, None] + 0.1 * rng.standard_normal((24, L, C))
    series[10, 5, 1] = np.nan  # in the validation split: a missing entry is never a target
    np.save(tmp_path / "train.npy", series[:14].astype(np.float32))
    np.save(tmp_path / "test.npy", series[14:21].astype(np.float32))  # 7 series: the sampler pads
    data = SeriesData(path=str(tmp_path / "train.npy"), test_path=str(tmp_path / "test.npy"), channels=C,
                      val_fraction=0.4, batch_size=2)  # 5 validation series
    one, two = one_and_two(_model(), data, verb, root=tmp_path)
    if verb == "test":
        assert {"test/SSSD_MSE@rm0.5", "test/linear_CRPS@rm0.25", "test/mean_MAE@rm0.5"} <= set(one)
    else:
        assert set(one) == {"val/loss"}
    assert_same(one, two, rel=1e-9)
