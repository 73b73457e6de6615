"""LRA metrics under DDP: two CPU processes report what one process reports (odd-sized, padded splits)."""

from __future__ import annotations

import pytest
import torch

from apps.lra.data import LRAData
from apps.lra.listops import generate_listops
from apps.lra.module import LRAModule
from tests.apps.ddp_check import assert_same, one_and_two


@pytest.mark.parametrize("task", ["listops", "listops_subtrees"])
@pytest.mark.parametrize("verb", ["validate", "test"])
def test_two_processes_equal_one_on_an_odd_sized_split(task, verb, tmp_path):
    generate_listops(tmp_path, seed=0, n_train=8, n_val=7, n_test=7, min_len=10, max_len=40, max_depth=3,
                     max_args=3, progress=False)
    torch.manual_seed(0)
    model = LRAModule(task=task, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 4, "bidirectional": True})
    data = LRAData(task=task, root=str(tmp_path), batch_size=2)
    one, two = one_and_two(model.eval(), data, verb, root=tmp_path)
    stage = "val" if verb == "validate" else "test"
    assert {f"{stage}/acc", f"{stage}/loss"} <= set(one)
    assert_same(one, two)
