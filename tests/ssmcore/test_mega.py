"""The Mega block against the paper's equations, unrolled token by token in float64 here."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssmcore import make_layer
from ssmcore.layers.mega import Mega
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_sees_future,
    check_step_matches_forward,
    rel_err,
)
from tests.ssmcore.learning import train_moving_sum


def _laplace(s):
    mu, sigma = math.sqrt(0.5), math.sqrt(1 / (4 * math.pi))
    return 0.5 * (1 + torch.erf((s - mu) / (sigma * math.sqrt(2))))


def _ema(ema, direction, u, rate):
    """Mega's EMA over u (H, L), the decay q^rate and gain alpha beta (1 - q^rate) / (1 - q) at ``rate``."""
    alpha, delta = torch.sigmoid(ema.alpha[direction]), torch.sigmoid(ema.delta[direction])
    q = 1 - alpha * delta
    gain = alpha * ema.beta[direction] * (1 - q**rate) / (1 - q)
    s, ys = torch.zeros_like(q), []
    for t in range(u.shape[-1]):
        s = gain * u[:, t : t + 1] + q**rate * s
        ys.append((ema.eta[direction] * s).sum(-1))
    return torch.stack(ys, -1)


def mega_reference(layer: Mega, x: torch.Tensor, rate: float = 1.0) -> torch.Tensor:
    """Mega (Ma et al. 2022, Sec. 3) for one sequence x (L, H), SiLU activations, token by token."""
    L, H = x.shape
    c = layer.chunk_size or L
    u = x.T  # (H, L)
    ema = _ema(layer.ema, 0, u, rate)
    if layer.bidirectional:  # the anti-causal EMA sees u_{t+1}, u_{t+2}, ...
        shifted = F.pad(u[:, 1:], (0, 1)).flip(-1)
        ema = ema + _ema(layer.ema, 1, shifted, rate).flip(-1)
    xe = F.silu(ema + layer.ema.D[0, :, None] * u).T  # x' (L, H)
    Wm, bm = layer.mix.weight, layer.mix.bias
    z, vd = layer.qk_dim, layer.v_dim
    phi = torch.sigmoid(xe @ Wm[:H].T + bm[:H])
    Z = F.silu(xe @ Wm[H : H + z].T + bm[H : H + z])
    gamma = F.silu(xe @ Wm[H + z : H + z + vd].T + bm[H + z : H + z + vd])
    hx = xe @ Wm[H + z + vd :].T + bm[H + z + vd :]
    Q = layer.qk_scale[0] * Z + layer.qk_offset[0]
    K = layer.qk_scale[1] * Z + layer.qk_offset[1]
    V = F.silu(x @ layer.value.weight.T + layer.value.bias)
    P = layer.max_positions
    out = []
    for t in range(L):
        start = (t // c) * c
        stop = t + 1 if not layer.bidirectional else min(start + c, L)
        js = torch.arange(start, stop)
        bias = layer.rel_bias[(t - js).clamp(-(P - 1), P - 1) + P - 1]
        scores = K[js] @ Q[t]
        if layer.attention == "laplace":
            w = _laplace(scores / len(js) + bias)
        else:
            w = torch.softmax(scores / math.sqrt(z) + bias, dim=0)
        out.append(w @ V[js])
    O = torch.stack(out)  # (L, v)
    h = F.silu(hx + (gamma * O) @ layer.hidden.weight.T)
    return phi * h + (1 - phi) * x


def _layer(**kw) -> Mega:
    torch.manual_seed(0)
    layer = Mega(d_model=6, qk_dim=8, **kw).double()
    with torch.no_grad():  # away from the initial near-zero scores
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("attention", ["laplace", "softmax"])
@pytest.mark.parametrize("chunk_size", [0, 7])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_forward_matches_float64_reference(attention, chunk_size, bidirectional):
    layer = _layer(attention=attention, chunk_size=chunk_size, bidirectional=bidirectional, max_positions=9)
    x = torch.randn(2, 30, 6, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x)
    for b in range(2):
        assert rel_err(y[b], mega_reference(layer, x[b])) < 1e-10


@pytest.mark.parametrize("rate", [2.0, 0.5])
def test_rate_rescales_the_ema(rate):
    layer = _layer(chunk_size=8)
    x = torch.randn(1, 24, 6, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x, rate=rate)
    assert rel_err(y[0], mega_reference(layer, x[0], rate=rate)) < 1e-10


@pytest.mark.parametrize("options", [dict(chunk_size=16), dict(chunk_size=0), dict(chunk_size=16, attention="softmax")])
def test_step_matches_forward_and_chunked_matches_whole(options):
    torch.manual_seed(0)
    layer = Mega(d_model=8, qk_dim=16, **options)
    check_step_matches_forward(layer, L=100, batch=2)
    check_chunked_matches_whole(layer, L=100, chunks=7)  # pieces of 15, not aligned with the chunks


def test_step_cache_holds_only_the_current_chunk():
    layer = Mega(d_model=4, qk_dim=4, chunk_size=5).eval()
    state = layer.default_state(3)
    with torch.no_grad():
        for t in range(12):
            _, state = layer.step(torch.randn(3, 4), state)
            assert state[1].shape == (3, (t + 1) % 5, 4) and state[2].shape == (3, (t + 1) % 5, 8)
    unchunked = Mega(d_model=4, qk_dim=4, chunk_size=0).eval()
    with torch.no_grad():
        _, state = unchunked(torch.randn(3, 12, 4), state=unchunked.default_state(3))
    assert state[1].shape == (3, 12, 4)


def test_causal_and_bidirectional():
    check_causal(Mega(d_model=4, chunk_size=16))
    check_causal(Mega(d_model=4, chunk_size=0, attention="softmax"))
    check_sees_future(Mega(d_model=4, chunk_size=16, bidirectional=True))
    with pytest.raises(RuntimeError, match="causal"):
        Mega(d_model=4, bidirectional=True).step(torch.zeros(1, 4), None)
    with pytest.raises(ValueError, match="unknown attention"):
        Mega(d_model=4, attention="relu")


def test_gradients_finite_at_16384():
    torch.manual_seed(0)
    layer = Mega(d_model=4, qk_dim=8, chunk_size=128)
    y, _ = layer(torch.randn(1, 16384, 4))
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_learns_a_moving_sum():
    first, last = train_moving_sum(make_layer("mega", 8, qk_dim=8, chunk_size=16), steps=150, lr=1e-2)
    assert last < 0.3 * first


def test_make_layer_shapes_and_state():
    layer = make_layer("mega", d_model=6, chunk_size=4)
    y, state = layer(torch.randn(2, 10, 6))
    assert y.shape == (2, 10, 6) and state is None
    ema_state, keys, values = layer.default_state(2)
    assert ema_state.shape == (2, 6, 16) and keys.shape == (2, 0, 64) and values.shape == (2, 0, 12)
    assert Mega.can_step and not Mega.has_recurrence and not hasattr(layer, "D")
