import math

import pytest
import torch

from ssmcore import make_layer
from ssmcore.layers.dss import DSS
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_sees_future,
    check_step_matches_forward,
    diagonal_recurrence,
    rate_pair,
    rel_err,
)


def softmax_kernel_reference(layer: DSS, L: int) -> torch.Tensor:
    """The DSS-softmax kernel from the paper's definition (Gupta et al. 2022, Prop. 1 / Sec. 3.2), in float64,
    read from the raw parameters only (no stabilisation, none of the layer's helpers):

        K = W . Lambda^{-1} . row-softmax(P),   P_{i,k} = k lambda_i dt   (k = 0 .. L-1)

    with one mode of each conjugate pair kept, hence 2 Re(.).  There is no ZOH factor (e^{lambda dt} - 1)
    here: that belongs to DSS-exp."""
    lam = torch.complex(layer.Lambda_real.detach().double(), layer.Lambda_imag.detach().double())  # (H, M)
    dt = torch.exp(layer.log_dt.detach().double())  # (H,)
    W = torch.view_as_complex(layer.W.detach().double())  # (n_kernels, H, M)
    k = torch.arange(L, dtype=torch.float64)
    P = k[None, None, :] * (dt[:, None] * lam)[..., None]  # (H, M, L)
    softmax = torch.exp(P) / torch.exp(P).sum(-1, keepdim=True)  # over positions, per mode
    return 2 * torch.einsum("chm,hml->chl", W / lam, softmax).real


def test_softmax_kernel_has_no_zoh_factor():
    """One decaying mode, worked by hand: K_k = 2 Re(w / lambda * z^k / sum_j z^j) with z = e^{lambda dt}."""
    layer = DSS(d_model=1, d_state=2, version="softmax").double()
    with torch.no_grad():
        layer.Lambda_real.fill_(-0.5)
        layer.Lambda_imag.fill_(2.0)
        layer.log_dt.fill_(math.log(0.1))
        layer.W.copy_(torch.tensor([1.0, 0.0]).view(1, 1, 1, 2))
    L = 7
    lam, dt = complex(-0.5, 2.0), 0.1
    z = torch.exp(torch.tensor(lam * dt, dtype=torch.complex128))
    powers = z ** torch.arange(L, dtype=torch.float64)
    expected = 2 * (powers / powers.sum() / lam).real
    assert rel_err(layer.kernel(L)[0, 0], expected) < 1e-12


def test_exp_kernel_matches_float64_recurrence():
    torch.manual_seed(0)
    layer = DSS(d_model=3, d_state=16, version="exp").double()
    L = 200
    log_dA, dB, C = layer.discrete()
    impulse = torch.zeros(3, L, dtype=torch.float64)
    impulse[:, 0] = 1
    ref = diagonal_recurrence(torch.exp(log_dA), dB, C[0], impulse)
    assert rel_err(layer.kernel(L)[0], ref) < 1e-10


@pytest.mark.parametrize("l_max", [None, 300])
def test_softmax_kernel_matches_definition_with_growing_modes(l_max):
    torch.manual_seed(0)
    layer = DSS(d_model=3, d_state=16, version="softmax", l_max=l_max).double()
    with torch.no_grad():  # half the modes grow (Re lambda > 0), as DSS-softmax allows
        layer.Lambda_real[:, ::2] = 0.3
    L = 200
    full = softmax_kernel_reference(layer, l_max or L)[..., :L]
    assert rel_err(layer.kernel(L), full) < 1e-10


def test_softmax_no_overflow_at_long_length():
    torch.manual_seed(0)
    layer = DSS(d_model=4, d_state=16, version="softmax")
    with torch.no_grad():
        layer.Lambda_real[:, ::2] = 2.0
    k = layer.kernel(65536)
    assert torch.isfinite(k).all()
    y, _ = layer(torch.randn(1, 65536, 4))
    y.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("version", ["exp", "softmax"])
def test_step_and_chunks_match_forward(version):
    torch.manual_seed(0)
    layer = DSS(d_model=6, d_state=16, version=version, l_max=4096)
    if version == "softmax":
        with torch.no_grad():  # mildly growing modes stay representable in float32
            layer.Lambda_real[:, ::3] = 0.05
            layer.log_dt.fill_(-6.0)
    check_step_matches_forward(layer, L=4096, batch=1)
    check_chunked_matches_whole(layer, L=4096, chunks=4)


def test_softmax_step_needs_l_max_and_reports_overflow():
    layer = DSS(d_model=2, d_state=4, version="softmax")
    with pytest.raises(ValueError, match="l_max"):
        layer.step(torch.zeros(1, 2), layer.default_state(1))
    layer = DSS(d_model=2, d_state=4, version="softmax", l_max=100000)
    with torch.no_grad():
        layer.Lambda_real.fill_(5.0)
        layer.log_dt.fill_(0.0)
        with pytest.raises(ValueError, match="double"):
            layer.step(torch.zeros(1, 2), layer.default_state(1))


def test_causal_bidirectional_and_registry():
    check_causal(make_layer("dss", d_model=4, d_state=8))
    check_sees_future(make_layer("dss", d_model=4, d_state=8, version="softmax", bidirectional=True))
    with pytest.raises(ValueError, match="unknown DSS version"):
        DSS(d_model=2, version="relu")


@pytest.mark.parametrize("l_max", [None, 8192])
@pytest.mark.parametrize("rate", [2.0, 0.5])
def test_softmax_rate_resamples_the_same_continuous_system(l_max, rate):
    """As tests/ssmcore/test_rate_continuous.py does for DSS-exp: rate 2 on every other sample of a smooth
    signal (or rate 1/2 on a twice finer one) gives rate 1's outputs at the shared times."""
    torch.manual_seed(0)
    layer = DSS(d_model=4, d_state=16, version="softmax", l_max=l_max).double().eval()
    L = 4096
    t = torch.arange(2 * L if rate < 1 else L, dtype=torch.float64) / (2 * L if rate < 1 else L)
    fine = sum(torch.sin(2 * math.pi * f * t + f) for f in (3, 7, 12, 20)) * torch.exp(-((t - 0.5) / 0.2) ** 2)
    fine = fine.expand(4, -1)[None]  # (1, H, L)
    out, ref = rate_pair(layer, fine, rate)
    assert rel_err(out, ref) < 0.03
