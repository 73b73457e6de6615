"""Pendulum MSE under DDP: two CPU processes report what one process reports (odd-sized splits)."""

from __future__ import annotations

import pytest
import torch

from apps.pendulum.data import PendulumData, prepare
from apps.pendulum.module import PendulumModule
from tests.apps.ddp_check import assert_same, one_and_two


@pytest.mark.parametrize("verb", ["validate", "test"])
def test_two_processes_equal_one_on_an_odd_sized_split(verb, tmp_path):
    prepare(["--out", str(tmp_path / "p"), "--sizes", "4,7,7", "--size", "8", "--observed", "10", "--grid", "20"])
    torch.manual_seed(0)
    model = PendulumModule(frame_size=8, d_model=8, n_layers=1, layer={"name": "s5", "d_state": 4}, hidden=8)
    one, two = one_and_two(model, PendulumData(root=str(tmp_path / "p"), batch_size=2), verb, root=tmp_path)
    assert set(one) == {"val/mse" if verb == "validate" else "test/mse"}
    assert_same(one, two)
