import time

import pytest
import torch

from ssmcore.layers.dlr import DLR
from ssmcore.registry import make_layer
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_sees_future,
    check_step_matches_forward,
    diagonal_recurrence,
    rel_err,
)


@pytest.mark.parametrize("variant", ["dlr", "dlr_imag"])
@pytest.mark.parametrize("real_W", [False, True])
def test_kernel_matches_float64_recurrence(variant, real_W):
    torch.manual_seed(0)
    layer = DLR(d_model=3, d_state=32, variant=variant, real_W=real_W).double()
    L = 300
    k = layer.kernel(L)[0]  # (H, L)
    lam = layer.eigenvalues()
    impulse = torch.zeros(3, L, dtype=torch.float64)
    impulse[:, 0] = 1
    ref = diagonal_recurrence(torch.exp(lam), torch.ones_like(lam), layer.output_weights()[0], impulse, scale=1.0)
    assert rel_err(k, ref) < 1e-10
    assert layer.default_state(2).shape == (2, 3, 32)


def test_omega_init():
    layer = DLR(d_model=2, d_state=8, dt_min=0.01, dt_max=0.01)
    lam = layer.eigenvalues()
    assert torch.allclose(lam.imag[0], 2 * torch.pi * torch.arange(8) / 8)
    assert torch.allclose(lam.real, torch.full_like(lam.real, -0.005))
    assert (DLR(d_model=2, d_state=8, variant="dlr_imag").eigenvalues().real == 0).all()


def test_step_matches_forward_long():
    check_step_matches_forward(DLR(d_model=4, d_state=64), L=4096, batch=1)


def test_chunked_matches_whole_long():
    check_chunked_matches_whole(DLR(d_model=4, d_state=64, channels=2), L=4096, chunks=5)


def test_rate_scales_lambda():
    torch.manual_seed(0)
    layer = DLR(d_model=2, d_state=16).double()
    k2 = layer.kernel(64, rate=2.0)
    with torch.no_grad():
        layer.rho.mul_(2**0.5)
        layer.theta.mul_(2)
    assert rel_err(k2, 2.0 * layer.kernel(64)) < 1e-12  # lambda * 2, and twice the input per step


def test_causal_bidirectional_and_registry():
    check_causal(DLR(d_model=4, d_state=16))
    check_sees_future(DLR(d_model=4, d_state=16, bidirectional=True))
    layer = make_layer("dlr", d_model=6, d_state=16, channels=2)
    y, state = layer(torch.randn(2, 40, 6))
    assert y.shape == (2, 40, 6) and state is None
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    with pytest.raises(ValueError, match="unknown variant"):
        DLR(d_model=4, variant="nope")


def test_kernel_half_million_long_finite():
    torch.manual_seed(0)
    layer = DLR(d_model=2, d_state=1024)
    start = time.perf_counter()
    with torch.no_grad():
        k = layer.kernel(2**19)
    assert k.shape == (1, 2, 2**19) and torch.isfinite(k).all()
    assert time.perf_counter() - start < 60


def test_half_circle_init_and_W_scale():
    torch.manual_seed(0)
    layer = DLR(d_model=2, d_state=16, theta_init="half", W_scale=0.01, dt_min=1e-6, dt_max=1e-6).double()
    assert torch.allclose(layer.theta[0], torch.pi * torch.arange(16, dtype=torch.float64) / 16)
    assert torch.allclose(layer.output_weights(), 0.01 * torch.view_as_complex(layer.W))
    lam = layer.eigenvalues()
    impulse = torch.zeros(2, 50, dtype=torch.float64)
    impulse[:, 0] = 1
    ref = diagonal_recurrence(torch.exp(lam), torch.ones_like(lam), layer.output_weights()[0], impulse, scale=1.0)
    assert rel_err(layer.kernel(50)[0], ref) < 1e-10
    with pytest.raises(ValueError, match="unknown theta_init"):
        DLR(d_model=2, theta_init="nope")
    with pytest.raises(ValueError, match="W_scale"):
        DLR(d_model=2, W_scale=0.0)


def test_half_circle_modes_hold_a_shift_by_any_lag_below_2N():
    """N modes at pi n / N are the real Fourier basis of period 2N (less the Nyquist frequency pi):
    a delta at any lag d < 2N is matched up to that one missing frequency, whose share of the
    energy is 1 / (2N)."""
    N, d = 32, 45
    layer = DLR(d_model=1, d_state=N, theta_init="half", variant="dlr_imag").double()
    n = torch.arange(N, dtype=torch.float64)
    coef = torch.where(n == 0, 1.0, 2.0) / (2 * N) * torch.exp(-1j * torch.pi * n * d / N)
    with torch.no_grad():
        layer.W.copy_(torch.view_as_real(coef).reshape(1, 1, N, 2))
    k = layer.kernel(2 * N)[0, 0]
    target = torch.zeros(2 * N, dtype=torch.float64)
    target[d] = 1
    nyquist = (-1.0) ** (torch.arange(2 * N, dtype=torch.float64) - d) / (2 * N)
    assert (k - (target - nyquist)).abs().max() < 1e-5  # theta was initialised in float32
    assert (k - target).square().sum().item() == pytest.approx(1 / (2 * N), rel=1e-3)
