"""Irregular sampling end to end: per-step time steps ``dt`` through SequenceModel to the layers that take them."""

from __future__ import annotations

import pytest
import torch

from ssmcore.blocks import SequenceModel, time_steps
from ssmcore.layers.s5 import S5
from ssmcore.registry import dt_layer_names
from tests.ssmcore.helpers import rel_err


def test_dt_layers_are_s5_and_s5_ptd():
    assert dt_layer_names() == ["s5", "s5_ptd"]


def test_bidirectional_s5_with_dt_matches_float64_loop():
    """The anti-causal part at step k sees u_j, j > k, decayed over the gaps between k + 1 and j."""
    torch.manual_seed(0)
    layer = S5(d_model=2, d_state=4, bidirectional=True).double()
    B_, L = 2, 23
    x = torch.randn(B_, L, 2, dtype=torch.float64)
    dt = torch.rand(B_, L, dtype=torch.float64) * 2 + 0.1
    y, _ = layer._scan(x, None, 1.0, dt)  # (B, L, 2 channels... C=1 -> (B, L, 1, H))
    Lam = layer.eigenvalues().detach().to(torch.complex128)
    Bt = torch.view_as_complex(layer.B).detach().to(torch.complex128)  # (M, H)
    Ct = torch.view_as_complex(layer.C).detach().to(torch.complex128)  # (2, H, M)
    step = torch.exp(layer.log_step.detach().double())[None, None] * dt[..., None]  # (B, L, M)
    a = torch.exp(step * Lam)
    b = (a - 1) / Lam * torch.einsum("mh,blh->blm", Bt, x.to(torch.complex128))
    ref = torch.zeros(B_, L, 2, dtype=torch.float64)
    for n in range(B_):
        for k in range(L):
            fwd = torch.zeros(Lam.shape, dtype=torch.complex128)
            for j in range(k + 1):  # causal: u_j decayed over the gaps after j up to k
                fwd += torch.prod(a[n, j + 1 : k + 1], dim=0) * b[n, j]
            bwd = torch.zeros_like(fwd)
            for j in range(k + 1, L):  # anti-causal: gaps between k + 1 and j
                bwd += torch.prod(a[n, k + 2 : j + 1], dim=0) * b[n, j]
            ref[n, k] = 2 * ((Ct[0] @ fwd).real + (Ct[1] @ bwd).real)
    assert rel_err(y[:, :, 0], ref) < 1e-10
    ones = torch.ones(B_, L, dtype=torch.float64)
    assert rel_err(layer(x, dt=ones)[0], layer(x)[0]) < 1e-12


def test_sequence_model_passes_dt_to_every_layer():
    torch.manual_seed(0)
    model = SequenceModel(d_model=8, n_layers=2, layer={"name": "s5", "d_state": 8}, d_input=3, d_output=2,
                          ff_expand=2, norm="none").double()
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    dt = torch.rand(2, 30, dtype=torch.float64) * 3
    y, _ = model(x, dt=dt)
    # the same stack by hand: every SSM layer gets dt, the feed-forward blocks are position-wise
    h = model.encoder(x)
    for block in model.center:
        z = block.layer(h, dt=dt)[0] if isinstance(block.layer, S5) else block.layer(h)[0]
        h = h + z
    assert rel_err(y, model.decoder(h)) < 1e-12
    assert rel_err(model(x, dt=torch.ones(2, 30, dtype=torch.float64))[0], model(x)[0]) < 1e-12
    assert rel_err(model(x, dt=dt)[0], model(x)[0]) > 1e-3  # the time stamps matter
    model(x, dt=dt)[0].square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dt_errors_name_the_cause():
    x = torch.randn(1, 10, 3)
    dt = torch.ones(1, 10)
    s4d = SequenceModel(d_model=4, n_layers=1, layer="s4d", d_input=3)
    with pytest.raises(ValueError, match=r"S4D cannot take per-step time steps.*s5, s5_ptd"):
        s4d(x, dt=dt)
    pooled = SequenceModel(d_model=4, n_layers=1, layer="s5", d_input=3, pool=[2])
    with pytest.raises(ValueError, match="flat stack"):
        pooled(x, dt=dt)
    flat = SequenceModel(d_model=4, n_layers=1, layer="s5", d_input=3)
    with pytest.raises(ValueError, match=r"dt must be \(batch, length\)"):
        flat(x, dt=dt[:, :5])
    with pytest.raises(ValueError, match=">= 0"):
        flat(x, dt=-dt)


def test_time_steps_from_stamps():
    t = torch.tensor([[0.0, 0.1, 0.3, 0.35]])
    assert torch.allclose(time_steps(t, unit=0.1), torch.tensor([[1.0, 1.0, 2.0, 0.5]]))
    with pytest.raises(ValueError, match="must not decrease"):
        time_steps(t.flip(-1), unit=0.1)
    with pytest.raises(ValueError, match="positive"):
        time_steps(t, unit=0)
