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


@pytest.mark.parametrize("L", [1, 33, 515])
@pytest.mark.parametrize("constant", [False, True])
def test_a_given_log_of_any_branch_gives_the_same_states_and_gradients(L, constant):
    """``log_a`` (what S5 passes: its Lambda dt) spares the scan its own complex log.  Any branch of it
    (angles shifted by whole turns, as Lambda dt's exceed pi) gives the states of an explicit loop of the
    recurrence written here, and the gradients of a and b as without it (log_a is a constant)."""
    a, b, x0 = _inputs(L, constant, seed=2)
    turns = torch.randint(-40, 40, a.shape, generator=torch.Generator().manual_seed(3)).to(torch.float64)
    log_a = torch.complex(a.abs().log(), a.angle() + 2 * torch.pi * turns)
    x, ref = x0.clone(), []
    for k in range(L):
        x = a[:, 0 if constant else k] * x + b[:, k]
        ref.append(x)
    ref = torch.stack(ref, dim=1)
    assert rel_err(linear_scan(a, b, x0, log_a=log_a), ref) < 1e-12
    weights = torch.randn(2, L, 3, dtype=torch.complex128)
    grads = []
    for log in (None, log_a):
        leaves = [t.clone().requires_grad_(True) for t in (a, b, x0)]
        (linear_scan(*leaves, log_a=log) * weights).real.sum().backward()
        grads.append([t.grad for t in leaves])
    for with_log, without in zip(grads[1], grads[0]):
        assert rel_err(with_log, without) < 1e-10
    # float32, with S5-sized angles: as precise as the scan's own log
    a32, b32, log32 = a.to(torch.complex64), b.to(torch.complex64), log_a.to(torch.complex64)
    assert rel_err(linear_scan(a32, b32, log_a=log32).to(torch.complex128), linear_scan(a, b)) < 1e-4


def test_complex_expm1_is_exp_minus_one_accurately_near_zero():
    """complex_expm1 against exp(z) - 1 in extended precision (float64 from float32 inputs), from |z| ~ 1e-7
    (where exp(z) - 1 in float32 would lose every digit) to S5's largest steps."""
    from ssmcore.scan import complex_expm1

    g = torch.Generator().manual_seed(0)
    mag = 10 ** (torch.rand(4000, generator=g) * 8 - 7)  # 1e-7 .. 10
    z = torch.polar(mag, torch.rand(4000, generator=g) * 2 * torch.pi)
    ref = torch.exp(z.to(torch.complex128)) - 1
    err = (complex_expm1(z).to(torch.complex128) - ref).abs() / ref.abs()
    assert float(err.max()) < 1e-5
    assert torch.equal(complex_expm1(z.real), torch.expm1(z.real))
