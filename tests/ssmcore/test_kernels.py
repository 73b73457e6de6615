"""The chunked Vandermonde kernel (ssmcore.kernels) against the direct formula in float64."""

import pytest
import torch

from ssmcore.kernels import vandermonde_kernel, vandermonde_transpose


def direct(weights, log_z, L):
    """``Re sum_n W_n exp(l log z_n)`` with the full (..., H, L, N) tensor."""
    lags = torch.arange(L, dtype=torch.float64)
    return (weights.unsqueeze(-2) * torch.exp(lags[:, None] * log_z.unsqueeze(-2))).sum(-1).real


def poles(H, N, decay=0.05, dtype=torch.complex128):
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(-torch.rand(H, N, dtype=real) * decay, torch.rand(H, N, dtype=real) * 6.3)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("L", [1, 2, 7, 100, 300, 1023, 4096])
@pytest.mark.parametrize("block", [1, 2, None])
def test_values_and_gradients_match_direct_formula(L, block):
    torch.manual_seed(L)
    log_z = poles(3, 8).requires_grad_()
    W = torch.randn(2, 3, 8, dtype=torch.complex128, requires_grad=True)
    K = vandermonde_kernel(W, log_z, L, block=block)
    ref = direct(W, log_z, L)
    assert K.shape == (2, 3, L) and K.dtype == torch.float64
    assert rel(K, ref) < 1e-12
    g = torch.randn_like(ref)
    got = torch.autograd.grad((K * g).sum(), (W, log_z))
    want = torch.autograd.grad((ref * g).sum(), (W, log_z))
    assert rel(got[0], want[0]) < 1e-11
    if L == 1:  # no lag > 0: no gradient for the poles
        assert got[1].abs().max() == 0 and want[1].abs().max() == 0
    else:
        assert rel(got[1], want[1]) < 1e-11


def test_gradcheck_tiny():
    torch.manual_seed(0)
    log_z = poles(2, 3, decay=0.2).requires_grad_()
    W = torch.randn(2, 3, dtype=torch.complex128, requires_grad=True)
    for L in (5, 10):
        assert torch.autograd.gradcheck(lambda w, z, L=L: vandermonde_kernel(w, z, L, block=1), (W, log_z))


def test_one_input_without_gradient_and_real_weights():
    torch.manual_seed(1)
    log_z = poles(2, 4)
    W = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)  # real weights: Im W = 0
    K = vandermonde_kernel(W, log_z, 50)
    (gw,) = torch.autograd.grad(K.square().sum(), W)
    ref = direct(torch.complex(W, torch.zeros_like(W)), log_z, 50)
    (gw_ref,) = torch.autograd.grad(ref.square().sum(), W)
    assert rel(gw, gw_ref) < 1e-12
    z = log_z.clone().requires_grad_()
    Wc = torch.randn(2, 4, dtype=torch.complex128)
    (gz,) = torch.autograd.grad(vandermonde_kernel(Wc, z, 50).sum(), z)
    (gz_ref,) = torch.autograd.grad(direct(Wc, z, 50).sum(), z)
    assert rel(gz, gz_ref) < 1e-12


def test_float32_keeps_phase_at_long_lags():
    """float32 powers come from exact factors, so the error does not grow with the lag."""
    torch.manual_seed(2)
    log_z = poles(2, 16, decay=1e-4).to(torch.complex64).to(torch.complex128)  # exact in float32
    W = torch.randn(2, 16, dtype=torch.complex64).to(torch.complex128)
    L = 65536
    ref = vandermonde_kernel(W, log_z, L)  # float64, checked against the direct formula above
    K = vandermonde_kernel(W.to(torch.complex64), log_z.to(torch.complex64), L)
    assert K.dtype == torch.float32
    tail = slice(L - 4096, L)
    assert rel(K.double()[:, tail], ref[:, tail]) < 1e-5
    z = log_z.to(torch.complex64).requires_grad_()
    (g32,) = torch.autograd.grad(vandermonde_kernel(W.to(torch.complex64), z, L).sum(), z)
    z64 = log_z.clone().requires_grad_()
    (g64,) = torch.autograd.grad(vandermonde_kernel(W, z64, L).sum(), z64)
    assert rel(g32.to(torch.complex128), g64) < 1e-4  # float32 sums of 65536 terms


def test_transpose_is_the_adjoint():
    torch.manual_seed(3)
    log_z = poles(3, 5)
    u = torch.randn(2, 3, 77, dtype=torch.float64)
    lags = torch.arange(77, dtype=torch.float64)
    ref = (u.unsqueeze(-1) * torch.exp(lags[:, None] * log_z.unsqueeze(-2))).sum(-2)
    assert rel(vandermonde_transpose(u, log_z), ref) < 1e-12
