import math

import pytest
import torch

from ssmcore import make_layer, param_groups
from ssmcore.hippo import MEASURES
from ssmcore.kernels import cauchy_conj_bilinear
from ssmcore.layers.s4 import S4
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_sees_future,
    check_step_matches_forward,
    rel_err,
)


def perturb(layer: S4, scale: float = 0.1, seed: int = 0) -> S4:
    """Move every SSM parameter away from its (shared-over-H) init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in S4.ssm_parameter_names:
            p = getattr(layer, name)
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def dense_reference(layer: S4, rate: float = 1.0):
    """Float64 dense ``(A, Abar, Bbar, C)`` of the full conjugate-symmetric system, built here from the parameters."""
    lam = torch.complex(-torch.exp(layer.Lambda_real.double()), layer.Lambda_imag.double())  # exp transform
    P = torch.view_as_complex(layer.P.double())
    B = torch.view_as_complex(layer.B.double())
    C_tilde = torch.view_as_complex(layer.C.double())
    full = lambda x: torch.cat([x, x.conj()], -1)  # noqa: E731
    Pf = full(P)  # (r, H, N)
    A = torch.diag_embed(full(lam)) - torch.einsum("rhi,rhj->hij", Pf.conj(), Pf)
    N = A.shape[-1]
    eye = torch.eye(N, dtype=A.dtype)
    dt = (torch.exp(layer.log_dt.double()) * rate)[:, None, None]
    Abar = torch.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A)
    Bbar = torch.linalg.solve(eye - dt / 2 * A, dt[..., 0] * full(B))
    # C from C~ = C (I - Abar^L0), with Abar at rate 1 and L0 by repeated multiplication
    _, Abar1, _ = (None, Abar, None) if rate == 1.0 else dense_reference(layer)[:3]
    power = eye.expand_as(A).clone()
    for _ in range(int(layer.l_ref)):
        power = Abar1 @ power
    C = torch.linalg.solve((eye - power).transpose(-1, -2), full(C_tilde).permute(1, 2, 0)).permute(2, 0, 1)
    return A, Abar, Bbar, C


def recurrence_kernel(Abar: torch.Tensor, Bbar: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """x_k = Abar x_{k-1} + Bbar u_k, y_k = Re(C x_k) on a unit impulse: (c, H, L)."""
    x = Bbar.clone()
    ys = []
    for _ in range(L):
        ys.append(torch.einsum("chn,hn->ch", C, x).real)
        x = torch.einsum("hnm,hm->hn", Abar, x)
    return torch.stack(ys, -1)


@pytest.mark.parametrize("measure", MEASURES)
def test_kernel_matches_float64_recurrence(measure):
    torch.manual_seed(0)
    layer = perturb(S4(d_model=3, d_state=16, channels=2, measure=measure, dt_min=0.01, dt_max=0.1, l_max=200))
    layer = layer.double()
    k = layer.kernel(200)  # (2, 3, 200)
    _, Abar, Bbar, C = dense_reference(layer)
    assert rel_err(k, recurrence_kernel(Abar, Bbar, C, 200)) < 1e-10


@pytest.mark.parametrize("L", [37, 120, 311])
def test_kernel_at_other_length_is_exact(L):
    """C~ refers to L0 = 120: shorter (truncated) and longer (converted) kernels stay exact."""
    layer = perturb(S4(d_model=2, d_state=12, measure="legt", dt_min=0.01, dt_max=0.1, l_max=120)).double()
    _, Abar, Bbar, C = dense_reference(layer)
    assert rel_err(layer.kernel(L), recurrence_kernel(Abar, Bbar, C, L)) < 1e-10
    assert int(layer.l_ref) == 120


@pytest.mark.parametrize("measure", ["legs", "fout"])
def test_rate_two_is_the_recurrence_at_double_step(measure):
    layer = perturb(S4(d_model=2, d_state=12, measure=measure, dt_min=0.01, dt_max=0.05, l_max=100)).double()
    _, Abar2, Bbar2, C = dense_reference(layer, rate=2.0)
    for L in (100, 160):
        assert rel_err(layer.kernel(L, rate=2.0), recurrence_kernel(Abar2, Bbar2, C, L)) < 1e-10
    # and rate=2 equals doubling dt with C (not C~) held fixed
    k2 = layer.kernel(100, rate=2.0)
    C_true = layer.true_C()
    with torch.no_grad():
        layer.log_dt += math.log(2.0)
        _, Abar, _ = layer.dense_system()
        eye = torch.eye(Abar.shape[-1], dtype=Abar.dtype)
        C_tilde = torch.einsum("chn,hnm->chm", C_true, eye - torch.linalg.matrix_power(Abar, 100))
        layer.C.copy_(torch.view_as_real(C_tilde[..., :6]))
    assert rel_err(k2, layer.kernel(100)) < 1e-10


def test_reference_length_set_by_first_forward_and_saved():
    layer = S4(d_model=2, d_state=8)
    assert int(layer.l_ref) == 0
    layer(torch.randn(1, 50, 2))
    assert int(layer.l_ref) == 50
    other = S4(d_model=2, d_state=8)
    other.load_state_dict(layer.state_dict())
    assert int(other.l_ref) == 50
    assert int(S4(d_model=2, d_state=8, l_max=4096).l_ref) == 4096


def test_float32_kernel_long_matches_float64():
    torch.manual_seed(0)
    layer = perturb(S4(d_model=4, d_state=64), scale=0.02)
    k32 = layer.kernel(16384)
    k64 = layer.double().kernel(16384)
    assert torch.isfinite(k32).all()
    assert rel_err(k32.double(), k64) < 1e-4


@pytest.mark.parametrize("measure", ["legs", "legt"])
def test_step_matches_forward_long(measure):
    check_step_matches_forward(perturb(S4(d_model=6, d_state=16, measure=measure), scale=0.02), L=4096, batch=1)


@pytest.mark.parametrize("measure", ["legs", "fout"])
def test_chunked_matches_whole_long(measure):
    layer = perturb(S4(d_model=6, d_state=16, channels=2, measure=measure), scale=0.02)
    check_chunked_matches_whole(layer, L=4096, chunks=5)


def test_chunked_longer_than_reference_and_at_rate():
    """Chunks longer than L0 convert C~; state passing at rate 2 matches the whole sequence at rate 2."""
    torch.manual_seed(0)
    layer = perturb(S4(d_model=4, d_state=16, measure="legt", l_max=64), scale=0.02).eval()
    x = torch.randn(2, 300, 4)
    with torch.no_grad():
        for rate in (1.0, 2.0):
            whole, _ = layer(x, rate=rate)
            state, pieces = layer.default_state(2), []
            for part in x.split([130, 70, 100], dim=1):
                y, state = layer(part, state=state, rate=rate)
                pieces.append(y)
            assert rel_err(torch.cat(pieces, 1), whole) < 1e-4


def test_causal_and_bidirectional():
    check_causal(S4(d_model=4, d_state=8))
    layer = S4(d_model=4, d_state=8, bidirectional=True, channels=2)
    check_sees_future(layer)
    assert layer.kernel(30).shape == (4, 4, 30)
    assert layer.C.shape[0] == 4  # the anti-causal kernels have their own C~
    with pytest.raises(RuntimeError, match="causal"):
        layer.step(torch.zeros(1, 4), None)


@pytest.mark.parametrize("measure", MEASURES)
def test_A_is_hurwitz_after_random_perturbation(measure):
    layer = perturb(S4(d_model=8, d_state=16, measure=measure), scale=1.0, seed=3).double()
    A, Abar, _ = layer.dense_system()
    assert torch.linalg.eigvals(A).real.max() < 0
    assert torch.linalg.eigvalsh(A + A.mH).max() < 0  # dissipative: A + A^* < 0
    assert torch.linalg.matrix_norm(Abar, ord=2).max() <= 1 + 1e-12  # the bilinear Abar is a contraction


def test_gradients_finite_at_65536():
    torch.manual_seed(0)
    layer = S4(d_model=2, d_state=16)
    y, _ = layer(torch.randn(1, 65536, 2))
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_cauchy_conj_bilinear_matches_direct_sum_and_gradcheck():
    torch.manual_seed(0)
    T, H, M = 3, 2, 5
    v = torch.randn(T, H, M, dtype=torch.complex128)
    lam = torch.complex(-torch.rand(H, M, dtype=torch.float64) - 0.1, 5 * torch.randn(H, M, dtype=torch.float64))
    dt = torch.rand(H, dtype=torch.float64) * 0.5 + 0.01
    for L in (12, 13):
        omega = torch.exp(-2j * math.pi * torch.arange(L // 2 + 1, dtype=torch.float64) / L)
        a, b = (1 - omega)[:, None], dt[:, None, None] * ((1 + omega) / 2)[:, None]  # (K, 1), (H, K, 1)
        ref = (v[:, :, None] / (a - b * lam[:, None]) + v.conj()[:, :, None] / (a - b * lam.conj()[:, None])).sum(-1)
        assert rel_err(cauchy_conj_bilinear(v, lam, dt, L, chunk=3), ref) < 1e-13

    def f(v_ri, lam_ri, dt):
        out = cauchy_conj_bilinear(torch.view_as_complex(v_ri), torch.view_as_complex(lam_ri), dt, 10, chunk=2)
        return torch.view_as_real(out)

    inputs = (torch.view_as_real(v), torch.view_as_real(lam), dt)
    assert torch.autograd.gradcheck(f, tuple(t.clone().requires_grad_() for t in inputs))


def test_step_cache_invalidated_by_parameter_update():
    torch.manual_seed(0)
    layer = S4(d_model=4, d_state=8).eval()
    x = torch.randn(1, 4)
    with torch.no_grad():
        y1, _ = layer.step(x, layer.default_state(1))
        layer.C.mul_(2.0)
        y2, _ = layer.step(x, layer.default_state(1))
        layer.C.div_(2.0)
        y3, _ = layer.step(x, layer.default_state(1))
    assert not torch.allclose(y1, y2)
    assert torch.allclose(y1, y3)
    assert int(layer.l_ref) == 1024  # a step before any forward fixes the reference length


def test_make_layer_shapes_and_tags():
    layer = make_layer("s4", d_model=6, d_state=8, channels=3, bidirectional=True)
    y, state = layer(torch.randn(2, 50, 6))
    assert y.shape == (2, 50, 6) and state is None
    causal = make_layer("s4", d_model=6, d_state=8)
    assert causal.default_state(3).shape == (3, 6, 4)
    groups = {g["name"]: g["params"] for g in param_groups(causal, lr=1e-3, ssm_lr=1e-4)}
    ssm_ids = {id(p) for p in groups["ssm"]}
    assert {id(getattr(causal, n)) for n in S4.ssm_parameter_names} == ssm_ids
    assert id(causal.C) not in ssm_ids


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        S4(d_model=4, d_state=7)
    with pytest.raises(ValueError, match="rank-2"):
        S4(d_model=4, measure="legt", rank=1)
    assert S4(d_model=4, d_state=8, measure="legt").P.shape[0] == 2
    with pytest.raises(ValueError, match="unknown measure"):
        S4(d_model=4, measure="nope")
    with pytest.raises(ValueError, match=r"expects \(batch, length, 4\)"):
        S4(d_model=4)(torch.randn(2, 5, 3))
