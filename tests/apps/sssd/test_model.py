"""The SSSD^S4 denoiser: shapes, zero-initialised output, any bidirectional ssmcore layer, non-causal."""

from __future__ import annotations

import pytest
import torch

from apps.sssd.model import SSSDS4


def _net(layer: str = "s4", **kw) -> SSSDS4:
    return SSSDS4(3, 8, 8, 2, layer, {"d_state": 4}, 8, 16, 16, **kw)


def test_shapes_and_zero_output_at_initialisation():
    net = _net()
    x = torch.randn(2, 30, 3)
    mask = torch.rand(2, 30, 3) > 0.5
    out = net(x, x, mask, torch.tensor([0, 199]))
    assert out.shape == (2, 30, 3) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("layer", ["s4", "s4d", "dss"])
@pytest.mark.parametrize("interp_cond", [False, True])
def test_any_bidirectional_layer_and_the_output_sees_both_directions(layer, interp_cond):
    torch.manual_seed(0)
    net = _net(layer, interp_cond=interp_cond)
    torch.nn.init.normal_(net.out_conv.weight)
    x = torch.randn(1, 40, 3)
    mask = torch.ones(1, 40, 3, dtype=torch.bool)
    t = torch.tensor([10])
    base = net(x, x, mask, t)
    later = x.clone()
    later[0, 35] += 1.0  # a change late in the series moves the output early on: the SSMs are bidirectional
    assert (net(later, later, mask, t)[0, :5] - base[0, :5]).abs().max() > 1e-6
    loss = net(x, x, mask, t).square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_conditioning_enters_through_the_mask():
    torch.manual_seed(0)
    net = _net()
    torch.nn.init.normal_(net.out_conv.weight)
    x = torch.randn(1, 20, 3)
    cond = torch.randn(1, 20, 3)
    mask = torch.zeros(1, 20, 3, dtype=torch.bool)
    t = torch.tensor([5])
    # with nothing observed, the observed values are ignored
    assert torch.allclose(net(x, cond, mask, t), net(x, cond * 7, mask, t))
    mask[0, 3] = True
    assert not torch.allclose(net(x, cond, mask, t), net(x, cond * 7, mask, t))
