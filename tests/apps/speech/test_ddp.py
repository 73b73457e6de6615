"""Speech Commands metrics under DDP: two CPU processes report what one process reports.

``ssm speech zero-shot`` and ``ssm speech score`` evaluate in one process with a plain DataLoader
(no DistributedSampler), so only the Lightning validate / test metrics are concerned."""

from __future__ import annotations

import pytest
import torch

from apps.speech.data import SpeechCommandsData
from apps.speech.module import SpeechClassifier
from tests.apps.ddp_check import assert_same, one_and_two
from tests.apps.speech.speech_sets import WORDS, tiny_set


@pytest.mark.parametrize("verb,sample_rate", [("validate", 16000), ("test", 8000)])
def test_two_processes_equal_one(verb, sample_rate, tmp_path_factory, tmp_path):
    root = tiny_set(tmp_path_factory, per_word=30, name="learn")  # 9 clips per split: the sampler pads
    data = SpeechCommandsData(root=str(root), words=WORDS, sample_rate=sample_rate, batch_size=4,
                              eval_batch_size=2, stats_clips=8)
    torch.manual_seed(0)
    model = SpeechClassifier(num_classes=3, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 4},
                             pool=[4], train_rate=16000)
    one, two = one_and_two(model, data, verb, root=tmp_path)
    stage = "val" if verb == "validate" else "test"
    assert {f"{stage}/loss", f"{stage}/acc"} <= set(one)
    if stage == "test":
        assert one["test/rate"] == two["test/rate"] == 2.0
    assert_same(one, two)
