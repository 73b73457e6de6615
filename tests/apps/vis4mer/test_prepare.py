"""The Moving-MNIST stand-in: LVU layout, labels that match the videos, the digit backbone's inputs."""

import numpy as np
import pytest
import torch

from apps.common.errors import UserError
from apps.vis4mer.data import read_lvu
from apps.vis4mer.digit_backbone import place_digits
from apps.vis4mer.prepare import INSTANCE_RANGES, render_video
from apps.vis4mer.video import read_frames


def test_layout_and_labels(moving_mnist):
    first = {split: read_lvu(moving_mnist, "first_digit", split) for split in ("train", "val", "test")}
    count = {split: read_lvu(moving_mnist, "seven_count", split) for split in ("train", "val", "test")}
    assert [len(first[s]) for s in ("train", "val", "test")] == [8, 2, 2]
    for split in first:
        assert [v for v, _ in first[split]] == [v for v, _ in count[split]]
        assert all(0 <= y <= 9 for _, y in first[split]) and all(1 <= y <= 4 for _, y in count[split])
    video = first["train"][0][0]
    frames, info = read_frames(moving_mnist / "videos" / f"{video}.mp4", fps=None, num_samples=4)
    assert info["num_frames"] == 32 and info["video_fps"] == 4.0  # 8 s at 4 fps
    assert frames.shape == (4, 32, 32, 3) and frames.float().mean() > 5  # digits are on screen


def test_rendering_keeps_digits_inside_and_segments_in_order():
    rng = np.random.default_rng(0)
    digits = [np.full((28, 28), v, np.uint8) for v in (50, 100, 150)]
    frames = render_video([1, 2, 3], digits, seconds=3, fps=4, canvas=34, rng=rng)
    assert frames.shape == (12, 34, 34, 3)
    assert [int(f.max()) for f in frames] == [50] * 4 + [100] * 4 + [150] * 4
    assert all(int((f[..., 0] > 0).sum()) == 28 * 28 for f in frames)  # whole digit on the canvas


def test_digit_backbone_inputs_and_disjoint_instances():
    images = np.full((5, 28, 28), 255, np.uint8)
    placed = place_digits(images, 36, np.random.default_rng(0))
    assert placed.shape == (5, 36, 36, 3) and placed.dtype == torch.uint8
    assert all(int((p[..., 0] > 0).sum()) == 28 * 28 for p in placed)
    ranges = sorted(INSTANCE_RANGES.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))  # train/val/test digits never shared


def test_bad_options(tmp_path):
    from apps.vis4mer.prepare import prepare_moving_mnist

    with pytest.raises(UserError, match="--canvas"):
        prepare_moving_mnist(tmp_path, videos=10, canvas=27)
    with pytest.raises(UserError, match="--seed >= 0"):
        prepare_moving_mnist(tmp_path, videos=10, seed=-1)


@pytest.mark.parametrize("option,value", [("--canvas", "20")])
def test_digit_backbone_bad_options_are_one_line(option, value, tmp_path, capsys):
    from apps.common.cli import main

    assert main(["vis4mer", "prepare", "digit-backbone", "--out", str(tmp_path / "b.pth"), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{option} >= " in err and value in err
    assert not (tmp_path / "b.pth").exists()


def test_prepare_help_and_errors_list_both_things_it_builds(capsys):
    from apps.common.cli import main

    assert main(["vis4mer", "prepare", "--help"]) == 0
    out = capsys.readouterr().out
    assert "moving-mnist" in out and "digit-backbone" in out
    assert main(["vis4mer", "prepare", "moving-minst"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown dataset 'moving-minst'" in err and "digit-backbone" in err
