"""SaShiMi NLL under DDP: bits per sample over every clip from two CPU processes equal one process's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.sashimi.module import WaveformGenerator
from apps.sashimi.waveform import WaveformData
from tests.apps.ddp_check import assert_same, one_and_two


@pytest.mark.parametrize("verb", ["validate", "test"])
def test_two_processes_equal_one_with_a_padded_last_clip(verb, tmp_path):
    import soundfile

    t = np.arange(4500) / 16000
    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir()
        soundfile.write(tmp_path / split / "0.wav", (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    # 4500 samples -> 5 clips of 1000, the last padded (500 samples): the sampler pads one process too
    data = WaveformData(root=str(tmp_path), segment_length=1000, last="pad", batch_size=2)
    torch.manual_seed(0)
    model = WaveformGenerator(d_model=8, n_layers=1, pool=[4], layer={"name": "s4", "d_state": 4},
                              sample_every_n_epochs=0)
    one, two = one_and_two(model, data, verb, root=tmp_path / "run")
    stage = "val" if verb == "validate" else "test"
    assert set(one) == {f"{stage}/loss", f"{stage}/nll"}
    assert_same(one, two)
