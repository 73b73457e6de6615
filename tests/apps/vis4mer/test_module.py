"""Per-video aggregation and the label readers."""

import json

import pytest
import torch

from apps.common.errors import UserError
from apps.vis4mer.data import read_breakfast, read_coin, read_lvu, task_outputs
from apps.vis4mer.module import aggregate_per_video


def test_classification_sums_the_softmax_of_every_span():
    # video 7: two weakly-B spans and one confident-A span; majority vote says B, summed softmax says A
    video = torch.tensor([7, 7, 7, 3])
    logits = torch.tensor([[0.0, 0.4], [0.0, 0.4], [6.0, 0.0], [0.0, 2.0]])
    pred, target = aggregate_per_video(video, logits, torch.tensor([0.0, 0.0, 0.0, 1.0]), regression=False)
    assert pred.tolist() == [0, 1] and target.tolist() == [0.0, 1.0]  # order of first appearance


def test_regression_averages_the_spans():
    video = torch.tensor([0, 1, 0, 0])
    pred, target = aggregate_per_video(video, torch.tensor([1.0, 5.0, 2.0, 6.0]), torch.tensor([3.0, 4.0, 3.0, 3.0]),
                                       regression=True)
    torch.testing.assert_close(pred, torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(target, torch.tensor([3.0, 4.0]))


def test_lvu_csv_and_tasks(tmp_path):
    folder = tmp_path / "lvu_1.0" / "view_count"
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("view_count youtube_id imdb_id\n12.5 x abc123 tt01\n\n3 y def456 tt02\n")
    assert read_lvu(tmp_path, "view_count", "train") == [("abc123", 12.5), ("def456", 3.0)]
    assert task_outputs("lvu", "view_count") == (True, 1) and task_outputs("lvu", "scene") == (False, 6)
    with pytest.raises(UserError, match="lvu_1.0/view_count/val.csv"):
        read_lvu(tmp_path, "view_count", "val")
    (folder / "val.csv").write_text("h\nbad x abc\n")
    with pytest.raises(UserError, match="val.csv:2"):
        read_lvu(tmp_path, "view_count", "val")
    with pytest.raises(UserError, match="unknown LVU task"):
        task_outputs("lvu", "plot")


def test_breakfast_and_coin_label_files(tmp_path):
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.split1.bundle").write_text("P03_cam01_P03_cereals.txt\nP04_webcam02_P04_tea.txt\n")
    (tmp_path / "splits" / "test.split1.bundle").write_text("P05_cam01_P05_scrambledegg.txt\n")
    assert read_breakfast(tmp_path, "train") == [("P03_cam01_P03_cereals", 0.0), ("P04_webcam02_P04_tea", 9.0)]
    assert read_breakfast(tmp_path, "val") == [("P05_cam01_P05_scrambledegg", 8.0)]
    assert task_outputs("breakfast", "") == (False, 10) and task_outputs("coin", "") == (False, 180)
    database = {"a1": {"recipe_type": 179, "subset": "training"}, "b2": {"recipe_type": 4, "subset": "testing"}}
    (tmp_path / "COIN.json").write_text(json.dumps({"database": database}))
    assert read_coin(tmp_path, "train") == [("a1", 179.0)] and read_coin(tmp_path, "test") == [("b2", 4.0)]
