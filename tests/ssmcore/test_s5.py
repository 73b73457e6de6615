import pytest
import torch

from ssmcore.layers.s5 import S5, hippo_n_blocks
from ssmcore.registry import make_layer
from ssmcore.scan import sequential_scan
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_sees_future,
    check_step_matches_forward,
    rel_err,
)


def _reference(layer: S5, x: torch.Tensor, dt: torch.Tensor | None = None, rate: float = 1.0) -> torch.Tensor:
    """The bare SSM output (B, L, C, H) by an explicit float64 loop from the continuous parameters."""
    Lambda = layer.eigenvalues().detach().to(torch.complex128)
    B_tilde = torch.view_as_complex(layer.B).detach().to(torch.complex128)
    C_tilde = torch.view_as_complex(layer.C).detach().to(torch.complex128)[: layer.channels]
    step = torch.exp(layer.log_step.detach().double()) * rate
    if dt is not None:
        step = step * dt.double()[..., None]
    if layer.disc == "zoh":
        a, b_scale = torch.exp(step * Lambda), (torch.exp(step * Lambda) - 1) / Lambda
    else:
        a, b_scale = (1 + step * Lambda / 2) / (1 - step * Lambda / 2), step / (1 - step * Lambda / 2)
    b = b_scale * torch.einsum("mh,blh->blm", B_tilde, x.double().to(torch.complex128))
    xs = sequential_scan(a, b)
    scale = 2.0 if layer.conj_sym else 1.0
    return scale * torch.einsum("chm,blm->blch", C_tilde, xs).real


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("conj_sym", [True, False])
def test_scan_matches_float64_loop(disc, conj_sym):
    torch.manual_seed(0)
    layer = S5(d_model=3, d_state=8, channels=2, blocks=2, disc=disc, conj_sym=conj_sym).double()
    x = torch.randn(2, 77, 3, dtype=torch.float64)
    y, _ = layer._scan(x, None, 1.0, None)
    assert rel_err(y, _reference(layer, x)) < 1e-10
    assert layer.default_state(2).shape == (2, 4 if conj_sym else 8)


def test_irregular_sampling_dt_and_rate():
    torch.manual_seed(0)
    layer = S5(d_model=3, d_state=8).double()
    x = torch.randn(2, 50, 3, dtype=torch.float64)
    dt = torch.rand(2, 50, dtype=torch.float64) * 2 + 0.1
    y, _ = layer._scan(x, None, 1.5, dt)
    assert rel_err(y, _reference(layer, x, dt, rate=1.5)) < 1e-10
    # dt of ones is the regular layer; dt = 2 everywhere is rate = 2
    ones = torch.ones(2, 50, dtype=torch.float64)
    assert rel_err(layer(x, dt=ones)[0], layer(x)[0]) < 1e-12
    assert rel_err(layer(x, dt=2 * ones)[0], layer(x, rate=2.0)[0]) < 1e-12
    # gradients reach the step sizes through the time-varying scan
    layer(x, dt=dt)[0].square().sum().backward()
    assert torch.isfinite(layer.log_step.grad).all() and layer.log_step.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="dt must be"):
        layer(x, dt=dt[:, :10])


def test_hippo_n_blocks_diagonalise_normal_part():
    Lambda, V, V_inv = hippo_n_blocks(8, 2, conj_sym=False)
    assert V.shape == (8, 8) and torch.allclose(V_inv @ V, torch.eye(8, dtype=torch.complex128), atol=1e-12)
    assert torch.allclose(Lambda.real, torch.full((8,), -0.5, dtype=torch.float64))
    Lambda, V, V_inv = hippo_n_blocks(16, 4, conj_sym=True)
    assert Lambda.shape == (8,) and V.shape == (16, 8) and V_inv.shape == (8, 16)
    with pytest.raises(ValueError, match="divisible"):
        hippo_n_blocks(10, 3, conj_sym=True)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_step_matches_forward_long(disc):
    layer = S5(d_model=8, d_state=16, blocks=2, disc=disc)
    check_step_matches_forward(layer, L=4096, batch=1)


def test_chunked_matches_whole_long():
    layer = S5(d_model=8, d_state=32, channels=2, conj_sym=False)
    check_chunked_matches_whole(layer, L=4096, chunks=5)


def test_causal_and_bidirectional():
    check_causal(S5(d_model=4, d_state=8))
    check_sees_future(S5(d_model=4, d_state=8, bidirectional=True))
    torch.manual_seed(0)
    layer = S5(d_model=3, d_state=8, bidirectional=True).double()
    x = torch.randn(1, 30, 3, dtype=torch.float64)
    y, _ = layer._scan(x, None, 1.0, None)
    # the anti-causal half equals the causal SSM with the second C~ run over the reversed input, shifted
    forward_only = S5(d_model=3, d_state=8).double()
    state = {k: v for k, v in layer.state_dict().items() if k != "C"}
    forward_only.load_state_dict(state, strict=False)
    with torch.no_grad():
        forward_only.C.copy_(layer.C[1:])
    rev = forward_only._scan(x.flip(1), None, 1.0, None)[0].flip(1)  # (1, L, 1, 3)
    rev = torch.nn.functional.pad(rev[:, 1:], (0, 0, 0, 0, 0, 1))  # inputs strictly after k
    assert rel_err(y - _reference(layer, x), rev) < 1e-10


def test_make_layer_shapes_gradients_and_cache():
    layer = make_layer("s5", d_model=6, d_state=8, channels=3, bidirectional=True)
    y, state = layer(torch.randn(2, 50, 6))
    assert y.shape == (2, 50, 6) and state is None
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    layer = S5(d_model=4, d_state=8, clip_eigs=True).eval()
    with torch.no_grad():
        layer.Lambda_re.fill_(0.3)
    assert (layer.eigenvalues().real <= -1e-4).all()
    x = torch.randn(1, 4)
    with torch.no_grad():
        y1, _ = layer.step(x, layer.default_state(1))
        layer.log_step.add_(0.5)
        y2, _ = layer.step(x, layer.default_state(1))
    assert not torch.allclose(y1, y2)


def test_bad_input():
    with pytest.raises(ValueError, match=r"expects \(batch, length, 4\)"):
        S5(d_model=4)(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="unknown disc"):
        S5(d_model=4, disc="euler")
