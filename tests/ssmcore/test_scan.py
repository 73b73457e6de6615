import pytest
import torch

from ssmcore.scan import linear_scan, sequential_scan
from tests.ssmcore.helpers import rel_err

LENGTHS = [1, 2, 7, 32, 33, 100, 1000, 1029]


def _inputs(L: int, constant: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    La = 1 if constant else L
    decay = -torch.rand(2, La, 3, generator=g, dtype=torch.float64) * 0.2
    angle = torch.randn(2, La, 3, generator=g, dtype=torch.float64)
    a = torch.exp(torch.complex(decay, angle))
    b = torch.randn(2, L, 3, generator=g, dtype=torch.complex128)
    x0 = torch.randn(2, 3, generator=g, dtype=torch.complex128)
    return a, b, x0


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("constant", [False, True])
def test_forward_matches_loop(L, constant):
    a, b, x0 = _inputs(L, constant)
    assert rel_err(linear_scan(a, b), sequential_scan(a, b)) < 1e-12
    assert rel_err(linear_scan(a, b, x0), sequential_scan(a, b, x0)) < 1e-12


@pytest.mark.parametrize("L", [1, 5, 33, 100, 515])
@pytest.mark.parametrize("constant", [False, True])
def test_gradients_match_loop(L, constant):
    a, b, x0 = _inputs(L, constant, seed=1)
    weights = torch.randn(2, L, 3, dtype=torch.complex128)
    grads = []
    for scan in (linear_scan, sequential_scan):
        leaves = [t.clone().requires_grad_(True) for t in (a, b, x0)]
        x = scan(*leaves)
        (x * weights).real.sum().backward()
        grads.append([t.grad for t in leaves])
    for fast, ref in zip(*grads):
        assert rel_err(fast, ref) < 1e-10


def test_gradcheck_and_real_inputs_and_broadcasting():
    torch.manual_seed(0)
    a = (torch.rand(1, 9, 2, dtype=torch.float64) * 0.9).requires_grad_(True)  # broadcast over batch
    b = torch.randn(3, 9, 2, dtype=torch.complex128, requires_grad=True)
    x0 = torch.randn(3, 2, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, x0: linear_scan(a, b, x0), (a, b, x0))
    a2, b2 = a[:, :4].detach().requires_grad_(True), b[:1, :4].detach().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda a, b: linear_scan(a, b), (a2, b2))
    x = linear_scan(a.detach(), b.real.detach())
    assert x.dtype == torch.float64
    assert rel_err(x, sequential_scan(a.detach(), b.real.detach())) < 1e-12


def test_other_dim_and_float32_long():
    torch.manual_seed(0)
    a = torch.exp(torch.complex(-torch.rand(4, 1) * 1e-2, torch.randn(4, 1)))  # (F, 1): scan along dim 1
    b = torch.randn(2, 4, 5000, dtype=torch.complex64)
    x = linear_scan(a, b, dim=-1)
    ref = sequential_scan(a.to(torch.complex128), b.to(torch.complex128), dim=-1)
    assert x.shape == (2, 4, 5000)
    assert rel_err(x.to(torch.complex128), ref) < 1e-4


def test_bad_length():
    with pytest.raises(ValueError, match="expected 1 or 5"):
        linear_scan(torch.ones(1, 3, 2), torch.ones(1, 5, 2))
