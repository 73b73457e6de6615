"""Unconditional generation (mask ratio 1, nothing observed): fit, ``ssm sssd generate``, ``impute`` of a series
that is entirely NaN, ``test`` at ratio 1, and the refusal of a model that never trained with nothing observed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.common.cli import main
from apps.sssd.module import trained_unconditionally

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "sssd" / "tiny.yaml")
C, L = 2, 16


def _series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(L)[None, :, None]
    return (3.0 + np.sin(0.4 * t + rng.uniform(0, 6, (n, 1, C)))).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("uncond")
    np.save(root / "train.npy", _series(48, 0))
    np.save(root / "test.npy", _series(4, 1))
    mp = pytest.MonkeyPatch()
    mp.setenv("SSM_RUNS", str(root / "runs"))
    args = ["sssd", "fit", "-c", TINY, "--data.path", str(root / "train.npy"), "--data.test_path",
            str(root / "test.npy"), "--data.channels", str(C), "--data.train_size", "48", "--data.val_size", "8",
            "--data.test_size", "4", "--trainer.max_epochs", "1", "--model.n_layers", "1",
            "--model.mask_ratio", "[0.5, 1.0]", "--model.test_ratios", "[1.0]", "--model.sampler_steps", "3",
            "--model.test_samples", "2"]
    assert main(args) == 0
    mp.undo()
    return {"root": root, "args": args, "ckpt": root / "runs" / "sssd" / "tiny" / "checkpoints" / "last.ckpt"}


def test_generate_writes_new_series(fitted, tmp_path, capsys):
    out = tmp_path / "new.npy"
    argv = ["sssd", "generate", "--ckpt", str(fitted["ckpt"]), "--n", "5", "--out", str(out), "--sampler", "ddim",
            "--steps", "3"]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    series = np.load(out)
    assert series.shape == (5, L, C) and series.dtype == np.float32 and np.isfinite(series).all()
    assert series.std(axis=0).mean() > 0  # five different draws
    assert main([*argv[:-4], "--sampler", "ddim", "--steps", "3", "--seed", "0"]) == 0
    assert np.array_equal(np.load(out), series)  # the same seed, the same series
    short = tmp_path / "short.csv"
    assert main(["sssd", "generate", "--ckpt", str(fitted["ckpt"]), "--n", "2", "--out", str(short), "--length", "8",
                 "--steps", "2", "--sampler", "dpm"]) == 0
    rows = list(csv.DictReader(open(short)))
    assert len(rows) == 2 * 8 and set(rows[0]) == {"series", "step", "ch0", "ch1"}
    assert all(np.isfinite(float(r["ch1"])) for r in rows)


def test_impute_a_series_with_nothing_observed(fitted, tmp_path):
    data = _series(2, 3)
    data[1] = np.nan  # series 1: nothing observed
    path = tmp_path / "in.npy"
    np.save(path, data)
    out = tmp_path / "out.npy"
    assert main(["sssd", "impute", "--ckpt", str(fitted["ckpt"]), "--input", str(path), "--out", str(out),
                 "--samples", "3", "--sampler", "ddim", "--steps", "3", "--max-plots", "0"]) == 0
    result = np.load(out)
    assert result.shape == (2, L, C, 3) and np.isfinite(result).all()
    assert np.allclose(result[0, ..., 0], data[0])  # observed entries unchanged


def test_test_verb_scores_ratio_one(fitted, monkeypatch):
    monkeypatch.setenv("SSM_RUNS", str(fitted["root"] / "runs"))
    args = [a if a != "fit" else "test" for a in fitted["args"]] + ["--ckpt_path", str(fitted["ckpt"])]
    assert main(args) == 0
    table = list(csv.DictReader(open(fitted["root"] / "runs" / "sssd" / "tiny" / "test_metrics.csv")))
    assert [r["ratio"] for r in table] == ["1"] and float(table[0]["SSSD MAE"]) >= 0


def test_a_conditional_model_is_refused(fitted, tmp_path, capsys):
    state = torch.load(fitted["ckpt"], map_location="cpu", weights_only=True)
    state["hyper_parameters"]["mask_ratio"] = [0.5, 0.8]
    ckpt = tmp_path / "conditional.ckpt"
    torch.save(state, ckpt)
    capsys.readouterr()
    assert main(["sssd", "generate", "--ckpt", str(ckpt), "--n", "2", "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "never saw a series with nothing observed" in err
    assert "--model.mask_ratio 1.0" in err and not (tmp_path / "x.npy").exists()
    data = _series(2, 3)
    data[0] = np.nan
    np.save(tmp_path / "empty.npy", data)
    assert main(["sssd", "impute", "--ckpt", str(ckpt), "--input", str(tmp_path / "empty.npy"), "--out",
                 str(tmp_path / "o.npy")]) == 2
    assert "series [0] are entirely NaN" in capsys.readouterr().err
    assert main(["sssd", "generate", "--ckpt", str(fitted["ckpt"]), "--n", "2", "--out", str(tmp_path / "x.npy"),
                 "--length", str(L + 1)]) == 2
    assert f"longer than the model's window of {L} steps" in capsys.readouterr().err


def test_trained_unconditionally():
    assert trained_unconditionally({"mask_ratio": 1.0, "mask_length": None}, 100)
    assert trained_unconditionally({"mask_ratio": [0.2, 1.0], "mask_length": None}, 100)
    assert not trained_unconditionally({"mask_ratio": [0.2, 0.9], "mask_length": None}, 100)
    assert trained_unconditionally({"mask_ratio": 0.5, "mask_length": 100}, 100)
    assert not trained_unconditionally({"mask_ratio": 1.0, "mask_length": 99}, 100)
