"""Every app's tiny recipe fits with ``--trainer.precision bf16-mixed`` (one short epoch, finite loss, a checkpoint).

On a CPU, Lightning runs ``16-mixed`` as ``bf16-mixed`` (its warning: "You passed `Trainer(accelerator='cpu',
precision='16-mixed')` but AMP with fp16 is not supported on CPU. Using `precision='bf16-mixed'` instead."), so
float16 training is tested on CUDA only (skipped without a GPU); the layers themselves are held to float32
under CPU float16 autocast in tests/ssmcore/test_precision.py.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.common.cli import main

ROOT = Path(__file__).resolve().parents[3]
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.log_every_n_steps", "1"]


def _smoke(tmp: Path) -> list[str]:
    return ["smoke", "fit", "-c", str(ROOT / "recipes/smoke/tiny.yaml")]


def _synthetic(tmp: Path) -> list[str]:
    return ["synthetic", "fit", "-c", str(ROOT / "recipes/synthetic/tiny.yaml")]


def _sssd(tmp: Path) -> list[str]:
    rng = np.random.default_rng(0)
    t = np.arange(24)[None, :, None]
    for name, n in (("train", 64), ("test", 8)):
        np.save(tmp / f"{name}.npy", np.sin(0.3 * t + rng.uniform(0, 6, (n, 1, 3))).astype(np.float32))
    return ["sssd", "fit", "-c", str(ROOT / "recipes/sssd/tiny.yaml"), "--data.path", str(tmp / "train.npy"),
            "--data.test_path", str(tmp / "test.npy"), "--data.channels", "3", "--data.train_size", "64",
            "--data.val_size", "16", "--data.test_size", "8", "--model.n_layers", "1"]


def _sashimi(tmp: Path) -> list[str]:
    from apps.common.audio import save_wav

    for split, n in {"train": 2, "val": 1, "test": 1}.items():
        for i in range(n):
            save_wav(tmp / "audio" / split / f"{i}.wav", 0.4 * torch.sin(torch.arange(1600) / (5.0 + i)), 16000)
    return ["sashimi", "fit", "-c", str(ROOT / "recipes/sashimi/piano_tiny.yaml"), "--data.root", str(tmp / "audio"),
            "--data.segment_length", "256", "--model.sample_every_n_epochs", "5"]


def _s4nd(tmp: Path) -> list[str]:
    from tests.apps.s4nd.conftest import write_image_folder

    root = write_image_folder(tmp / "images", side=14, per_split={"train": 4, "val": 2, "test": 2})
    return ["s4nd", "fit", "-c", str(ROOT / "recipes/s4nd/tiny.yaml"), "--data.root", str(root),
            "--data.eval_resolutions", "[14]", "--data.batch_size", "4", "--model.num_classes", "3"]


def _speech(tmp: Path) -> list[str]:
    from apps.speech.prepare import build

    words = ["yes", "no", "up"]
    build(tmp / "speech", words, 10, seed=0, noise=0.002, jobs=2, noise_seconds=2.0)
    return ["speech", "fit", "-c", str(ROOT / "recipes/speech/sc_tiny.yaml"), "--data.root", str(tmp / "speech"),
            "--data.words", str(words)]


def _vis4mer(tmp: Path) -> list[str]:
    from apps.vis4mer.features import extract_features
    from apps.vis4mer.prepare import prepare_moving_mnist

    root = tmp / "moving_mnist"
    prepare_moving_mnist(root, videos=12, seconds=8, fps=4, canvas=32, progress=False)
    videos = sorted((root / "videos").glob("*.mp4"))
    extract_features(videos, root / "features", "linear", fps=1.0, image_size=16, patch=8, progress=False)
    return ["vis4mer", "fit", "-c", str(ROOT / "recipes/vis4mer/tiny.yaml"), "--data.root", str(root),
            "--model.d_input", "192", "--data.l_secs", "4"]


def _lra(tmp: Path) -> list[str]:
    from apps.lra.listops import generate_listops

    generate_listops(tmp / "lra", seed=0, n_train=16, n_val=8, n_test=8, min_len=10, max_len=40, max_depth=3,
                     max_args=3, progress=False)
    return ["lra", "fit", "-c", str(ROOT / "recipes/lra/tiny_listops.yaml"), "--data.root", str(tmp / "lra")]


def _pendulum(tmp: Path) -> list[str]:
    from apps.pendulum.data import prepare

    prepare(["--out", str(tmp / "pendulum"), "--sizes", "16,8,8"])
    return ["pendulum", "fit", "-c", str(ROOT / "recipes/pendulum/tiny.yaml"), "--data.root", str(tmp / "pendulum")]


APPS = {"lra": _lra, "pendulum": _pendulum, "smoke": _smoke, "synthetic": _synthetic, "sssd": _sssd, "sashimi": _sashimi, "s4nd": _s4nd,
        "speech": _speech, "vis4mer": _vis4mer}


def _fit(app: str, tmp: Path, precision: str, extra: list[str] = ()) -> None:
    runs = tmp / "runs"
    args = APPS[app](tmp) + SHORT + ["--trainer.precision", precision, "--trainer.default_root_dir", str(runs), *extra]
    assert main(args) == 0
    assert (runs / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader(open(next((runs / "csv").rglob("metrics.csv")))))
    logged = [float(v) for r in rows for k, v in r.items() if k.startswith("train/") and v]  # loss / nll
    assert logged and all(math.isfinite(x) for x in logged)


@pytest.mark.parametrize("app", list(APPS))
def test_tiny_recipe_fits_in_bf16_mixed(app, tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    _fit(app, tmp_path, "bf16-mixed")


def test_16_mixed_on_cpu_runs_as_bf16_mixed(tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    with pytest.warns(UserWarning, match="fp16 is not supported on CPU"):
        _fit("smoke", tmp_path, "16-mixed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("app", ["smoke", "synthetic", "sssd"])
def test_tiny_recipe_fits_in_mixed_precision_on_cuda(app, precision, tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    _fit(app, tmp_path, precision, ["--trainer.accelerator", "gpu", "--trainer.devices", "1"])
