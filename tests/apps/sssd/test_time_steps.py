"""Time stamps in ssm sssd: data.time_column feeds per-step time steps to S5 denoisers (a regular column changes
nothing), S4 refuses irregular stamps in one line, the irregular stand-in, and the point answer of forecast /
predict."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.common.cli import main
from apps.common.errors import UserError
from apps.sssd.data import SeriesData, median_step, time_windows
from apps.sssd.model import SSSDS4
from apps.sssd.module import SSSDModule

ROOT = Path(__file__).resolve().parents[3]
RECIPE = str(ROOT / "recipes" / "sssd" / "irregular_s5_cpu.yaml")
S5 = {"name": "s5", "d_state": 8}


def _net(layer=S5, seed=0) -> SSSDS4:
    torch.manual_seed(seed)
    net = SSSDS4(in_channels=3, res_channels=8, skip_channels=8, n_layers=2, layer=layer, embed_dim_in=16,
                 embed_dim_mid=16, embed_dim_out=16).eval()
    torch.nn.init.normal_(net.out_conv.weight)  # zero-initialised: the output would be 0 whatever dt is
    return net


def _inputs(B=2, L=20, C=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x_t, cond = torch.randn(B, L, C, generator=g), torch.randn(B, L, C, generator=g)
    return x_t, cond, torch.rand(B, L, C, generator=g) > 0.4, torch.tensor([3, 17])


def test_dt_of_ones_is_the_model_without_dt():
    net, args = _net(), _inputs()
    with torch.no_grad():
        plain, ones = net(*args), net(*args, dt=torch.ones(2, 20))
    assert plain.abs().mean() > 0.1
    assert torch.allclose(ones, plain, rtol=1e-5, atol=1e-6)


def test_dt_reaches_every_ssm_as_a_scaled_step():
    """A constant dt = c is S5's step times c (ZOH: Lambda_bar = exp(c Delta Lambda)) in both SSMs of every
    residual layer: the same as a copy whose every log-step is raised by log c."""
    net, args = _net(), _inputs()
    scaled = copy.deepcopy(net)
    with torch.no_grad():
        for layer in scaled.layers:
            for block in (layer.ssm_1, layer.ssm_2):
                block.ssm.log_step += math.log(2.5)
        fed, expected = net(*args, dt=torch.full((2, 20), 2.5)), scaled(*args)
        assert not torch.allclose(fed, net(*args), atol=1e-4)  # dt changes the output
    assert torch.allclose(fed, expected, rtol=1e-4, atol=1e-5)


def test_a_layer_without_dt_refuses_it():
    net = _net({"name": "s4", "d_state": 8})
    assert not net.has_dt and _net().has_dt
    with pytest.raises(ValueError, match="model.layer.name one of s5, s5_ptd"):
        net(*_inputs(), dt=torch.ones(2, 20))


def _csv(path: Path, times: np.ndarray, seed: int = 0, column: str = "t") -> Path:
    rng = np.random.default_rng(seed)
    values = np.sin(np.asarray(times)[:, None] * np.array([0.3, 0.7, 1.1])) + 0.1 * rng.normal(size=(len(times), 3))
    lines = [f"{column},a,b,c"] + [f"{t:.6f}," + ",".join(f"{v:.5f}" for v in row) for t, row in zip(times, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_windows_take_their_time_steps_from_their_own_rows(tmp_path):
    times = np.cumsum(np.random.default_rng(0).uniform(0.5, 2.0, 60)) + 1000.0
    dm = SeriesData(str(_csv(tmp_path / "s.csv", times)), channels=3, length=10, stride=3, val_fraction=0.2,
                    test_fraction=0.2, time_column="t")
    dm.setup()
    train = dm.splits["train"]
    assert dm.time_splits["train"].shape == train.shape[:2] and dm.time_splits["train"].dtype == np.float64
    rows = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    for k in (0, 5):  # window k starts at row 3 k: its values and its times are those rows
        assert np.allclose(train[k], rows[3 * k:3 * k + 10, 1:], atol=1e-5)
        assert np.allclose(dm.time_splits["train"][k], rows[3 * k:3 * k + 10, 0] - rows[3 * k, 0])
    test_start = 60 - 12  # the test split's rows follow the validation's
    assert np.allclose(dm.time_splits["test"][0], rows[test_start:test_start + 10, 0] - rows[test_start, 0])
    assert dm.time_unit() == pytest.approx(np.median(np.diff(rows[:36, 0])))
    assert "times the median step" in dm.irregular_steps()
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 2 and batch[1].shape == batch[0].shape[:2]
    assert time_windows(np.arange(5.0) * 2, 3, 2).tolist() == [[0, 2, 4], [0, 2, 4]]
    assert median_step(np.array([0.0, 1, 3, 4])) == 1.0


def _module(layer=S5) -> SSSDModule:
    torch.manual_seed(0)
    model = SSSDModule(channels=3, res_channels=8, skip_channels=8, n_layers=1, layer=layer, embed_dim_in=16,
                       embed_dim_mid=16, embed_dim_out=16, sampler="ddim", sampler_steps=3, test_samples=2,
                       diffusion_steps=20)
    torch.nn.init.normal_(model.net.out_conv.weight)  # an untrained net predicts 0 whatever its input
    return model


def test_a_regular_time_column_trains_and_samples_as_no_time_column(tmp_path):
    """Dates 15 minutes apart (float days: steps equal only to ~1e-10) give dt = 1, passed as no dt: the same loss
    and the same samples as the file without its time column, exactly."""
    stamps = np.datetime64("2016-07-01T00:00") + np.arange(40) * np.timedelta64(15, "m")
    path = tmp_path / "regular.csv"
    rows = np.sin(np.arange(40)[:, None] * np.array([0.3, 0.7, 1.1]))
    path.write_text("date,a,b,c\n" + "\n".join(str(s).replace("T", " ") + "," + ",".join(f"{v:.5f}" for v in r)
                                               for s, r in zip(stamps, rows)) + "\n")
    kw = dict(channels=3, length=12, stride=2, val_fraction=0.0, test_fraction=0.0)
    with_time, without = SeriesData(str(path), time_column="date", **kw), SeriesData(str(path), time_column="none", **kw)
    with_time.setup(), without.setup()
    assert np.array_equal(with_time.splits["train"], without.splits["train"])
    assert with_time.irregular_steps() is None and with_time.time_unit() == pytest.approx(15 / 1440)
    model = _module()
    model.set_stats(*with_time.stats())
    model.time_unit.fill_(with_time.time_unit())
    batch_t, batch_n = with_time.train_dataloader().dataset[:8], without.train_dataloader().dataset[:8]
    raw, dt = model._batch(batch_t)
    assert dt is None and model._batch(batch_n)[1] is None
    losses = [model._loss(raw, torch.Generator().manual_seed(3), dt=dt),
              model._loss(batch_n[0], torch.Generator().manual_seed(3))]
    assert losses[0].item() == losses[1].item()
    mask = torch.rand(raw.shape, generator=torch.Generator().manual_seed(4)) > 0.5
    samples = [model.sample(r, mask, 2, generator=torch.Generator().manual_seed(5), dt=d)
               for r, d in ((raw, dt), (batch_n[0], None))]
    assert torch.equal(samples[0], samples[1])
    # irregular stamps do reach the network: other samples
    irregular = batch_t[1].clone()
    irregular[:, 6:] += 0.5 * with_time.time_unit()
    dt_irregular = model.time_steps(irregular)
    assert dt_irregular is not None and float(dt_irregular[0, 6]) == pytest.approx(1.5)
    other = model.sample(raw, mask, 2, generator=torch.Generator().manual_seed(5), dt=dt_irregular)
    assert not torch.allclose(other, samples[0])


def test_irregular_stamps_with_s4_are_one_line(tmp_path, capsys):
    model = _module({"name": "s4", "d_state": 8})
    model.time_unit.fill_(1.0)
    assert model.time_steps(torch.arange(6.0).reshape(1, 6).double()) is None  # regular: fine
    with pytest.raises(UserError, match="irregular .*model.layer 's4' cannot take .*s5 or s5_ptd.*data.time_column: none"):
        model.time_steps(torch.tensor([[0.0, 1, 3, 4]], dtype=torch.float64))
    path = _csv(tmp_path / "irregular.csv", np.cumsum(np.random.default_rng(1).uniform(0.3, 3.0, 80)))
    capsys.readouterr()
    assert main(["sssd", "fit", "-c", RECIPE, "--data.path", str(path), "--data.channels", "3", "--data.length", "8",
                 "--model.layer", '{"name": "s4", "d_state": 8}', "--trainer.default_root_dir",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"data.time_column 't' of {path}: the time stamps are irregular" in err and "s5" in err
    assert "data.time_column: none" in err


def test_the_irregular_stand_in_is_the_oscillators_sde_sampled_exactly():
    from apps.sssd.prepare import irregular_series, oscillator_transition

    period, zeta = 12.0, 0.1
    w = 2 * np.pi / period
    A = np.array([[0.0, 1.0], [-w * w, -2 * zeta * w]])
    F, Q = oscillator_transition(period, zeta, np.array([1e-4, 500.0]))
    # a tiny gap: F = I + A gap, Q = sigma^2 gap on v (sigma^2 = 4 zeta w^3 for unit stationary variance)
    assert np.allclose(F[0], np.eye(2) + A * 1e-4, atol=1e-7)
    assert Q[0, 1, 1] == pytest.approx(4 * zeta * w**3 * 1e-4, rel=1e-3)
    # a long gap forgets the start and reaches the stationary covariance diag(1, w^2)
    assert np.allclose(F[1], 0, atol=1e-9) and np.allclose(Q[1], np.diag([1.0, w * w]), atol=1e-9)
    times, values = irregular_series(300, seed=3)
    again = irregular_series(300, seed=3)
    assert np.array_equal(times, again[0]) and np.array_equal(values, again[1])
    gaps = np.diff(times)
    assert values.shape == (300, 4) and 0.25 <= gaps.min() and gaps.max() <= 4.0 and gaps.max() / gaps.min() > 8


@pytest.fixture(scope="module")
def irregular_run(tmp_path_factory):
    """The irregular recipe's tiny form: ``prepare irregular --n 360`` and one short epoch of S5 on its time column."""
    root = tmp_path_factory.mktemp("irregular")
    mp = pytest.MonkeyPatch()
    mp.setenv("SSM_RUNS", str(root / "runs"))
    assert main(["sssd", "prepare", "irregular", "--n", "360", "--out", str(root / "data")]) == 0
    args = ["sssd", "fit", "-c", RECIPE, "--data.path", str(root / "data" / "irregular.csv"), "--data.length", "24",
            "--data.stride", "6", "--trainer.max_epochs", "1", "--model.n_layers", "1", "--model.res_channels", "8",
            "--model.skip_channels", "8", "--model.layer.d_state", "8", "--model.test_samples", "2",
            "--model.sampler_steps", "3", "--model.diffusion_steps", "20", "--data.test_size", "4",
            "--trainer.default_root_dir", str(root / "run")]
    assert main(args) == 0
    mp.undo()
    return {"root": root, "args": args, "ckpt": root / "run" / "checkpoints" / "last.ckpt"}


def test_irregular_recipe_tiny_fit_test_impute_forecast(irregular_run, tmp_path, capsys):
    from apps.sssd.infer import load_model

    model = load_model(irregular_run["ckpt"])
    assert model.net.has_dt and model.training_time_column == "t"
    times = np.loadtxt(irregular_run["root"] / "data" / "irregular.csv", delimiter=",", skiprows=1)[:, 0]
    assert float(model.time_unit) == pytest.approx(np.median(np.diff(times[:252])), rel=1e-6)  # the training rows
    test = [a if a != "fit" else "test" for a in irregular_run["args"]] + ["--ckpt_path", str(irregular_run["ckpt"])]
    assert main(test) == 0
    table = list(csv.DictReader(open(irregular_run["root"] / "run" / "test_metrics.csv")))
    assert [r["ratio"] for r in table] == ["0.2", "0.5"] and float(table[0]["SSSD MSE"]) >= 0
    # impute reads the time column the model was trained with; 40 rows of the file, some entries blanked
    src = (irregular_run["root"] / "data" / "irregular.csv").read_text().splitlines()
    cells = [line.split(",") for line in src[1:41]]
    for k in range(2, 40, 5):
        cells[k][1 + k % 4] = ""
    part = tmp_path / "part.csv"
    part.write_text("\n".join([src[0], *[",".join(c) for c in cells]]) + "\n")
    out = tmp_path / "imputed.csv"
    common = ["--ckpt", str(irregular_run["ckpt"]), "--input", str(part), "--samples", "2", "--steps", "3",
              "--max-plots", "0"]
    assert main(["sssd", "impute", *common, "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 40 and rows[0]["t"] == cells[0][0] and all(np.isfinite(float(r["y2"])) for r in rows)
    fout = tmp_path / "forecast.csv"
    assert main(["sssd", "forecast", *common, "--out", str(fout), "--horizon", "5"]) == 0
    rows = list(csv.DictReader(open(fout)))
    assert len(rows) == 45 and rows[-1]["t"] == "+5"
    # a file without the training's time column: one line saying what to pass
    no_t = tmp_path / "no_t.csv"
    no_t.write_text("\n".join(",".join(c[1:]) for c in [src[0].split(","), *cells]) + "\n")
    capsys.readouterr()
    assert main(["sssd", "impute", *[a if a != str(part) else str(no_t) for a in common], "--out",
                 str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no column 't'" in err and "--time-column none" in err
    assert main(["sssd", "impute", *[a if a != str(part) else str(no_t) for a in common], "--out",
                 str(tmp_path / "o.csv"), "--time-column", "none"]) == 0


def test_npy_input_takes_its_time_stamps_from_times(irregular_run, tmp_path, capsys):
    """An .npy input's stamps come from ``--times`` ((L,) or (N, L)): imputing and forecasting from the .npy and
    its stamps gives exactly what the CSV with its time column gives; a model trained with stamps refuses an
    .npy without them, and every bad --times is one line, exit 2.  The forecast is finite where it was sampled
    although the history holds gaps before the last window (they made the default point forecast all NaN)."""
    src = np.loadtxt(irregular_run["root"] / "data" / "irregular.csv", delimiter=",", skiprows=1)[:40]
    header = (irregular_run["root"] / "data" / "irregular.csv").read_text().splitlines()[0]
    values = src[:, 1:].astype(np.float32)
    values[2::5, 1] = np.nan
    csv_in, npy_in, t1, t2 = (tmp_path / n for n in ("in.csv", "in.npy", "t1.npy", "t2.npy"))
    csv_in.write_text(header + "\n" + "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in [t, *row])
                                                  for t, row in zip(src[:, 0], values)) + "\n")
    np.save(npy_in, values[None])
    np.save(t1, src[:, 0])
    np.save(t2, src[None, :, 0])
    common = ["--ckpt", str(irregular_run["ckpt"]), "--samples", "2", "--steps", "3", "--max-plots", "0"]
    for verb, extra in (("impute", []), ("forecast", ["--horizon", "4"])):
        outs = []
        for inp, stamps in ((csv_in, []), (npy_in, ["--times", str(t1)]), (npy_in, ["--times", str(t2)])):
            outs.append(tmp_path / f"{verb}{len(outs)}.npy")
            assert main(["sssd", verb, *common, "--input", str(inp), *stamps, "--out", str(outs[-1]), *extra]) == 0
        first = np.load(outs[0])  # (1, T, C, 3): point, q05, q95
        if verb == "impute":
            assert np.isfinite(first).all()
        else:  # the last window (24 rows) and the 4 forecast rows are sampled; the history gaps before it stay missing
            assert first.shape[1] == 44 and np.isfinite(first[0, 20:]).all()
            assert np.isnan(first[0, [2, 7, 12, 17], 1]).all() and np.isfinite(first[0, :20, [0, 2, 3]]).all()
        for other in outs[1:]:
            np.testing.assert_array_equal(np.load(other), first)
    bad = tmp_path / "bad.npy"
    for stamps, expected in ((None, "trained with time stamps"), (str(tmp_path / "none.npy"), "not an .npy file"),
                             ("short", "numbers of shape (40,) or (1, 40)"), ("flat", "must be finite and increase")):
        if stamps in ("short", "flat"):
            np.save(bad, src[:30, 0] if stamps == "short" else np.ones(40))
            stamps = str(bad)
        capsys.readouterr()
        args = ["sssd", "impute", *common, "--input", str(npy_in), "--out", str(tmp_path / "o.npy")]
        assert main(args + ([] if stamps is None else ["--times", stamps])) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    capsys.readouterr()
    assert main(["sssd", "impute", *common, "--input", str(csv_in), "--times", str(t1), "--out", str(tmp_path / "o.npy")]) == 2
    assert "only for an .npy --input" in capsys.readouterr().err
    assert main(["sssd", "impute", *common, "--input", str(npy_in), "--time-column", "none", "--out",
                 str(tmp_path / "o.npy")]) == 0  # rows evenly spaced, said explicitly


def test_forecast_point_choice(irregular_run, tmp_path, capsys):
    """``--point``: shrunk (default; its blend fitted on the steps before the horizon) starts from the last observed
    value; mean and median are the samples' own; --holdout scores all three, the chosen one first."""
    data = irregular_run["root"] / "data" / "irregular.csv"
    common = ["--ckpt", str(irregular_run["ckpt"]), "--input", str(data), "--samples", "3", "--steps", "3",
              "--max-plots", "0", "--horizon", "6", "--holdout"]
    capsys.readouterr()
    outs = {}
    for point in ("shrunk", "mean", "median"):
        outs[point] = tmp_path / f"{point}.npy"
        extra = [] if point == "shrunk" else ["--point", point]
        assert main(["sssd", "forecast", *common, "--out", str(outs[point]), *extra]) == 0
        printed = capsys.readouterr().out
        assert f"(point: {point};" in printed and printed.count("  point ") == 2
        if point == "shrunk":
            assert "point forecast: blend" in printed
    est = {k: np.load(v)[..., 0] for k, v in outs.items()}  # (N, T, C)
    assert not np.allclose(est["mean"][:, -6:], est["median"][:, -6:])
    assert np.array_equal(est["mean"][:, :-6], est["median"][:, :-6])  # observed history as given


def test_forecast_shrunk_starts_from_the_last_value():
    """Past the end the interpolation is the last observed value: blend 0 forecasts it, blend 1 with samples
    whose mean offset is far above their noise keeps the samples' mean."""
    from apps.sssd.point import interpolation, point_estimate

    T, H, C = 10, 3, 2
    raw = torch.arange(T * C, dtype=torch.float32).reshape(1, T, C)
    observed = torch.ones(1, T, C, dtype=torch.bool)
    observed[:, T - H:] = False
    last = raw[:, T - H - 1]  # (1, C)
    interp = interpolation(raw, observed, torch.zeros(C))
    assert torch.equal(interp[:, T - H:], last[:, None].expand(1, H, C))
    g = torch.Generator().manual_seed(0)
    samples = raw[None] + 5.0 + 0.01 * torch.randn(64, 1, T, C, generator=g)
    samples = torch.where(observed, raw, samples)
    fallback = point_estimate(samples, interp, ~observed, "shrunk", torch.ones(C), blend=0.0)
    kept = point_estimate(samples, interp, ~observed, "shrunk", torch.ones(C), blend=1.0)
    assert torch.equal(fallback[:, T - H:], interp[:, T - H:])
    assert torch.allclose(kept[:, T - H:], samples.mean(0)[:, T - H:], atol=1e-3)


def test_predict_step_gives_the_point_estimate():
    from apps.sssd.point import interpolation, point_estimate

    raw = torch.sin(torch.arange(20.0))[None, :, None].repeat(2, 1, 3)
    raw[0, 5:9, 1] = float("nan")
    raw[1, ::4, 2] = float("nan")
    for point in ("shrunk", "mean", "median"):
        model = _module()
        model.hparams.point = point
        model.train_length.fill_(20)
        torch.manual_seed(7)
        got = model.predict_step((raw,), 0)
        torch.manual_seed(7)
        observed = ~torch.isnan(raw)
        samples = model.sample(raw, observed, 2)
        want = point_estimate(samples, interpolation(raw, observed, model.data_mean), ~observed, point,
                              model.data_std)
        assert torch.equal(got, want) and torch.equal(got[observed], raw[observed]) and torch.isfinite(got).all()
