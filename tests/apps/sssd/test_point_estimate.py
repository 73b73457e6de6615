"""The point estimates of apps.sssd.point: James-Stein shrinkage toward the interpolation, the fitted blend."""

from __future__ import annotations

import pytest
import torch

from apps.sssd.point import POINTS, fit_blend, interpolation, point_estimate, shrink_factor


def test_shrink_factor_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(7, 2, 5, 3, generator=g, dtype=torch.float64)
    interp = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    where = torch.rand(2, 5, 3, generator=g) < 0.5
    scale = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    got = shrink_factor(samples, interp, where, scale)
    for b in range(2):
        noise = signal = 0.0
        for t, c in where[b].nonzero().tolist():
            draws = samples[:, b, t, c].tolist()
            m = sum(draws) / 7
            var = sum((x - m) ** 2 for x in draws) / 6
            noise += var / (7 * float(scale[c]) ** 2)
            signal += ((m - float(interp[b, t, c])) / float(scale[c])) ** 2
        assert abs(float(got[b]) - min(max(1 - noise / signal, 0.0), 1.0)) < 1e-12


def test_shrunk_estimate_is_the_interpolation_plus_the_scaled_mean_offset():
    g = torch.Generator().manual_seed(1)
    samples = 3 + torch.randn(20, 1, 6, 2, generator=g, dtype=torch.float64)
    interp = torch.zeros(1, 6, 2, dtype=torch.float64)
    where = torch.ones(1, 6, 2, dtype=torch.bool)
    where[0, 0] = False  # an observed step keeps the samples' value (the data)
    lam = float(shrink_factor(samples, interp, where)[0])
    assert 0.9 < lam <= 1.0  # an offset far above the samples' noise is kept
    est = point_estimate(samples, interp, where, "shrunk")
    want = lam * samples.mean(0)
    assert torch.allclose(est[where], want[where])
    assert torch.equal(est[0, 0], samples[0, 0, 0])
    assert torch.allclose(point_estimate(samples, interp, where, "shrunk", blend=0.5)[where], 0.5 * want[where])
    assert torch.equal(point_estimate(samples, interp, where, "median")[where], samples.median(0).values[where])
    assert torch.allclose(point_estimate(samples, interp, where, "mean")[where], samples.mean(0)[where])
    with pytest.raises(ValueError, match="unknown point estimate"):
        point_estimate(samples, interp, where, "mode")
    assert POINTS[0] == "shrunk"


def test_samples_that_know_nothing_fall_back_to_the_interpolation_and_beat_the_median():
    # a model that only learned the residual's spread: samples = interp + sigma * noise, truth = interp + sigma * e
    g = torch.Generator().manual_seed(2)
    B, L, C, S = 64, 32, 2, 10
    interp = torch.randn(B, L, C, generator=g, dtype=torch.float64)
    truth = interp + torch.randn(B, L, C, generator=g, dtype=torch.float64)
    samples = interp + torch.randn(S, B, L, C, generator=g, dtype=torch.float64)
    where = torch.ones(B, L, C, dtype=torch.bool)

    def mse(x):
        return float(((x - truth) ** 2).mean())

    lin, med, shr = mse(interp), mse(point_estimate(samples, interp, where, "median")), \
        mse(point_estimate(samples, interp, where, "shrunk"))
    assert med > 1.1 * lin  # about pi / (2 S) = +16% of MC noise on top of the interpolation
    assert shr < 1.01 * lin
    assert float(shrink_factor(samples, interp, where).mean()) < 0.2


def test_samples_centred_on_the_truth_are_kept():
    g = torch.Generator().manual_seed(3)
    B, L, C, S = 16, 32, 1, 10
    interp = torch.zeros(B, L, C, dtype=torch.float64)
    truth = 2 * torch.randn(B, L, C, generator=g, dtype=torch.float64)
    samples = truth + 0.5 * torch.randn(S, B, L, C, generator=g, dtype=torch.float64)
    where = torch.ones(B, L, C, dtype=torch.bool)
    shr = point_estimate(samples, interp, where, "shrunk")
    assert float(((shr - truth) ** 2).mean()) < 0.05 * float((truth**2).mean())
    assert float(shrink_factor(samples, interp, where).min()) > 0.95


def test_fit_blend_is_the_clipped_least_squares_factor():
    d = torch.tensor([1.0, -2.0, 0.5, 9.0])
    e = torch.tensor([0.5, -1.0, 0.0, float("nan")])
    where = torch.tensor([True, True, True, False])
    assert abs(fit_blend(d, e, where) - (0.5 + 2.0) / (1 + 4 + 0.25)) < 1e-12
    assert fit_blend(d, -e, where) == 0.0  # an offset pointing the wrong way: keep the interpolation
    assert fit_blend(d, 10 * e, where) == 1.0
    assert fit_blend(torch.zeros(4), e, where) == 0.0


def test_interpolation_is_linear_between_observed_steps_in_data_units():
    raw = torch.tensor([[[1.0], [float("nan")], [5.0], [7.0]]])
    cond = torch.tensor([[[True], [False], [False], [True]]])
    out = interpolation(raw, cond, torch.zeros(1))
    assert torch.allclose(out[0, :, 0], torch.tensor([1.0, 3.0, 5.0, 7.0]))


def _untrained(C: int = 2, **kw):
    import numpy as np

    from apps.sssd.module import SSSDModule

    torch.manual_seed(0)
    model = SSSDModule(channels=C, res_channels=8, skip_channels=8, n_layers=1, layer={"name": "s4d", "d_state": 4},
                       embed_dim_in=8, embed_dim_mid=16, embed_dim_out=16, diffusion_steps=20, mask_ratio=[0.2, 0.4],
                       test_samples=6, sampler="ddim", sampler_steps=4, **kw)
    torch.nn.init.normal_(model.net.out_conv.weight, std=0.1)  # a model that knows nothing, but not silent
    model.set_stats(np.zeros(C), np.ones(C))
    model.train_length.fill_(24)
    return model.eval()


def _smooth(n: int, L: int, C: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(L, dtype=torch.float32).reshape(1, L, 1)
    phase = 6.3 * torch.rand(n, 1, C, generator=g)
    return torch.sin(0.2 * t + phase) + 0.05 * torch.randn(n, L, C, generator=g)


def test_calibrated_blend_of_a_model_that_knows_nothing_keeps_the_interpolation():
    from apps.sssd.masks import batch_masks
    from apps.sssd.point import calibrate_blend

    model = _untrained()
    val, test = _smooth(24, 24, 2, 0), _smooth(24, 24, 2, 1)
    blend = calibrate_blend(model, val, n_samples=6)
    assert 0.0 <= blend < 0.1
    cond = batch_masks("rm", 24, 24, 2, 0.4, generator=torch.Generator().manual_seed(5))
    target = ~cond
    samples = model.sample(test, cond, 6, generator=torch.Generator().manual_seed(6))
    interp = interpolation(test, cond, model.data_mean)

    def mse(x):
        return float(((x - test)[target] ** 2).mean())

    shrunk = point_estimate(samples, interp, target, "shrunk", model.data_std, blend)
    assert mse(shrunk) <= 1.01 * mse(interp) < mse(point_estimate(samples, interp, target, "median"))


def test_impute_helpers_tile_the_training_masks_and_keep_observed_entries():
    import numpy as np

    from apps.sssd.infer import calibrate_blend, point_of, training_masks

    model = _untrained()
    values = _smooth(1, 60, 2, 2).numpy()  # one series of 60 steps, windows of 24
    mask = training_masks(model, values.shape, seed=0)
    assert mask.shape == values.shape
    for s in (0, 24, 48):  # per window and channel, 20% or 40% of its steps hidden (round(ratio * width))
        width = min(24, 60 - s)
        hidden = (~mask[0, s:s + width]).sum(0)
        assert all(h in {round(0.2 * width), round(0.4 * width)} for h in hidden.tolist())
    observed = np.ones(values.shape, dtype=bool)
    observed[0, 10:14, 1] = False
    blend = calibrate_blend(model, values, observed, 4, "ddim", 4, seed=0)
    assert 0.0 <= blend <= 1.0
    samples = np.repeat(values[None], 4, axis=0) + np.random.default_rng(0).normal(size=(4, *values.shape))
    point = point_of(samples.astype(np.float32), values, observed, model, "shrunk", blend)
    assert np.array_equal(point[observed], values[observed]) and np.isfinite(point).all()


def test_impute_calibration_holds_out_entries_in_the_pattern_of_the_inputs_own_gaps():
    import numpy as np

    from apps.sssd.infer import gap_pattern_held

    T, C = 40, 2
    observed = np.ones((3, T, C), dtype=bool)
    observed[0, 5:15] = False  # one block gap of 10 steps in both channels
    observed[1, :, 0] = np.arange(T) % 4 != 0  # scattered gaps in channel 0 only
    # series 2: nothing missing, so nothing to imitate
    held = gap_pattern_held(observed, seed=3)
    assert not (held & ~observed).any()  # only observed entries are held out
    assert held[0].any()
    for c in range(C):  # the block's steps moved onto observed steps: at most one contiguous run (cyclically)
        col = held[0, :, c]
        assert col.sum() <= 10 and (col & ~np.roll(col, 1)).sum() == (1 if col.any() else 0)
    assert not held[1, :, 1].any() and 0 < held[1, :, 0].sum() <= T // 4  # channel 0's pattern, channel 0 only
    assert not held[2].any()
    assert np.array_equal(held, gap_pattern_held(observed, seed=3))  # seeded


def test_impute_calibration_holds_out_about_a_fraction_of_the_observed_entries_in_whole_runs():
    import numpy as np

    from apps.sssd.infer import gap_pattern_held

    rng = np.random.default_rng(0)
    observed = rng.random((4, 400, 3)) > 0.6  # 60% missing, scattered
    held = gap_pattern_held(observed, seed=1, fraction=0.15)
    assert not (held & ~observed).any()
    share = held.sum() / observed.sum()
    assert 0.08 < share < 0.22  # about 15%: conditioning keeps ~85% of the observed entries
    blocks = np.ones((1, 400, 1), dtype=bool)
    for s in range(0, 400, 40):
        blocks[0, s:s + 10] = False  # ten gaps of 10 steps
    held = gap_pattern_held(blocks, seed=2, fraction=0.15)[0, :, 0]
    starts = np.flatnonzero(held & ~np.roll(held, 1))
    ends = np.flatnonzero(held & ~np.roll(held, -1))
    assert len(starts) >= 1 and all(0 < e - b + 1 <= 10 for b, e in zip(starts, ends))  # whole runs, gap-sized
