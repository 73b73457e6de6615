"""S4ND metrics under DDP: every resolution's accuracy and loss from two CPU processes equal one process's.

``ssm s4nd zero-shot`` evaluates in one process with a plain DataLoader (no DistributedSampler), so
only the Lightning validate / test metrics are concerned."""

from __future__ import annotations

import pytest
import torch

from apps.s4nd.data import ImageData
from apps.s4nd.module import ImageClassifier
from tests.apps.ddp_check import assert_same, one_and_two
from tests.apps.s4nd.conftest import CLASSES, write_image_folder


@pytest.mark.parametrize("verb", ["validate", "test"])
def test_two_processes_equal_one_at_every_resolution(verb, tmp_path):
    root = write_image_folder(tmp_path / "images", side=8, per_split={"train": 2, "val": 3, "test": 3})
    # 9 images per split in batches of 2: the sampler pads one process
    data = ImageData(root=str(root), channels=1, image_size=8, resolution=8, eval_resolutions=[4, 8], batch_size=2)
    torch.manual_seed(0)
    model = ImageClassifier(layer={"name": "s4nd", "d_state": 4}, num_classes=CLASSES, train_resolution=8,
                            eval_resolutions=[4, 8], d_model=8, n_layers=1)
    one, two = one_and_two(model, data, verb, root=tmp_path)
    stage = "val" if verb == "validate" else "test"
    assert {f"{stage}/acc@4", f"{stage}/loss@8", f"{stage}/acc", f"{stage}/loss"} <= set(one)
    assert one[f"{stage}/acc"] == one[f"{stage}/acc@8"]
    assert_same(one, two)
