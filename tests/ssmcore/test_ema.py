"""Mega's EMA against the paper's recurrence, built here in float64 from the layer's raw parameters."""

import math

import pytest
import torch

from ssmcore import make_layer
from ssmcore.layers.ema import EMA
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_sees_future,
    check_step_matches_forward,
    rel_err,
)
from tests.ssmcore.learning import train_moving_sum


def ema_reference(alpha_logit, delta_logit, beta, eta, u):
    """The paper's EMA, unrolled: s_t = a b u_t + (1 - a d) s_{t-1}, y_t = eta . s_t.

    alpha_logit, delta_logit, beta, eta: (H, N); u: (H, L) -> y (H, L); float64."""
    alpha, delta = torch.sigmoid(alpha_logit), torch.sigmoid(delta_logit)
    s = torch.zeros_like(alpha)
    ys = []
    for t in range(u.shape[-1]):
        s = alpha * beta * u[:, t : t + 1] + (1 - alpha * delta) * s
        ys.append((eta * s).sum(-1))
    return torch.stack(ys, dim=-1)


def _perturbed(layer: EMA) -> EMA:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in (layer.alpha, layer.delta):
            p.add_(torch.randn_like(p))  # a spread of decays, some slow
    return layer


def test_kernel_matches_float64_recurrence():
    torch.manual_seed(0)
    layer = _perturbed(EMA(d_model=3, d_state=8, channels=2).double())
    L = 300
    impulse = torch.zeros(3, L, dtype=torch.float64)
    impulse[:, 0] = 1
    k = layer.kernel(L)
    assert k.shape == (2, 3, L)
    for c in range(2):
        ref = ema_reference(layer.alpha[0], layer.delta[0], layer.beta[0], layer.eta[c], impulse)
        assert rel_err(k[c], ref) < 1e-10


def test_bidirectional_forward_matches_two_recurrences_and_skip():
    """y_t = EMA_fwd(u)_t + EMA_bwd(u_{t+1..})_t + D u_t, the anti-causal EMA with its own parameters."""
    torch.manual_seed(0)
    layer = _perturbed(EMA(d_model=3, d_state=4, bidirectional=True).double())
    u = torch.randn(1, 3, 200, dtype=torch.float64)
    y, _ = layer.ssm_forward(u)
    y = y[0, 0]  # the D skip is folded into the kernel's lag 0
    forward = ema_reference(layer.alpha[0], layer.delta[0], layer.beta[0], layer.eta[0], u[0])
    shifted = torch.nn.functional.pad(u[0, :, 1:], (0, 1)).flip(-1)  # u_{t+1}, reversed
    backward = ema_reference(layer.alpha[1], layer.delta[1], layer.beta[1], layer.eta[1], shifted).flip(-1)
    assert rel_err(y, forward + backward + layer.D[0, :, None] * u[0]) < 1e-10


def test_step_matches_forward_and_chunked_matches_whole():
    layer = _perturbed(EMA(d_model=8, d_state=16))
    check_step_matches_forward(layer, L=2048, batch=2)
    check_chunked_matches_whole(_perturbed(EMA(d_model=8, d_state=16, channels=2)), L=2048, chunks=5)


def test_recurrence_is_the_papers_real_recurrence():
    layer = EMA(d_model=4, d_state=6)
    with torch.no_grad():
        rec = layer.recurrence()
        alpha, delta = torch.sigmoid(layer.alpha[0]), torch.sigmoid(layer.delta[0])
        assert rec.lam.imag.abs().max() == 0 and rec.b.imag.abs().max() == 0
        assert torch.allclose(rec.lam.real, 1 - alpha * delta)
        assert torch.allclose(rec.b.real, alpha * layer.beta[0])
        assert torch.allclose(rec.C.real, layer.eta)


def test_causal_and_bidirectional():
    check_causal(EMA(d_model=4))
    check_sees_future(EMA(d_model=4, bidirectional=True))
    with pytest.raises(RuntimeError, match="causal"):
        EMA(d_model=4, bidirectional=True).step(torch.zeros(1, 4), None)


def test_rate_is_the_zoh_system_on_a_coarser_grid():
    """At rate r the decay is q^r and the gain alpha beta (1 - q^r) / (1 - q): the ZOH discretisation of
    the continuous system whose rate-1 discretisation is the layer's, checked against a float64
    recurrence built from those terms."""
    torch.manual_seed(0)
    layer = _perturbed(EMA(d_model=3, d_state=4).double())
    rate = 2.5
    alpha, delta = torch.sigmoid(layer.alpha[0]), torch.sigmoid(layer.delta[0])
    q = 1 - alpha * delta
    a = -torch.log(q)  # continuous decay per training step
    b_cont = alpha * layer.beta[0] * a / (1 - q)  # input matrix whose ZOH at step 1 is alpha beta
    q_r = torch.exp(-a * rate)
    gain = b_cont * (1 - q_r) / a
    impulse = torch.zeros(3, 100, dtype=torch.float64)
    impulse[:, 0] = 1
    s, ref = torch.zeros_like(q), []
    for t in range(100):
        s = gain * impulse[:, t : t + 1] + q_r * s
        ref.append((layer.eta[0] * s).sum(-1))
    assert rel_err(layer.kernel(100, rate=rate)[0], torch.stack(ref, -1)) < 1e-10


def test_gradients_finite_at_16384():
    torch.manual_seed(0)
    layer = _perturbed(EMA(d_model=4, d_state=16, bidirectional=True))
    y, _ = layer(torch.randn(1, 16384, 4))
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert layer.alpha.grad.abs().sum() > 0 and layer.delta.grad.abs().sum() > 0


def test_learns_a_moving_sum():
    first, last = train_moving_sum(make_layer("ema", 8), steps=150, lr=2e-2)
    assert last < 0.3 * first


def test_make_layer_shapes_and_tagged_parameters():
    layer = make_layer("ema", d_model=6, d_state=8, channels=3, bidirectional=True)
    y, state = layer(torch.randn(2, 50, 6))
    assert y.shape == (2, 50, 6) and state is None
    assert layer.kernel(50).shape == (6, 6, 50)
    assert EMA.can_step and layer.default_state(2).shape == (2, 6, 8)
    from ssmcore.optim import param_groups

    groups = {g["name"]: g for g in param_groups(layer, lr=1e-3, weight_decay=0.1)}
    assert {id(p) for p in groups["ssm"]["params"]} == {id(layer.alpha), id(layer.delta), id(layer.beta)}
    assert math.isclose(EMA(d_model=2).d_state, 16)


def test_initialisations():
    torch.manual_seed(0)
    layer = EMA(d_model=64, d_state=32, init="multiscale")  # forgetting rates alpha delta log-uniform in [1e-3, 0.3]
    rates = torch.sigmoid(layer.alpha) * torch.sigmoid(layer.delta)
    assert 1e-3 * 0.999 <= rates.min() < 2e-3 and 0.2 < rates.max() <= 0.3 * 1.001
    paper = EMA(d_model=64, d_state=32)  # the default, Mega's: both logits ~ N(0, 0.2^2)
    assert abs(paper.alpha.std().item() - 0.2) < 0.02 and abs(paper.alpha.mean().item()) < 0.02
    with pytest.raises(ValueError, match="unknown init"):
        EMA(d_model=4, init="nope")
