import math

import pytest
import torch
import torch.nn.functional as F

from ssmcore import make_layer
from ssmcore.layers.sgconv import SGConv
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_sees_future,
    check_step_matches_forward,
    rel_err,
)


def paper_kernel(weight: torch.Tensor, decay: float) -> torch.Tensor:
    """The unnormalised SGConv kernel from the paper's definition, in float64:
    concat_i alpha^i * Upsample_{2^max(i-1,0)}(w_i) with linear interpolation.  weight (C, H, S, d) -> (C, H, K)."""
    C, H, S, d = weight.shape
    w = weight.detach().double()
    pieces = []
    for i in range(S):
        factor = 2 ** max(i - 1, 0)
        sub = w[:, :, i]  # (C, H, d)
        if factor > 1:
            sub = F.interpolate(sub.reshape(C * H, 1, d), scale_factor=factor, mode="linear", align_corners=False)
            sub = sub.reshape(C, H, d * factor)
        pieces.append(decay**i * sub)
    return torch.cat(pieces, dim=-1)


def direct_convolution(k: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """y_l = sum_{j <= l} k_j u_{l-j}, explicitly: k (H, K), u (H, L) -> (H, L)."""
    H, L = u.shape
    y = torch.zeros(H, L, dtype=torch.float64)
    for lag in range(min(k.shape[-1], L)):
        y[:, lag:] += k[:, lag : lag + 1] * u[:, : L - lag]
    return y


def _layer(**kw) -> SGConv:
    torch.manual_seed(0)
    return SGConv(d_model=3, **{"d_state": 4, "n_scales": 5, **kw})


def test_kernel_is_the_normalised_concatenation_of_decayed_upsampled_subkernels():
    layer = _layer(decay=0.7).double()
    assert layer.span == 4 * 2**4 == 64
    ref = paper_kernel(layer.weight, 0.7)  # (1, 3, 64)
    ref = ref / ref.norm(dim=-1, keepdim=True)  # the paper's normalisation, fixed at initialisation
    tol = 1e-6  # the norm was taken at initialisation, in float32
    assert rel_err(layer.kernel(64), ref) < tol
    k = layer.kernel(100)
    assert rel_err(k[..., :64], ref) < tol and torch.all(k[..., 64:] == 0)  # nothing beyond the span
    assert rel_err(layer.kernel(20), ref[..., :20]) < tol
    # the norm is fixed at initialisation: training moves the kernel's norm
    with torch.no_grad():
        layer.weight.mul_(3.0)
    assert rel_err(layer.kernel(64), 3 * ref) < tol


def test_scales_cover_l_max():
    assert SGConv(d_model=2, d_state=8, l_max=1000).span == 1024
    assert SGConv(d_model=2, d_state=8, l_max=1024).n_scales == 8
    assert SGConv(d_model=2, d_state=8, l_max=5).n_scales == 1
    assert SGConv(d_model=2, d_state=64).span >= 16384


def test_forward_matches_direct_convolution_with_skip():
    layer = _layer(postact="none", activation="identity").double()
    L = 150  # longer than the span (64)
    u = torch.randn(1, L, 3, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(u)
    k = paper_kernel(layer.weight, 0.5)[0]
    k = k / k.norm(dim=-1, keepdim=True)
    ref = direct_convolution(k, u[0].T) + layer.D[0, :, None].detach() * u[0].T
    assert rel_err(y[0].T, ref) < 1e-6  # the norm was taken at initialisation, in float32


@pytest.mark.parametrize("rate", [1.0, 2.0, 0.5])
def test_step_is_an_exact_fir_over_the_ring_buffer(rate):
    layer = _layer(channels=2)
    L = 160  # wraps the ring buffer (64 taps at rate 1, 32 at rate 2, 128 at rate 1/2) more than once
    torch.manual_seed(1)
    x = torch.randn(2, L, 3)
    with torch.no_grad():
        y, _ = layer(x, rate=rate)
        state = layer.default_state(2, rate=rate)
        ys = []
        for t in range(L):
            y_t, next_state = layer.step(x[:, t], state, rate=rate)
            assert next_state[0] is not state[0]  # the caller's state is not modified
            state = next_state
            ys.append(y_t)
    assert rel_err(torch.stack(ys, 1), y) < 1e-5


def test_step_and_chunks_match_forward():
    layer = _layer()
    check_step_matches_forward(layer, L=200)
    check_chunked_matches_whole(layer, L=200, chunks=5)
    big = make_layer("sgconv", d_model=4, d_state=16, l_max=1024)
    check_chunked_matches_whole(big, L=3000, chunks=7)


def test_chunks_and_steps_mix():
    layer = _layer().eval()
    x = torch.randn(2, 90, 3)
    with torch.no_grad():
        y, _ = layer(x)
        y1, state = layer(x[:, :37], state=layer.default_state(2))
        steps = []
        for t in range(37, 50):
            y_t, state = layer.step(x[:, t], state)
            steps.append(y_t)
        y3, _ = layer(x[:, 50:], state=state)
    assert rel_err(torch.cat([y1, torch.stack(steps, 1), y3], 1), y) < 1e-5


def test_state_too_short_for_the_rate_is_refused():
    layer = _layer()
    with pytest.raises(ValueError, match="rate=0.5"):
        layer.step(torch.zeros(1, 3), layer.default_state(1), rate=0.5)
    layer.step(torch.zeros(1, 3), layer.default_state(1), rate=2.0)  # a longer buffer serves a shorter kernel


def test_causal_and_bidirectional():
    check_causal(make_layer("sgconv", d_model=4, d_state=4, n_scales=4))
    layer = make_layer("sgconv", d_model=4, d_state=4, n_scales=4, bidirectional=True)
    check_sees_future(layer)
    with pytest.raises(RuntimeError, match="bidirectional"):
        layer.step(torch.zeros(1, 4), layer.default_state(1))
    assert SGConv.can_step and not SGConv.has_recurrence  # no Recurrence: step() is the FIR


def test_rate_resamples_the_continuous_kernel():
    layer = _layer().double()
    with torch.no_grad():
        # on the integer grid the continuous kernel is the rate-1 kernel: rate 2 reads every other lag, x2
        assert rel_err(layer.kernel(32, 2.0), 2 * layer.kernel(64)[..., ::2]) < 1e-12
        assert layer.taps(2.0) == 32 and layer.taps(0.5) == 128
    # on a smooth signal, rate 2 on every other sample (and rate 1/2 on a twice finer one) gives rate 1's output
    big = make_layer("sgconv", d_model=2, d_state=32, l_max=2048).double().eval()
    with torch.no_grad():  # a kernel smooth on the coarse grid (random taps are not: no grid resolves them)
        flat = torch.zeros(big.n_scales * big.d_state, dtype=torch.float64)
        for i in range(big.n_scales):  # tap j of sub-kernel i sits at lag start_i + f_i (j + 1/2) - 1/2
            f, start = 2 ** max(i - 1, 0), (0 if i == 0 else big.d_state * 2 ** (i - 1))
            centres = start + f * (torch.arange(big.d_state) + 0.5) - 0.5
            flat[i * big.d_state : (i + 1) * big.d_state] = torch.cos(centres / 150) * torch.exp(-centres / 1000)
        big.weight.copy_(flat.view(1, 1, big.n_scales, big.d_state).expand_as(big.weight) / 0.5 ** torch.arange(
            big.n_scales, dtype=torch.float64)[:, None])  # undo the decay: one smooth curve
    L = 4096
    t = torch.arange(2 * L, dtype=torch.float64) / (2 * L)
    fine = sum(torch.sin(2 * math.pi * f * t + f) for f in (3, 7, 12)) * torch.exp(-((t - 0.5) / 0.2) ** 2)
    fine = fine.expand(2, -1)[None]  # (1, H, 2L)
    with torch.no_grad():
        ref = big.ssm_forward(fine)[0][..., ::2]
        out = big.ssm_forward(fine[..., ::2], rate=2.0)[0]
        assert rel_err(out, ref) < 0.03
        ref = big.ssm_forward(fine[..., ::2])[0]
        out = big.ssm_forward(fine, rate=0.5)[0][..., ::2]
        assert rel_err(out, ref) < 0.03


def test_finite_gradients_at_long_length():
    layer = make_layer("sgconv", d_model=2, d_state=64, l_max=16384)
    x = torch.randn(1, 16384, 2)
    y, _ = layer(x)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_learns_a_delay_task():
    """An SGConv layer learns y_t = x_{t-12} (a lag inside the second sub-kernel's range)."""
    torch.manual_seed(0)
    layer = make_layer("sgconv", d_model=8, d_state=8, l_max=64, postact="linear", activation="identity")
    readin, readout = torch.nn.Linear(1, 8), torch.nn.Linear(8, 1)
    params = [*layer.parameters(), *readin.parameters(), *readout.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(300):
        x = torch.randn(16, 64, 1)
        target = torch.nn.functional.pad(x, (0, 0, 12, 0))[:, :64]
        y = readout(layer(readin(x))[0])
        loss = (y - target)[:, 12:].square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()
