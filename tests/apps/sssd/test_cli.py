"""``ssm sssd`` end to end on CPU: fit -> impute -> forecast -> test in well under a minute, and bad input
rejected with one line and exit code 2."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.common.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "sssd" / "tiny.yaml")
C, L = 3, 24


def _series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(L)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, C))
    return (np.sin(0.3 * t + phase) + 0.05 * rng.normal(size=(n, L, C))).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny model fitted once for the whole module (a few seconds)."""
    root = tmp_path_factory.mktemp("sssd")
    np.save(root / "train.npy", _series(64, 0))
    np.save(root / "test.npy", _series(8, 1))
    runs = root / "runs"
    mp = pytest.MonkeyPatch()
    mp.setenv("SSM_RUNS", str(runs))
    args = ["sssd", "fit", "-c", TINY, "--data.path", str(root / "train.npy"), "--data.test_path",
            str(root / "test.npy"), "--data.channels", str(C), "--data.train_size", "64", "--data.test_size", "8",
            "--trainer.max_epochs", "1", "--model.n_layers", "1", "--model.sampler_steps", "4",
            "--model.test_samples", "3", "--model.test_ratios", "[0.5, 0.8]"]
    assert main(args) == 0
    mp.undo()
    return {"root": root, "run": runs / "sssd" / "tiny", "ckpt": runs / "sssd" / "tiny" / "checkpoints" / "last.ckpt",
            "fit_args": args}


def test_fit_impute_forecast_test(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSM_RUNS", str(trained["root"] / "runs"))
    data = _series(2, 2)[0]
    data[5:9, 1] = np.nan
    data[::3, 0] = np.nan
    path = tmp_path / "in.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join("" if np.isnan(v) else f"{v:.5f}" for v in row) for row in data))
    out = tmp_path / "imputed.csv"
    capsys.readouterr()
    assert main(["sssd", "impute", "--ckpt", str(trained["ckpt"]), "--input", str(path), "--out", str(out),
                 "--samples", "5", "--sampler", "ddim", "--steps", "4", "--point", "median"]) == 0
    printed = capsys.readouterr().out  # the median lies in the 5-95% band (the default shrunk point need not)
    assert "samples/s" in printed and str(out) in printed
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == L and set(rows[0]) == {"step", "a", "a_q05", "a_q95", "b", "b_q05", "b_q95",
                                                "c", "c_q05", "c_q95"}
    for t, row in enumerate(rows):
        for c, name in enumerate("abc"):
            value, lo, hi = float(row[name]), float(row[f"{name}_q05"]), float(row[f"{name}_q95"])
            assert np.isfinite(value) and lo <= value + 1e-6 and value <= hi + 1e-6
            if not np.isnan(data[t, c]):  # observed entries unchanged
                assert value == pytest.approx(float(data[t, c]), abs=1e-5) and lo == hi == value
    plot = tmp_path / "imputed_plots" / "series_0000.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shrunk = tmp_path / "shrunk.csv"  # the default point: blend fitted on held-out observed entries
    assert main(["sssd", "impute", "--ckpt", str(trained["ckpt"]), "--input", str(path), "--out", str(shrunk),
                 "--samples", "5", "--sampler", "ddim", "--steps", "4", "--max-plots", "0"]) == 0
    assert "point estimate: blend" in capsys.readouterr().out
    for t, row in enumerate(csv.DictReader(open(shrunk))):
        for c, name in enumerate("abc"):
            assert np.isfinite(float(row[name]))
            if not np.isnan(data[t, c]):
                assert float(row[name]) == pytest.approx(float(data[t, c]), abs=1e-5)

    npy = tmp_path / "in.npy"
    np.save(npy, _series(3, 3))
    fout = tmp_path / "forecast.npy"
    assert main(["sssd", "forecast", "--ckpt", str(trained["ckpt"]), "--input", str(npy), "--out", str(fout),
                 "--horizon", "6", "--samples", "3", "--steps", "4", "--sampler", "dpm", "--holdout"]) == 0
    assert "held-out last 6 steps: MSE" in capsys.readouterr().out
    result = np.load(fout)
    assert result.shape == (3, L, C, 3) and np.isfinite(result).all()

    test_args = [a if a != "fit" else "test" for a in trained["fit_args"]] + ["--ckpt_path", str(trained["ckpt"])]
    assert main(test_args) == 0
    table = list(csv.DictReader(open(trained["run"] / "test_metrics.csv")))
    assert [r["ratio"] for r in table] == ["0.5", "0.8"]
    for row in table:
        for method in ("SSSD", "SSSD median", "mean", "locf", "linear"):
            for metric in ("MAE", "RMSE", "MSE", "MRE", "CRPS", "NCRPS", "CRPS-sum"):
                assert float(row[f"{method} {metric}"]) >= 0
    assert "| rm | 0.8 |" in (trained["run"] / "test_metrics.md").read_text()


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_bad_input_is_rejected_with_one_line(trained, tmp_path, capsys):
    ckpt = str(trained["ckpt"])
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, L, C + 1), dtype=np.float32))
    err = _error(capsys, ["sssd", "impute", "--ckpt", ckpt, "--input", str(wrong), "--out", str(tmp_path / "o.csv")])
    assert "4 channels but the checkpoint was trained on 3" in err
    empty = _series(3, 4)
    empty[1] = np.nan
    np.save(tmp_path / "empty.npy", empty)
    err = _error(capsys, ["sssd", "impute", "--ckpt", ckpt, "--input", str(tmp_path / "empty.npy"),
                          "--out", str(tmp_path / "o.csv")])
    assert "series [1] are entirely NaN" in err
    np.save(tmp_path / "ok.npy", _series(1, 5))
    err = _error(capsys, ["sssd", "forecast", "--ckpt", ckpt, "--input", str(tmp_path / "ok.npy"),
                          "--out", str(tmp_path / "f.csv"), "--horizon", str(L + 5)])
    assert f"--horizon {L + 5} must be in [1, {L})" in err
    err = _error(capsys, ["sssd", "impute", "--ckpt", str(tmp_path / "nope.ckpt"), "--input", str(wrong),
                          "--out", str(tmp_path / "o.csv")])
    assert "checkpoint not found" in err


def test_export_writes_the_denoiser_and_never_overwrites(trained, tmp_path, capsys):
    from apps.sssd.infer import load_model

    out = tmp_path / "exported"
    assert main(["sssd", "export", "--ckpt", str(trained["ckpt"]), "--out", str(out)]) == 0
    path = out / "model.pt2"
    assert str(path) in capsys.readouterr().out
    program = torch.export.load(path).module()
    module = load_model(trained["ckpt"])
    L, C = int(module.train_length), int(module.hparams.channels)
    gen = torch.Generator().manual_seed(0)
    x_t, cond = torch.randn(3, L, C, generator=gen), torch.randn(3, L, C, generator=gen)
    mask, t = torch.rand(3, L, C, generator=gen) > 0.3, torch.tensor([0, 5, 9])
    with torch.no_grad():
        expected = module.net(x_t, cond, mask, t)
    assert ((program(x_t, cond, mask, t) - expected).norm() / expected.norm()).item() < 1e-4
    before = path.read_bytes()
    assert main(["sssd", "export", "--ckpt", str(trained["ckpt"]), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_forecast_reads_an_exported_folder_with_identical_results(trained, tmp_path, capsys):
    """``--ckpt`` takes a save_pretrained folder (``ssm sssd export-weights``) and gives the same numbers."""
    folder = tmp_path / "exported"
    assert main(["sssd", "export-weights", "--ckpt", str(trained["ckpt"]), "--out", str(folder)]) == 0
    npy = tmp_path / "in.npy"
    np.save(npy, _series(2, 4))
    outs = []
    for source in (trained["ckpt"], folder):
        out = tmp_path / f"forecast_{len(outs)}.npy"
        assert main(["sssd", "forecast", "--ckpt", str(source), "--input", str(npy), "--out", str(out),
                     "--horizon", "4", "--samples", "2", "--steps", "3", "--sampler", "ddim"]) == 0
        outs.append(np.load(out))
    assert np.array_equal(outs[0], outs[1])
