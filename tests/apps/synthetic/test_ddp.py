"""Synthetic-task metrics under DDP: R^2 and MSE over the whole set from two CPU processes equal one process's."""

from __future__ import annotations

import pytest
import torch

from apps.synthetic.data import SyntheticData
from apps.synthetic.module import SyntheticModule
from tests.apps.ddp_check import assert_same, one_and_two


@pytest.mark.parametrize("verb", ["validate", "test"])
def test_two_processes_equal_one_on_an_odd_sized_split(verb, tmp_path):
    # 11 examples in batches of 4: the sampler pads one process
    data = SyntheticData(task="shift", length=16, num_shifts=2, batch_size=4, steps_per_epoch=1, val_size=11,
                         test_size=11)
    torch.manual_seed(0)
    model = SyntheticModule(task="shift", num_shifts=2, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 4})
    one, two = one_and_two(model, data, verb, root=tmp_path)
    stage = "val" if verb == "validate" else "test"
    assert set(one) == {f"{stage}/loss", f"{stage}/r2"}
    assert_same(one, two)
