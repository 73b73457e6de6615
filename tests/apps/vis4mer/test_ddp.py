"""ViS4mer under DDP: a video whose spans the DistributedSampler spreads over two processes is
aggregated whole, once, so two CPU processes report what one process reports."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from apps.vis4mer.data import VideoData
from apps.vis4mer.module import VideoClassifier
from tests.apps.ddp_check import assert_same, one_and_two


@pytest.mark.parametrize("verb,task", [("validate", "first_digit"), ("test", "seven_count")])
def test_two_processes_equal_one_with_videos_split_over_processes(verb, task, moving_mnist, tmp_path):
    data = VideoData(root=str(moving_mnist), task=task, l_secs=3, batch_size=3)
    stage = "val" if verb == "validate" else "test"
    data.setup("validate" if stage == "val" else "test")
    spans = data.splits[stage].items
    ranks = [set(spans[i][0] for i in DistributedSampler(spans, 2, r, shuffle=False)) for r in range(2)]
    assert ranks[0] & ranks[1], "no video has spans on both processes"
    torch.manual_seed(0)
    model = VideoClassifier(task=task, d_input=192, d_model=16, n_stages=2, layer={"name": "s4d", "d_state": 4},
                            dropout=0.0)
    one, two = one_and_two(model, data, verb, root=tmp_path)
    metric = f"{stage}/mse" if task == "seven_count" else f"{stage}/acc"
    assert {metric, f"{stage}/loss", f"{stage}/videos"} <= set(one)
    assert one[f"{stage}/videos"] == len(data.splits[stage].videos)
    assert_same(one, two)
