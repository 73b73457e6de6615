"""Liquid-S4 against the linearised liquid recurrence, unrolled in float64 and truncated at order p."""

from __future__ import annotations

import itertools

import pytest
import torch

from ssmcore import make_layer
from ssmcore.layers.liquid_s4 import LiquidS4
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_step_matches_forward,
    rel_err,
)
from tests.ssmcore.learning import train_delay


def _layer(p: int = 2, kind: str = "kb", H: int = 3, N: int = 8, seed: int = 0, **kw) -> LiquidS4:
    torch.manual_seed(seed)
    layer = make_layer("liquid_s4", d_model=H, d_state=N, liquid_degree=p, liquid_kernel=kind,
                       dt_min=0.05, dt_max=0.3, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in LiquidS4.ssm_parameter_names:
            par = getattr(layer, name)
            par.add_(0.1 * torch.randn(par.shape, generator=g))
        layer.B.mul_(3.0)  # liquid terms of order 2, 3 clearly visible
    return layer


def dense_system(layer: LiquidS4, rate: float = 1.0):
    """Float64 ``(Abar, Bbar, C)`` of the full conjugate-symmetric system, from the paper's formulas."""
    full = lambda x: torch.cat([x, x.conj()], -1)  # noqa: E731
    lam = torch.complex(-torch.exp(layer.Lambda_real.double()), layer.Lambda_imag.double())
    P = full(torch.view_as_complex(layer.P.double()))
    B = full(torch.view_as_complex(layer.B.double()))
    A = torch.diag_embed(full(lam)) - torch.einsum("rhi,rhj->hij", P.conj(), P)
    eye = torch.eye(A.shape[-1], dtype=A.dtype)

    def bilinear(r):
        dt = (torch.exp(layer.log_dt.double()) * r)[:, None, None]
        return torch.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A), torch.linalg.solve(eye - dt / 2 * A, dt[..., 0] * B)

    Abar, Bbar = bilinear(rate)
    Abar1, _ = bilinear(1.0)
    power = eye.expand_as(A).clone()
    for _ in range(int(layer.l_ref)):
        power = Abar1 @ power
    C_tilde = full(torch.view_as_complex(layer.C.double()))  # (c, H, N)
    C = torch.linalg.solve((eye - power).transpose(-1, -2), C_tilde.permute(1, 2, 0)).permute(2, 0, 1)
    return Abar, Bbar, C


def unrolled(Abar, Bbar, C, u, p, identity=False):
    """The unrolled sum, order by order: y_k = sum_q sum_{i_1<..<i_q<=k} 2Re... with the paper's collected powers:
    ``C Abar^(k - i_1 - (q-1)) Bbar^q u_i1 .. u_iq`` (Abar -> I when ``identity``).  u: (H, L) -> (c, H, L)."""
    H, L = u.shape
    N = Abar.shape[-1]
    powers = [torch.eye(N, dtype=Abar.dtype).expand(H, N, N)]
    for _ in range(L):
        powers.append(powers[-1] @ Abar)
    y = torch.zeros(C.shape[0], H, L, dtype=torch.float64)
    for k in range(L):
        for q in range(1, p + 1):
            for idx in itertools.combinations(range(k + 1), q):
                m = k - idx[0] - (q - 1)
                M = powers[0] if (identity and q > 1) else powers[m]
                coeff = torch.einsum("chn,hnm,hm->ch", C, M, Bbar ** q).real  # C is the full system: Re is y
                y[:, :, k] += coeff * torch.prod(u[:, list(idx)], dim=-1)
    return y


def bare(layer, u, rate=1.0):
    with torch.no_grad():
        y, _ = layer.ssm_forward(u, rate=rate)
    return y - layer.D[:, :, None].to(y.dtype) * u.unsqueeze(1)


@pytest.mark.parametrize("p,kind", [(1, "kb"), (2, "kb"), (3, "kb"), (2, "pb"), (3, "pb")])
def test_convolution_matches_unrolled_recurrence(p, kind):
    layer = _layer(p, kind, channels=2).double()
    u = torch.randn(1, 3, 9, dtype=torch.float64)
    y = bare(layer, u)[0]  # (c, H, L)
    Abar, Bbar, C = dense_system(layer)
    ref = unrolled(Abar, Bbar, C, u[0], p, identity=(kind == "pb"))
    assert rel_err(y, ref) < 1e-9
    if p > 1:  # the liquid terms are really there
        assert rel_err(unrolled(Abar, Bbar, C, u[0], 1), ref) > 1e-3


def test_diagonal_system_is_the_literal_recurrence_truncated():
    """With P = 0 (A diagonal) the collected powers are exact: the literal x_k = (Abar + diag(Bbar) u_k) x_{k-1}
    + Bbar u_k, truncated order by order (x^q_k = Abar x^q_(k-1) + diag(Bbar) u_k x^(q-1)_(k-1))."""
    layer = _layer(3, "kb").double()
    with torch.no_grad():
        layer.P.zero_()
    u = torch.randn(1, 3, 20, dtype=torch.float64)
    y = bare(layer, u)[0]  # fixes the reference length first
    Abar, Bbar, C = dense_system(layer)
    x = [torch.zeros(3, Abar.shape[-1], dtype=Abar.dtype) for _ in range(3)]
    ys = []
    for k in range(20):
        uk = u[0, :, k, None].to(Abar.dtype)
        prev = x
        x = [torch.einsum("hnm,hm->hn", Abar, prev[0]) + Bbar * uk]
        for q in (1, 2):
            x.append(torch.einsum("hnm,hm->hn", Abar, prev[q]) + Bbar * uk * prev[q - 1])
        ys.append(torch.einsum("chn,hn->ch", C, sum(x)).real)
    assert rel_err(y, torch.stack(ys, -1)) < 1e-9


def test_long_float32_kernel_path_matches_float64():
    layer = _layer(2, "kb", H=2, N=16)
    u = torch.randn(1, 2, 4096)
    y32 = bare(layer, u)
    y64 = bare(layer.double(), u.double())
    assert rel_err(y32.double(), y64) < 1e-4


@pytest.mark.parametrize("p,kind", [(2, "kb"), (3, "kb"), (2, "pb")])
def test_step_and_chunks_match_forward(p, kind):
    layer = _layer(p, kind, H=4, N=16)
    check_step_matches_forward(layer, L=64)
    check_chunked_matches_whole(layer, L=64)


def test_ssm_step_is_bare():
    layer = _layer(2, "kb", H=3, N=8).double()
    u = torch.randn(2, 3, 12, dtype=torch.float64)
    state, ys = layer.default_state(2), []
    with torch.no_grad():
        for t in range(12):
            y, state = layer.ssm_step(u[..., t], state)
            ys.append(y)
    assert rel_err(torch.stack(ys, -1), bare(layer, u)) < 1e-10


def test_causal_and_bidirectional():
    check_causal(_layer(2, "kb", H=4))
    layer = _layer(2, "kb", H=4, bidirectional=True)
    x = torch.randn(1, 32, 4)
    y, _ = layer(x)
    x2 = x.clone()
    x2[:, 25] += 1.0
    y2, _ = layer(x2)
    assert (y2[:, :25] - y[:, :25]).abs().max() > 1e-6  # sees the future
    with pytest.raises(RuntimeError):
        layer.step(x[:, 0], layer.default_state(1))


@pytest.mark.parametrize("kind", ["kb", "pb"])
@pytest.mark.parametrize("rate", [2.0, 0.5])
def test_rate_resamples_the_continuous_system(kind, rate):
    """Rate 2 on every other sample of a smooth signal gives rate 1's output at the shared times.

    The order-2 terms converge to the continuous system only to first order in dt |A| (Bbar^2 and the
    strict ordering i < j of the unrolled sum), so the check uses a small step and a signal whose
    integral does not cancel (for a zero-mean oscillation the continuous order-2 term is small and the
    O(dt) diagonal correction dominates)."""
    layer = _layer(2, kind, H=2, N=4).double().eval()
    with torch.no_grad():
        layer.log_dt.fill_(-7.0)
    L = 2048
    t = torch.arange(2 * L if rate < 1 else L, dtype=torch.float64) / (2 * L if rate < 1 else L)
    fine = (1 + 0.3 * torch.sin(6.28 * 3 * t) + 0.5 * torch.cos(6.28 * 7 * t))[None, None].expand(1, 2, -1)
    if rate > 1:
        ref, out = bare(layer, fine)[..., ::2], bare(layer, fine[..., ::2], rate=rate)
    else:
        ref, out = bare(layer, fine[..., ::2]), bare(layer, fine, rate=rate)[..., ::2]
    assert rel_err(out, ref) < 0.03


def test_finite_gradients_at_16384():
    layer = _layer(2, "kb", H=2, N=16)
    x = torch.randn(1, 16384, 2, requires_grad=True)
    y, _ = layer(x)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


def test_learns_a_delay_task():
    """A few hundred Adam steps on y_t = u_(t-4) (with the liquid terms on) bring the loss well down."""
    torch.manual_seed(0)
    layer = make_layer("liquid_s4", d_model=8, d_state=16, liquid_degree=2, dt_min=0.05, dt_max=0.5)
    first, last = train_delay(layer, steps=200)
    assert last < 0.3 * first


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_layer("liquid_s4", d_model=4, liquid_degree=0)
    with pytest.raises(ValueError):
        make_layer("liquid_s4", d_model=4, liquid_kernel="xyz")


def test_fused_order_two_gradients():
    from ssmcore.layers.liquid_s4 import _LiquidOrder2

    torch.manual_seed(0)
    for channels in (2, 1):  # one output channel takes its own path (no channel axis in the products)
        shapes = [(2, 3, 10)] * 2 + [(channels, 3, 10)] * 2
        args = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in shapes]
        assert torch.autograd.gradcheck(_LiquidOrder2.apply, tuple(args))
