import math

import pytest
import torch

from ssmcore import S4D, make_layer
from ssmcore.init import DIAGONAL_INITS
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_sees_future,
    check_step_matches_forward,
    diagonal_recurrence,
    rel_err,
)


@pytest.mark.parametrize("init", DIAGONAL_INITS)
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_kernel_matches_float64_recurrence(init, disc):
    torch.manual_seed(0)
    layer = S4D(d_model=3, d_state=16, init=init, disc=disc, dt_min=0.01, dt_max=0.1).double()
    L = 300
    k = layer.kernel(L)[0]  # (H, L)
    log_dA, dB, C = layer.discrete()
    impulse = torch.zeros(3, L, dtype=torch.float64)
    impulse[:, 0] = 1
    ref = diagonal_recurrence(torch.exp(log_dA), dB, C[0], impulse)
    assert rel_err(k, ref) < 1e-10


def test_kernel_float32_long_matches_float64():
    torch.manual_seed(0)
    layer = S4D(d_model=4, d_state=64, dt_min=1e-3, dt_max=1e-1)
    k32 = layer.kernel(65536)
    k64 = layer.double().kernel(65536)
    assert torch.isfinite(k32).all()
    assert rel_err(k32.double(), k64) < 1e-4


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_step_matches_forward_long(disc):
    layer = S4D(d_model=8, d_state=16, disc=disc)
    check_step_matches_forward(layer, L=4096, batch=1)


def test_chunked_matches_whole_long():
    layer = S4D(d_model=8, d_state=32, channels=2)
    check_chunked_matches_whole(layer, L=4096, chunks=5)


def test_causal_and_bidirectional():
    check_causal(S4D(d_model=4, d_state=8))
    check_sees_future(S4D(d_model=4, d_state=8, bidirectional=True))
    with pytest.raises(RuntimeError, match="causal"):
        S4D(d_model=4, d_state=8, bidirectional=True).step(torch.zeros(1, 4), None)


def test_rate_matches_continuous_kernel_at_double_step():
    torch.manual_seed(0)
    layer = S4D(d_model=4, d_state=16).double()
    k2 = layer.kernel(128, rate=2.0)
    with torch.no_grad():
        layer.log_dt += math.log(2.0)
    assert rel_err(k2, 2.0 * layer.kernel(128)) < 1e-12  # twice the step, twice the input per step


def test_make_layer_and_shapes():
    layer = make_layer("s4d", d_model=6, d_state=8, channels=3, bidirectional=True)
    y, state = layer(torch.randn(2, 50, 6))
    assert y.shape == (2, 50, 6) and state is None
    assert layer.kernel(50).shape == (6, 6, 50)


def test_step_cache_invalidated_by_parameter_update():
    torch.manual_seed(0)
    layer = S4D(d_model=4, d_state=8).eval()
    x = torch.randn(1, 4)
    with torch.no_grad():
        y1, _ = layer.step(x, layer.default_state(1))
        layer.log_dt.add_(0.5)
        y2, _ = layer.step(x, layer.default_state(1))
        layer.log_dt.sub_(0.5)
        y3, _ = layer.step(x, layer.default_state(1))
    assert not torch.allclose(y1, y2)
    assert torch.allclose(y1, y3)


def test_gradients_finite_at_65536():
    """(Autocast, every layer: tests/ssmcore/test_precision.py.)"""
    torch.manual_seed(0)
    layer = S4D(d_model=4, d_state=16)
    x = torch.randn(1, 65536, 4)
    y, _ = layer(x)
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_bad_input_shape_message():
    with pytest.raises(ValueError, match=r"expects \(batch, length, 4\)"):
        S4D(d_model=4)(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="unknown init"):
        S4D(d_model=4, init="nope")
