"""Non-finite data is an error naming the file, and training stops at the first non-finite loss."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile
import torch

from apps.common.audio import AudioError, load_audio
from apps.common.cli import main
from apps.common.errors import UserError
from apps.common.training import default_callbacks

ROOT = Path(__file__).resolve().parents[3]


def test_a_wav_with_nan_samples_is_an_error_naming_the_file(tmp_path):
    wav = np.sin(np.arange(1600) / 10).astype(np.float32)
    wav[100] = np.nan
    path = tmp_path / "clip_with_nan.wav"
    soundfile.write(str(path), wav, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="clip_with_nan.wav holds 1 NaN or infinite"):
        load_audio(path, 16000)


def test_sashimi_fit_on_a_nan_wav_stops_with_one_line_and_no_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    for split in ("train", "val", "test"):
        (tmp_path / "audio" / split).mkdir(parents=True)
        for i in range(2):
            soundfile.write(str(tmp_path / "audio" / split / f"{i}.wav"),
                            0.3 * np.sin(np.arange(8000) / (5 + i)).astype(np.float32), 16000, subtype="FLOAT")
    bad = np.zeros(8000, np.float32)
    bad[10:20] = np.nan
    soundfile.write(str(tmp_path / "audio" / "train" / "bad.wav"), bad, 16000, subtype="FLOAT")
    code = main(["sashimi", "fit", "-c", str(ROOT / "recipes" / "sashimi" / "piano_tiny.yaml"),
                 "--data.root", str(tmp_path / "audio")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.wav" in err[0] and "NaN" in err[0]
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


class _Blows(pl.LightningModule):
    """Regression on a constant; the loss turns NaN at step 5."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.monitor, self.monitor_mode = "train/loss", "min"

    def training_step(self, batch, i):
        loss = ((self.w - 2.0) ** 2).sum()
        if self.global_step >= 5:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_training_stops_at_the_first_non_finite_loss_and_keeps_finite_checkpoints(tmp_path):
    model = _Blows()
    trainer = pl.Trainer(max_epochs=5, callbacks=default_callbacks(tmp_path, "train/loss", "min"),
                         enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(UserError, match="the loss is nan at epoch 1, step 5"):
        trainer.fit(model)
    assert torch.isfinite(model.w).all()  # the NaN never reached the weights
    for ckpt in (tmp_path / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values())


def _series_file(tmp_path, name: str, bad: float) -> Path:
    x = np.sin(np.arange(24 * 3, dtype=np.float32) / 3).reshape(1, 24, 3).repeat(8, 0)
    x[2, 5, 1] = bad
    np.save(tmp_path / name, x)
    return tmp_path / name


def test_sssd_inf_is_an_error_and_nan_means_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    base = ["sssd", "fit", "-c", str(ROOT / "recipes" / "sssd" / "tiny.yaml"), "--data.channels", "3",
            "--data.train_size", "8", "--data.test_size", "8", "--trainer.max_epochs", "1", "--model.n_layers", "1"]
    train = _series_file(tmp_path, "train_inf.npy", np.inf)
    assert main([*base, "--data.path", str(train), "--data.test_path", str(train)]) == 2
    err = capsys.readouterr().err
    assert "train_inf.npy: 1 infinite value(s)" in err and "NaN or empty cells" in err
    csv = tmp_path / "series.csv"
    csv.write_text("a,b\n1,2\ninf,3\n4,\n")
    assert main(["sssd", "impute", "--ckpt", str(tmp_path / "none.ckpt"), "--input", str(csv),
                 "--out", str(tmp_path / "out.csv")]) == 2  # the options are fine; the model file is missing
    from apps.sssd.data import read_series

    with pytest.raises(UserError, match="series.csv: 1 infinite"):
        read_series(csv)
    nan = read_series(_series_file(tmp_path, "with_nan.npy", np.nan))  # NaN: missing, accepted
    assert np.isnan(nan.values).sum() == 1


def test_numeric_options_are_range_checked(tmp_path, capsys):
    series = _series_file(tmp_path, "s.npy", 0.0)
    cases = [
        (["sashimi", "generate", "--ckpt", "x.ckpt", "--temperature", "nan"], "--temperature"),
        (["sashimi", "generate", "--ckpt", "x.ckpt", "--seconds", "inf"], "--seconds"),
        (["sashimi", "generate", "--ckpt", "x.ckpt", "--threads", "-2"], "--threads"),
        (["sssd", "impute", "--ckpt", "x.ckpt", "--input", str(series), "--out", str(tmp_path / "o.csv"),
          "--steps", "0"], "--steps"),
        (["sssd", "impute", "--ckpt", "x.ckpt", "--input", str(series), "--out", str(series)], "is the --input file"),
        (["smoke", "fit", "-c", str(ROOT / "recipes" / "smoke" / "tiny.yaml"), "--model.d_model", "-4"],
         "model.d_model: a size must be at least 1"),
        (["smoke", "fit", "-c", str(ROOT / "recipes" / "smoke" / "tiny.yaml"), "--trainer.max_epochs", "-5"],
         "max_epochs"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)


@pytest.mark.parametrize(("option", "value"), [("--epochs", "-1"), ("--lr", "nan"), ("--max-steps", "0"),
                                               ("--batch-size", "0")])
def test_robustness_numbers_are_checked_before_any_work(option, value, capsys):
    assert main(["synthetic", "robustness", option, value]) == 2
    assert option in capsys.readouterr().err
