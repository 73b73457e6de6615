"""Linear interpolation in time (irregular time stamps, ``data.time_column``): the ``linear`` baseline of the test,
the start of ``interp_residual`` and the interpolation the ``shrunk`` point estimate falls back to, each against
``np.interp`` on the rows' time stamps; without time stamps every one of them is the row-index interpolation,
unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.sssd.evaluate import MetricSums, add_baselines, linear_fill, time_positions
from apps.sssd.module import SSSDModule
from apps.sssd.point import interpolation, point_estimate

S5 = {"name": "s5", "d_state": 8}


def _series(B=3, L=30, C=2, seed=0):
    """Irregular time stamps (B, L) float64 (gaps 0.25 to 4), values (B, L, C) float64, an observed mask with
    1-3 observations in some channels, none in one, and observations at neither end in others."""
    rng = np.random.default_rng(seed)
    times = 100.0 + np.cumsum(np.exp(rng.uniform(np.log(0.25), np.log(4.0), (B, L))), axis=1)
    values = np.sin(times[..., None] * np.array([0.3, 1.1])[:C]) + 0.1 * rng.standard_normal((B, L, C))
    observed = rng.random((B, L, C)) < 0.4
    observed[0, :, 0] = False  # nothing observed: the fallback
    observed[1, :, 1] = False
    observed[1, 7, 1] = True  # one observation: its value everywhere
    observed[2, :3, 0] = observed[2, -3:, 0] = False  # gaps at both ends: the nearest observation
    return times, values, observed


def numpy_interp(times, values, observed, fallback):
    """The reference: per series and channel, ``np.interp`` at the rows' stamps between the observed ones."""
    out = np.empty_like(values)
    for b in range(values.shape[0]):
        for c in range(values.shape[2]):
            obs = observed[b, :, c]
            out[b, :, c] = (np.interp(times[b], times[b, obs], values[b, obs, c]) if obs.any()
                            else fallback[c])
    return out


def test_linear_fill_in_time_is_numpy_interp_on_the_stamps():
    times, values, observed = _series()
    fallback = np.array([7.0, -3.0])
    want = numpy_interp(times, values, observed, fallback)
    x, obs = torch.from_numpy(np.where(observed, values, 0.0)), torch.from_numpy(observed)
    got = linear_fill(x, obs, torch.from_numpy(fallback), times=torch.from_numpy(times))
    assert np.allclose(got.numpy(), want, rtol=0, atol=1e-12)
    assert (got[0, :, 0] == 7.0).all()
    # in float32 (the model's dtype), and from the time steps' running sum (another origin and unit)
    steps = np.diff(times, axis=1, prepend=times[:, :1] - 1.0) / 0.97
    got32 = linear_fill(x.float(), obs, torch.from_numpy(fallback).float(),
                        times=time_positions(torch.from_numpy(steps).float()))
    assert np.allclose(got32.numpy(), want, rtol=1e-4, atol=1e-5)
    # one row of stamps shared by every series
    shared = linear_fill(x, obs, torch.from_numpy(fallback), times=torch.from_numpy(times[1]))
    want_shared = numpy_interp(np.broadcast_to(times[1], times.shape), values, observed, fallback)
    assert np.allclose(shared.numpy(), want_shared, atol=1e-12)
    # in time is not in row index for these stamps
    by_row = numpy_interp(np.broadcast_to(np.arange(30.0), times.shape), values, observed, fallback)
    assert np.abs(want - by_row)[~observed].max() > 0.1


def _row_index_reference(x: torch.Tensor, observed: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Row-index interpolation written out entry by entry, in the dtype of ``x``, with the same arithmetic as the
    code before time stamps were interpolated in time: lo + (hi - lo) * (i - i_lo) / (i_hi - i_lo)."""
    B, L, C = x.shape
    out = x.clone()
    for b in range(B):
        for c in range(C):
            idx = [i for i in range(L) if observed[b, i, c]]
            for i in range(L):
                if observed[b, i, c]:
                    continue
                if not idx:
                    out[b, i, c] = fallback[c]
                    continue
                before, after = [j for j in idx if j <= i], [j for j in idx if j >= i]
                if not before or not after:
                    out[b, i, c] = x[b, (after or before)[0 if after else -1], c]
                    continue
                lo, hi = before[-1], after[0]
                span = torch.tensor(float(hi - lo), dtype=x.dtype)
                out[b, i, c] = x[b, lo, c] + (x[b, hi, c] - x[b, lo, c]) * torch.tensor(float(i - lo), dtype=x.dtype) / span
    return out


def test_without_time_stamps_the_interpolation_is_unchanged():
    """No stamps (``times`` None, or a model's ``dt`` None for evenly spaced rows): row-index interpolation,
    bit for bit as before; and the ``linear`` baseline's sums are the same as without the argument."""
    _, values, observed = _series(seed=3)
    x = torch.from_numpy(np.where(observed, values, 0.0)).float()
    obs, fallback = torch.from_numpy(observed), torch.tensor([0.5, -0.5])
    assert time_positions(None) is None
    assert torch.equal(linear_fill(x, obs, fallback), _row_index_reference(x, obs, fallback))
    assert torch.equal(linear_fill(x, obs, fallback, times=None), linear_fill(x, obs, fallback))
    raw = torch.where(obs, x, torch.nan)
    assert torch.equal(interpolation(raw, obs, fallback), _row_index_reference(x, obs, fallback))
    # evenly spaced stamps in time give the row-index interpolation (up to rounding)
    even = linear_fill(x, obs, fallback, times=torch.arange(30.0).double() * 2.5 - 4.0)
    assert torch.allclose(even, linear_fill(x, obs, fallback), atol=1e-6)
    target, full = ~obs, torch.from_numpy(values).float()
    plain, none = {}, {}
    add_baselines(plain, full, obs, target, fallback)
    add_baselines(none, full, obs, target, fallback, times=None)
    assert plain["linear"].sq == none["linear"].sq and plain["linear"].abs == none["linear"].abs


def test_linear_baseline_of_the_test_is_in_time():
    times, values, observed = _series(seed=1)
    fallback = np.array([0.0, 0.0])
    raw = torch.from_numpy(values).float()
    obs, target = torch.from_numpy(observed), torch.from_numpy(~observed)
    sums: dict[str, MetricSums] = {}
    add_baselines(sums, raw, obs, target, torch.zeros(2), times=torch.from_numpy(times))
    want = numpy_interp(times, values, observed, fallback)
    err = (want - values)[~observed]
    assert sums["linear"].result()["MSE"] == pytest.approx(float(np.mean(err**2)), rel=1e-5)
    assert sums["linear"].result()["MAE"] == pytest.approx(float(np.mean(np.abs(err))), rel=1e-5)
    # locf and mean do not depend on time
    again: dict[str, MetricSums] = {}
    add_baselines(again, raw, obs, target, torch.zeros(2))
    assert again["locf"].sq == sums["locf"].sq and again["mean"].sq == sums["mean"].sq
    assert again["linear"].sq != sums["linear"].sq


def _module(**kw) -> SSSDModule:
    torch.manual_seed(0)
    model = SSSDModule(channels=2, res_channels=8, skip_channels=8, n_layers=1, layer=S5, embed_dim_in=16,
                       embed_dim_mid=16, embed_dim_out=16, sampler="ddim", sampler_steps=3, test_samples=4,
                       diffusion_steps=20, **kw)
    torch.nn.init.normal_(model.net.out_conv.weight)  # an untrained net predicts 0 whatever its input
    return model


def test_the_model_interpolates_in_time_with_irregular_stamps():
    """The offset ``interp_residual`` diffuses around, ``interp_cond``'s channel, the residual scale, and the
    interpolation of ``predict``'s ``shrunk`` point estimate: ``np.interp`` on the stamps."""
    times, values, observed = _series(seed=2)
    observed[0, 4, 0] = True  # every channel observed somewhere (the fallback is the data's mean)
    model = _module(interp_residual=True, interp_cond=True)
    model.set_stats(np.array([0.2, -0.1]), np.array([0.8, 1.3]))
    model.time_unit.fill_(float(np.median(np.diff(times, axis=1))))
    dt = model.time_steps(torch.from_numpy(times))
    assert dt is not None
    x, _ = model.standardise(torch.from_numpy(values).float())
    obs = torch.from_numpy(observed)
    want_std = numpy_interp(times, np.where(observed, x.double().numpy(), 0.0), observed, np.zeros(2))
    _, offset = model._diffused(x, obs, dt)
    assert np.allclose(offset.numpy(), want_std, rtol=1e-4, atol=1e-5)
    # interp_cond: the third block of the conditioning's input is the same interpolation
    seen = {}
    model.net.layers[0].project = lambda c: seen.setdefault("c", c)
    model.net.condition(x * obs, obs, dt)
    del model.net.layers[0].project  # the layer's own method again
    assert np.allclose(seen["c"][:, 4:6].permute(0, 2, 1).numpy(), want_std, rtol=1e-4, atol=1e-5)
    # the residual scale: the residual of the time interpolation (no stamps: of the row-index one)
    model2 = _module(interp_residual=True)
    model2.set_stats(np.array([0.2, -0.1]), np.array([0.8, 1.3]))
    full = torch.from_numpy(values).float()
    assert not torch.allclose(model2.residual_scale(full, dt), model2.residual_scale(full))
    # predict's point estimate: shrunk toward the interpolation in time, in data units
    raw = torch.where(obs, torch.from_numpy(values).float(), torch.nan)
    want = numpy_interp(times, values, observed, np.zeros(2))
    torch.manual_seed(7)
    got = model.predict_step((raw, torch.from_numpy(times)), 0)
    torch.manual_seed(7)
    samples = model.sample(raw, obs, 4, dt=dt)
    ref = point_estimate(samples, torch.from_numpy(want).float(), ~obs, "shrunk", model.data_std)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert np.allclose(interpolation(raw, obs, model.data_mean, time_positions(dt)).numpy(), want,
                       rtol=1e-4, atol=1e-5)
    # blend 0 is the interpolation in time itself
    zero = point_estimate(samples, interpolation(raw, obs, model.data_mean, time_positions(dt)), ~obs, "shrunk",
                          model.data_std, blend=0.0)
    assert np.allclose(zero.numpy()[~observed], want[~observed], rtol=1e-4, atol=1e-5)


def test_impute_and_forecast_points_fall_back_to_the_interpolation_in_time():
    """``ssm sssd impute`` / ``forecast``'s point (:func:`apps.sssd.infer.point_of`) with the input's stamps: at
    blend 0 the ``shrunk`` point is ``np.interp`` on the stamps; evenly spaced stamps are the row index's."""
    from apps.sssd.infer import point_of, series_positions

    times, values, observed = _series(seed=4)
    observed[0, 4, 0] = True
    model = _module()
    model.time_unit.fill_(float(np.median(np.diff(times, axis=1))))
    raw = np.where(observed, values, np.nan).astype(np.float32)
    samples = np.repeat(np.nan_to_num(raw)[None], 3, axis=0) + np.random.default_rng(0).standard_normal((3, *raw.shape)).astype(np.float32)
    got = point_of(samples, raw, observed, model, "shrunk", 0.0, times)
    want = numpy_interp(times, values, observed, np.zeros(2))
    assert np.allclose(got[~observed], want[~observed], rtol=1e-4, atol=1e-5)
    assert np.array_equal(got[observed], raw[observed])
    # stamps one training step apart: no time steps at all, the row index's interpolation exactly
    unit = float(model.time_unit)
    even = np.broadcast_to(np.arange(30.0) * unit + 7.0, times.shape).copy()
    assert series_positions(model, even) is None and series_positions(model, None) is None
    by_row = point_of(samples, raw, observed, model, "shrunk", 0.0)
    assert np.array_equal(point_of(samples, raw, observed, model, "shrunk", 0.0, even), by_row)
    # evenly spaced at another step: S5 gets those steps, and the interpolation is the same up to rounding
    assert np.allclose(point_of(samples, raw, observed, model, "shrunk", 0.0, even * 3.0), by_row, atol=1e-5)
