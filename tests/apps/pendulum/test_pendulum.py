"""The irregular pendulum app: the generator's physics and noise, the CLI, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.common.cli import main
from apps.pendulum.data import generate, read_split
from apps.pendulum.module import PendulumModule

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "pendulum" / "tiny.yaml")

pytestmark = pytest.mark.usefixtures("runs_dir")


def test_generator_is_deterministic_irregular_and_physical():
    a = generate(6, seed=3)
    b = generate(6, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["frames"], generate(6, seed=4)["frames"])
    assert a["frames"].shape == (6, 50, 24, 24) and a["frames"].dtype == np.uint8
    gaps = np.diff(a["times"], axis=1)
    assert (gaps > 0).all() and len(np.unique(np.round(gaps, 4))) > 1  # increasing, not evenly spaced
    assert np.allclose(np.linalg.norm(a["targets"], axis=-1), 1, atol=1e-5)  # (sin, cos) of one angle
    # energy of a damped pendulum does not grow: E = w^2 / 2 - (g / l) cos(theta) from the RK4 angles
    from apps.pendulum.data import simulate

    theta = simulate(4, 400, 0.01, np.random.default_rng(0))
    omega = np.gradient(theta, 0.01, axis=1)
    energy = omega**2 / 2 - 9.81 * np.cos(theta)
    assert (energy[:, -5] <= energy[:, 5] + 1e-2).all()


def test_clean_frames_show_the_bob_where_the_angle_says():
    """Without noise (the noise factor is 1) the brightest pixel sits on the rod's end at the target angle."""
    from apps.pendulum.data import render

    theta = np.array([0.0, math.pi / 2, -math.pi / 2, math.pi])
    frames = render(theta, 24)
    c, r = 11.5, 0.35 * 24
    for f, th in zip(frames, theta):
        y, x = np.unravel_index(f.argmax(), f.shape)
        assert abs(x - (c + r * math.sin(th))) <= 1 and abs(y - (c + r * math.cos(th))) <= 1


def test_prepare_fit_test_and_times_matter(tmp_path, runs_dir):
    data = tmp_path / "data" / "pendulum_tiny"
    assert main(["pendulum", "prepare", "--out", str(data), "--sizes", "32,16,16"]) == 0
    assert read_split(data, "test")["frames"].shape == (16, 50, 24, 24)
    assert main(["pendulum", "fit", "-c", TINY, "--data.root", str(data)]) == 0
    best = runs_dir / "pendulum" / "tiny" / "checkpoints" / "best.ckpt"
    assert best.is_file()
    assert main(["pendulum", "test", "-c", TINY, "--data.root", str(data), "--ckpt_path", str(best)]) == 0
    # the blind model ignores the times; the timed one does not
    torch.manual_seed(0)
    timed = PendulumModule(d_model=8, n_layers=1, layer={"name": "s5", "d_state": 4}, hidden=8)
    blind = PendulumModule(d_model=8, n_layers=1, layer={"name": "s5", "d_state": 4}, hidden=8, use_times=False)
    blind.load_state_dict(timed.state_dict())
    frames, times = torch.rand(2, 10, 576), torch.cumsum(torch.rand(2, 10) * 0.2, 1)
    assert torch.equal(blind(frames, times), blind(frames, times + 1.0))
    assert not torch.allclose(timed(frames, times), blind(frames, times))
    even = torch.arange(10.0).expand(2, 10) * 0.05
    assert torch.allclose(timed(frames, even), blind(frames, even), atol=1e-6)


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["pendulum", "fit", "-c", TINY, "--data.root", str(tmp_path / "nowhere")]) == 2
    assert "ssm pendulum prepare" in capsys.readouterr().err
    assert main(["pendulum", "fit", "-c", TINY, "--data.root", str(tmp_path), "--model.layer.name", "s4d"]) == 2
    err = capsys.readouterr().err
    assert "model.layer.name" in err and "s5" in err and "use_times false" in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.npz").write_bytes(b"not a zip")
    with pytest.raises(Exception, match="not a pendulum split"):
        read_split(tmp_path / "bad", "train")
    assert main(["pendulum", "prepare", "--out", str(tmp_path / "p"), "--sizes", "1,2"]) == 2


def _small_data(folder: Path) -> Path:
    assert main(["pendulum", "prepare", "--out", str(folder), "--sizes", "4,2,2", "--size", "8", "--observed", "6",
                 "--grid", "12"]) == 0
    return folder


def test_frames_of_another_size_than_the_model_takes_are_one_line(tmp_path, capsys):
    """Frames of another size than model.frame_size: one line naming the key and the fix (it was a matmul
    traceback in the first training step)."""
    data = _small_data(tmp_path / "small")
    capsys.readouterr()
    assert main(["pendulum", "fit", "-c", TINY, "--data.root", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ssm pendulum fit: error: model.frame_size is 24") and "--model.frame_size 8" in err


def test_bad_times_or_targets_are_one_line_naming_the_file(tmp_path, capsys):
    """NaN or decreasing times, non-finite targets, frames that are not square: one line naming the file (they
    were a message naming nothing once training had started)."""
    data = _small_data(tmp_path / "small")
    path, clean = data / "val.npz", read_split(data, "val")
    for key, index, value, expected in [("times", (1, 3), np.nan, "1 non-finite times (first in sequence 1)"),
                                        ("targets", (0, 2, 1), np.inf, "1 non-finite targets"),
                                        ("times", (0, 3), 0.0, "times that go backwards (first in sequence 0)")]:
        split = {k: v.copy() for k, v in clean.items()}
        split[key][index] = value
        np.savez(path, **split)
        assert main(["pendulum", "fit", "-c", TINY, "--data.root", str(data), "--model.frame_size", "8"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"data.root: {path} " in err and expected in err, err
    np.savez(path, **{**clean, "frames": clean["frames"][..., :5]})  # frames that are not square
    with pytest.raises(Exception, match="not frames \\(N, L, size, size\\)"):
        read_split(data, "val")
