import math

import pytest
import torch

from ssmcore import make_layer
from ssmcore.fftconv import two_sided
from ssmcore.layers.s4d import S4D
from ssmcore.layers.s4nd import S4ND
from ssmcore.optim import ssm_parameters
from tests.ssmcore.helpers import diagonal_recurrence, rel_err


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small FFTs and einsums: intra-op threads only contend on shared CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lags(size: int, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel index and validity of lag ``i - j`` for every (output i, input j) pair on one axis."""
    lag = torch.arange(size)[:, None] - torch.arange(size)[None, :]  # (S, S)
    if kernel_size == 2 * size:  # two-sided: lag -m sits at index 2S - m
        return lag % kernel_size, torch.ones_like(lag, dtype=torch.bool)
    return lag.clamp_min(0), lag >= 0


def direct_conv2d(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Explicit sum ``y[b, c, h, i, j] = sum_{p, q} K[c, h, lag(i - p), lag(j - q)] u[b, h, p, q]``."""
    (S1, S2), (K1, K2) = u.shape[2:], K.shape[2:]
    idx1, ok1 = _lags(S1, K1)
    idx2, ok2 = _lags(S2, K2)
    T = K[:, :, idx1][:, :, :, :, idx2]  # (C, H, S1, S1, S2, S2): [i, p, j, q]
    T = T * (ok1[:, :, None, None] & ok2[None, None]).to(T.dtype)
    return torch.einsum("chipjq,bhpq->bchij", T, u)


@pytest.mark.parametrize("bidirectional", [False, True, (True, False)])
def test_2d_output_equals_direct_convolution(bidirectional):
    torch.manual_seed(0)
    layer = S4ND(d_model=3, d_state=8, dim=2, channels=2, bidirectional=bidirectional).double()
    u = torch.randn(2, 3, 7, 5, dtype=torch.float64)  # (B, H, S1, S2)
    K = layer.kernel((7, 5))
    flags = (bidirectional,) * 2 if isinstance(bidirectional, bool) else bidirectional
    assert K.shape == (2, 3, 14 if flags[0] else 7, 10 if flags[1] else 5)
    y, _ = layer.ssm_forward(u)
    assert rel_err(y, direct_conv2d(u, K)) < 1e-12
    # the layer output is that SSM output + D skip, then activation and output projection
    x = u.permute(0, 2, 3, 1)  # (B, S1, S2, H)
    z = y + layer.D[:, :, None, None] * u.unsqueeze(1)
    ref = layer.output(layer.activation(z.permute(0, 3, 4, 1, 2).reshape(2, 7, 5, 6)))
    assert rel_err(layer(x)[0], ref) < 1e-12


def test_axis_kernels_are_s4d_kernels_and_combine_as_outer_product():
    torch.manual_seed(0)
    layer = S4ND(d_model=3, d_state=16, dim=2, channels=2, bidirectional=(False, True)).double()
    shape = (40, 30)
    k0, k1 = layer.axis_kernels(shape)
    assert rel_err(layer.kernel(shape), torch.einsum("chi,chj->chij", k0, k1)) < 1e-14
    for axis, k in enumerate((k0, k1)):
        s4d = S4D(d_model=3, d_state=16, channels=2, bidirectional=layer.bidirectional[axis]).double()
        _copy_axis_into_s4d(layer, axis, s4d)
        k1d = s4d.kernel(shape[axis])
        if layer.bidirectional[axis]:
            k1d = two_sided(k1d[:2], k1d[2:])
        assert rel_err(k, k1d) < 1e-14
    # and the causal axis kernel is the impulse response of the diagonal recurrence
    log_dA, dB, C = layer.discrete(0)
    impulse = torch.zeros(3, 40, dtype=torch.float64)
    impulse[:, 0] = 1
    assert rel_err(k0[1], diagonal_recurrence(torch.exp(log_dA), dB, C[1], impulse)) < 1e-10


def _copy_axis_into_s4d(layer: S4ND, axis: int, s4d: S4D) -> None:
    """Give ``s4d`` the SSM of one S4ND axis and the S4ND's D skip and output projection."""
    with torch.no_grad():
        for name in ("log_dt", "A_real", "A_imag", "B"):
            getattr(s4d, name).copy_(getattr(layer, name)[axis])
        s4d.C.copy_(layer.C[axis])
        s4d.D.copy_(layer.D)
        s4d.output.load_state_dict(layer.output.state_dict())


def test_dim1_layer_equals_s4d():
    torch.manual_seed(0)
    for bidirectional in (False, True):
        layer = S4ND(d_model=4, d_state=8, dim=1, channels=2, bidirectional=bidirectional).double()
        s4d = S4D(d_model=4, d_state=8, channels=2, bidirectional=bidirectional).double()
        _copy_axis_into_s4d(layer, 0, s4d)
        x = torch.randn(2, 50, 4, dtype=torch.float64)
        assert rel_err(layer(x)[0], s4d(x)[0]) < 1e-12
        assert rel_err(layer(x, rate=0.5)[0], s4d(x, rate=0.5)[0]) < 1e-12


def test_3d_shapes_and_mixed_directions():
    torch.manual_seed(0)
    layer = S4ND(d_model=4, d_state=8, dim=3, channels=3, bidirectional=(True, False, True)).double()
    x = torch.randn(2, 4, 5, 6, 4, dtype=torch.float64)
    y, state = layer(x)
    assert y.shape == x.shape and state is None
    assert layer.kernel((4, 5, 6)).shape == (3, 4, 8, 5, 12)
    # causal along axis 1 only: a change at index 3 of axis 1 leaves indices < 3 untouched
    x2 = x.clone()
    x2[:, :, 3:] += 1
    with torch.no_grad():
        y2, _ = layer(x2)
    assert rel_err(y2[:, :, :3], y[:, :, :3]) < 1e-12
    assert rel_err(y2[:, :, 3:], y[:, :, 3:]) > 1e-3
    x3 = x.clone()
    x3[:, 2:] += 1
    with torch.no_grad():
        y3, _ = layer(x3)
    assert rel_err(y3[:, :2], y[:, :2]) > 1e-3  # axis 0 is bidirectional: it sees the future
    assert make_layer("s4nd", d_model=4, d_state=8, dim=3).kernel((2, 3, 4)).shape == (1, 4, 4, 6, 8)


def test_rate_per_axis_scales_the_step():
    torch.manual_seed(0)
    layer = S4ND(d_model=3, d_state=16, dim=2).double()
    k = layer.kernel((20, 24), rate=(2.0, 0.25))
    assert rel_err(k, layer.kernel((20, 24))) > 1e-3
    with torch.no_grad():
        layer.log_dt[0] += math.log(2.0)
        layer.log_dt[1] += math.log(0.25)
    assert rel_err(k, 0.5 * layer.kernel((20, 24))) < 1e-12  # and the input gain 2 x 0.25 of the axes
    with pytest.raises(ValueError, match="one value per axis"):
        layer.kernel((20, 24), rate=(1.0, 1.0, 1.0))


def test_bandlimit_masks_modes_above_half_the_bandlimit():
    kw = dict(d_model=3, d_state=32, dim=2, dt_min=0.05, dt_max=0.2)
    torch.manual_seed(0)
    limited = S4ND(**kw, bandlimit=0.5).double()
    torch.manual_seed(0)
    nyquist = S4ND(**kw, bandlimit=1.0).double()
    torch.manual_seed(0)
    full = S4ND(**kw).double()
    for axis in range(2):
        A = torch.complex(-torch.exp(full.A_real[axis]), full.A_imag[axis])
        dtA = torch.exp(full.log_dt[axis])[:, None] * A  # (H, M)
        freq = dtA.imag.abs() / (2 * math.pi)  # cycles per sample
        mask = limited.mode_mask(axis)
        assert torch.equal(mask, freq <= 0.25)
        assert 0 < mask.sum() < mask.numel()
        assert torch.equal(nyquist.mode_mask(axis), freq <= 0.5)
        assert nyquist.mode_mask(axis).sum() > mask.sum()
        assert torch.equal(limited.mode_mask(axis, rate=2.0), 2 * freq <= 0.25)
        assert mask.sum() > limited.mode_mask(axis, rate=2.0).sum()  # a coarser grid masks more modes
        with torch.no_grad():  # masking = zeroing C of those modes (the init scales C of the kept modes)
            full.C[axis].copy_(limited.C[axis] * mask[None, :, :, None].double())
    assert rel_err(limited.kernel((16, 16)), full.kernel((16, 16))) < 1e-14
    assert rel_err(limited.kernel((16, 16)), nyquist.kernel((16, 16))) > 1e-3
    with pytest.raises(ValueError, match="bandlimit"):
        S4ND(d_model=3, bandlimit=1.5)


def test_ssm_parameters_are_tagged():
    layer = S4ND(d_model=4, d_state=8, dim=3)
    tagged = {id(p) for p in ssm_parameters(layer)}
    assert tagged == {id(getattr(layer, n)) for n in ("log_dt", "A_real", "A_imag", "B")}
    assert layer.log_dt.shape == (3, 4) and layer.A_real.shape == (3, 4, 4)


def test_errors_are_clear():
    layer = S4ND(d_model=4, d_state=8, dim=2)
    with pytest.raises(ValueError, match=r"expects \(batch, size_1, size_2, 4\) channels last"):
        layer(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"expects \(batch, size_1, size_2, 4\)"):
        layer(torch.randn(2, 5, 5, 3))
    with pytest.raises(ValueError, match="state passing"):
        layer(torch.randn(2, 5, 5, 4), state=torch.zeros(1))
    with pytest.raises(RuntimeError, match="no recurrent step"):
        layer.step(torch.randn(2, 4), None)
    with pytest.raises(RuntimeError, match="no recurrent state"):
        layer.default_state(2)
    with pytest.raises(ValueError, match="one flag per axis"):
        S4ND(d_model=4, dim=2, bidirectional=(True, False, True))
    with pytest.raises(ValueError, match="dim 1, 2 or 3"):
        S4ND(d_model=4, dim=4)


def test_trained_at_14_runs_at_28_with_half_rate():
    torch.manual_seed(0)
    layer = S4ND(d_model=4, d_state=16, dim=2, bidirectional=False).double()
    y14, _ = layer(torch.randn(2, 14, 14, 4, dtype=torch.float64))
    y28, _ = layer(torch.randn(2, 28, 28, 4, dtype=torch.float64), rate=(0.5, 0.5))
    assert y14.shape == (2, 14, 14, 4) and y28.shape == (2, 28, 28, 4)
    assert torch.isfinite(y28).all()
    # at half the step the 28x28 kernel samples the same continuous kernel twice as densely: its even
    # lags are the 14x14 kernel, up to the input gain dB of the smaller step (ZOH: rate expm1(dtA) / dtA)
    k14, k28 = layer.kernel((14, 14)), layer.kernel((28, 28), rate=0.5)
    with torch.no_grad():
        for axis in range(2):
            dtA = torch.exp(layer.log_dt[axis])[:, None] * torch.complex(
                -torch.exp(layer.A_real[axis]), layer.A_imag[axis]
            )
            gain = 0.5 * (torch.expm1(dtA / 2) / (dtA / 2)) / (torch.expm1(dtA) / dtA)  # (H, M)
            layer.B[axis].copy_(torch.view_as_real(torch.view_as_complex(layer.B[axis]) * gain))
    assert rel_err(k28[:, :, ::2, ::2], layer.kernel((14, 14))) < 1e-12
    assert rel_err(k28[:, :, ::2, ::2], k14) > 1e-3


def test_finer_grid_keeps_the_modes_of_rate_1():
    """Modes masked in training (rate 1) must not come back on a finer grid (rate < 1)."""
    torch.manual_seed(0)
    layer = S4ND(d_model=3, d_state=32, dim=2, dt_min=0.05, dt_max=0.2, bandlimit=0.5)
    for axis in range(2):
        assert torch.equal(layer.mode_mask(axis, rate=0.5), layer.mode_mask(axis))
        assert torch.equal(layer.mode_mask(axis, rate=0.25), layer.mode_mask(axis))


@pytest.mark.parametrize(("d_state", "dim", "bidirectional"), [(64, 2, True), (16, 2, False), (64, 3, True)])
def test_init_gives_unit_axis_kernels_and_order_one_outputs(d_state, dim, bidirectional):
    """The C init is scaled: each axis kernel has unit norm over 32 taps, the outputs have std of order 1
    (the unscaled complex-normal C gave std ~1e4 on a 16x16 image at d_state=64)."""
    torch.manual_seed(0)
    layer = S4ND(d_model=8, d_state=d_state, dim=dim, channels=2, bidirectional=bidirectional)
    for k in layer.axis_kernels((32,) * dim):
        assert torch.allclose(k.norm(dim=-1), torch.ones(2, 8), rtol=1e-4)
    side = 16 if dim == 2 else 8
    u = torch.randn(2, 8, *(side,) * dim)
    with torch.no_grad():
        std = layer.ssm_forward(u)[0].std().item()
    assert 0.02 < std < 3.0


@pytest.mark.parametrize("bidirectional", [False, True])
def test_align_rate_moves_the_kernel_by_the_missing_half_steps(bidirectional):
    """align_rate leaves rate 1 alone; at rate r it multiplies each mode's forward C by exp(dt A (1 - r) / 2)
    (dt of rate 1) and the backward C by its inverse; off, rate only rescales the step."""
    torch.manual_seed(0)
    plain = S4ND(d_model=3, d_state=8, dim=2, bidirectional=bidirectional).double()
    torch.manual_seed(0)
    aligned = S4ND(d_model=3, d_state=8, dim=2, bidirectional=bidirectional, align_rate=True).double()
    assert rel_err(aligned.kernel((6, 6)), plain.kernel((6, 6))) < 1e-15
    r = 0.5
    k_aligned = aligned.kernel((12, 10), rate=r)
    assert rel_err(k_aligned, plain.kernel((12, 10), rate=r)) > 1e-3
    with torch.no_grad():
        for axis in range(2):
            dtA = torch.exp(plain.log_dt[axis])[:, None] * torch.complex(-torch.exp(plain.A_real[axis]),
                                                                        plain.A_imag[axis])
            shift = torch.exp(dtA * (1 - r) / 2)  # (H, M)
            C = torch.view_as_complex(plain.C[axis])
            C = torch.cat([C[:1] * shift, C[1:] / shift]) if bidirectional else C * shift
            plain.C[axis].copy_(torch.view_as_real(C))
    assert rel_err(k_aligned, plain.kernel((12, 10), rate=r)) < 1e-12
