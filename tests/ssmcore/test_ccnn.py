"""CCNN: the continuous kernel sampled on the grid, applied by direct convolution in float64."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ssmcore import make_layer
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_step_matches_forward,
    rel_err,
)
from tests.ssmcore.learning import train_delay


def _layer(dim=1, **kw):
    torch.manual_seed(0)
    layer = make_layer("ccnn", d_model=3, dim=dim, d_state=16, **kw)
    with torch.no_grad():
        layer.mask_mean.add_(0.1)
    return layer


def reference_kernel(layer, shape, rates, bidirectional):
    """The paper's kernel built here: net(x) * Gaussian mask(x) at x_i = lag_i * rate_i / l_ref_i, zero outside
    [0, 1) (causal) or [-1, 1) (two-sided), times prod(rate) / sqrt(support).  Returns {lag tuple: (C H,)}."""
    l_ref = [int(v) for v in layer.l_ref]
    mean = layer.mask_mean.double()
    width = torch.exp(layer.mask_log_width.double())
    support = math.prod(l * (2 if b else 1) for l, b in zip(l_ref, bidirectional))
    scale = math.prod(rates) / math.sqrt(support)
    ranges = [range(-s + 1, s) if b else range(s) for s, b in zip(shape, bidirectional)]
    out = {}
    net = layer.kernel_net.double()
    for lag in itertools.product(*ranges):
        x = torch.tensor([lg * r / l for lg, r, l in zip(lag, rates, l_ref)], dtype=torch.float64)
        lo = torch.tensor([-1.0 if b else 0.0 for b in bidirectional], dtype=torch.float64)
        if not ((x >= lo).all() and (x < 1).all()):
            continue
        mask = torch.exp(-0.5 * (((x - mean) / width) ** 2).sum())
        with torch.no_grad():
            out[lag] = net(x[None])[0] * mask * scale
    layer.kernel_net.float()
    return out


def direct_conv(u, kernel, C, H):
    """y[b, c, h, t] = sum_lag k[lag][c, h] u[b, h, t - lag] over the grid (zero outside)."""
    B, spatial = u.shape[0], u.shape[2:]
    y = torch.zeros(B, C, H, *spatial, dtype=torch.float64)
    for t in itertools.product(*[range(s) for s in spatial]):
        acc = torch.zeros(B, C, H, dtype=torch.float64)
        for lag, k in kernel.items():
            src = tuple(ti - li for ti, li in zip(t, lag))
            if all(0 <= si < s for si, s in zip(src, spatial)):
                acc += k.view(C, H)[None] * u[(slice(None), slice(None), *src)][:, None]
        y[(slice(None), slice(None), slice(None), *t)] = acc
    return y


@pytest.mark.parametrize("dim,shape,net", [(1, (12,), "magnet"), (1, (12,), "siren"), (2, (5, 6), "magnet"),
                                           (3, (3, 4, 3), "siren")])
def test_forward_is_the_sampled_continuous_kernel_convolved(dim, shape, net):
    layer = _layer(dim, kernel_net=net, l_max=[s - 2 for s in shape])  # support shorter than the grid
    u = torch.randn(2, 3, *shape, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer.ssm_forward(u.float())
    ref = direct_conv(u, reference_kernel(layer, shape, (1.0,) * dim, layer.bidirectional), 1, 3)
    assert rel_err(y.double(), ref) < 1e-5


def test_rate_samples_the_same_continuous_kernel():
    """Rate 1/2 on a grid twice as fine hits the rate-1 lags at every other tap (times the rate)."""
    layer = _layer(2, l_max=(8, 8))
    with torch.no_grad():
        coarse = layer.kernel((8, 8))
        fine = layer.kernel((16, 16), rate=(0.5, 0.5))
        mixed = layer.kernel((8, 16), rate=(1.0, 0.5))
    # two-sided layout: index n is lag n (n < S) or n - 2S; lag l on the fine grid is index 2l / 2S + 2l
    lags = list(range(0, 8)) + list(range(-8, 0))
    idx_c = [lg % 16 for lg in lags]
    idx_f = [(2 * lg) % 32 for lg in lags]
    assert torch.allclose(fine[..., idx_f, :][..., idx_f] / 0.25, coarse[..., idx_c, :][..., idx_c], atol=1e-6)
    assert torch.allclose(mixed[..., :, idx_f] / 0.5, coarse[..., :, idx_c], atol=1e-6)
    with pytest.raises(ValueError):
        layer.kernel((8, 8), rate=(2.0, 2.0, 2.0))


def test_rate_on_a_smooth_signal():
    """The Riemann sums at rate 2 (every other sample) and rate 1 agree on a smooth signal and a smooth kernel."""
    layer = _layer(1, l_max=512, omega=4.0).double()
    t = torch.arange(1024, dtype=torch.float64) / 1024
    u = torch.sin(2 * math.pi * 3 * t)[None, None].expand(1, 3, -1)
    with torch.no_grad():
        ref = layer.ssm_forward(u)[0][..., ::2]
        out = layer.ssm_forward(u[..., ::2], rate=2.0)[0]
    assert rel_err(out, ref) < 0.05


def test_step_and_chunks_match_forward_beyond_the_support():
    layer = _layer(1, l_max=16)
    check_step_matches_forward(layer, L=40)
    check_chunked_matches_whole(layer, L=40)
    check_causal(layer)


def test_step_at_a_rate():
    layer = _layer(1, l_max=16)
    x = torch.randn(2, 30, 3)
    with torch.no_grad():
        y, _ = layer(x, rate=0.5)
        state = layer.default_state(2, rate=0.5)
        ys = []
        for t in range(30):
            y_t, state = layer.step(x[:, t], state, rate=0.5)
            ys.append(y_t)
    assert state[0].shape[-1] == 32
    assert rel_err(torch.stack(ys, 1), y) < 1e-4


def test_two_sided_and_errors():
    layer = _layer(2)
    y, _ = layer(torch.randn(1, 6, 6, 3))
    assert y.shape == (1, 6, 6, 3)
    with pytest.raises(RuntimeError):
        layer.default_state(1)
    with pytest.raises(ValueError):
        layer(torch.randn(1, 6, 3))
    with pytest.raises(ValueError):
        make_layer("ccnn", d_model=3, kernel_net="mlp")


def test_kernel_norm_at_init_is_about_one():
    for dim in (1, 2):
        layer = _layer(dim)
        shape = (64,) * dim
        with torch.no_grad():
            k = layer.kernel(shape)
        norms = k.flatten(2).norm(dim=-1)
        assert ((norms > 0.5) & (norms < 2.0)).all()


def test_finite_gradients_at_16384():
    layer = _layer(1)
    x = torch.randn(1, 16384, 3, requires_grad=True)
    y, _ = layer(x)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


@pytest.mark.slow
def test_learns_a_delay_task():
    torch.manual_seed(0)
    layer = make_layer("ccnn", d_model=8, d_state=16)
    first, last = train_delay(layer, steps=120)
    assert last < 0.3 * first
