"""FFT convolution (causal and two-sided) against direct sums, and its hand-written backward."""

from __future__ import annotations

import pytest
import torch

from ssmcore.fftconv import fftconv, two_sided
from tests.ssmcore.helpers import rel_err


def direct(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[b, c, h, t] = sum_m k[c, h, m] u[b, h, t - m] (m < 0 wraps to the anti-causal half of a 2L kernel)."""
    B, H, L = u.shape
    C, _, Lk = k.shape
    y = torch.zeros(B, C, H, L, dtype=torch.float64)
    for t in range(L):
        for s in range(L):
            m = t - s
            if m < 0:
                if Lk == L:
                    continue
                m += Lk
            y[:, :, :, t] += k[None, :, :, m] * u[:, None, :, s]
    return y


@pytest.mark.parametrize("two", [False, True])
@pytest.mark.parametrize("L", [1, 7, 16])
def test_matches_direct_sum(two, L):
    torch.manual_seed(L)
    u = torch.randn(3, 2, L, dtype=torch.float64)
    k = torch.randn(2, 2, 2 * L if two else L, dtype=torch.float64)
    assert rel_err(fftconv(u, k), direct(u, k)) < 1e-12


@pytest.mark.parametrize("two", [False, True])
def test_gradients_match_autograd_of_direct_sum(two):
    torch.manual_seed(0)
    L = 11
    u = torch.randn(2, 3, L, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 2 * L if two else L, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, L, dtype=torch.float64)
    du, dk = torch.autograd.grad((fftconv(u, k) * w).sum(), (u, k))
    du_ref, dk_ref = torch.autograd.grad((direct(u, k) * w).sum(), (u, k))
    assert rel_err(du, du_ref) < 1e-12
    assert rel_err(dk, dk_ref) < 1e-12
    assert torch.autograd.gradcheck(fftconv, (u, k))


def test_float32_gradients_and_only_requested_ones():
    torch.manual_seed(1)
    u64 = torch.randn(2, 4, 300, dtype=torch.float64)
    k64 = two_sided(torch.randn(1, 4, 300, dtype=torch.float64), torch.randn(1, 4, 300, dtype=torch.float64))
    w = torch.randn(2, 1, 4, 300, dtype=torch.float64)
    u, k = u64.float().requires_grad_(), k64.float().requires_grad_()
    u64.requires_grad_()
    k64.requires_grad_()
    (fftconv(u, k) * w.float()).sum().backward()
    (fftconv(u64, k64) * w).sum().backward()
    assert u.grad.dtype == torch.float32 and rel_err(u.grad.double(), u64.grad) < 1e-5
    assert rel_err(k.grad.double(), k64.grad) < 1e-5
    frozen = torch.randn(1, 4, 300)  # a kernel that needs no gradient
    x = torch.randn(2, 4, 300, requires_grad=True)
    fftconv(x, frozen).sum().backward()
    assert x.grad is not None and frozen.grad is None


def test_wrong_kernel_length():
    with pytest.raises(ValueError, match="kernel length"):
        fftconv(torch.randn(1, 2, 8), torch.randn(1, 2, 9))
