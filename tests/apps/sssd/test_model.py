"""The SSSD^S4 denoiser: shapes, zero-initialised output, any bidirectional ssmcore layer, non-causal."""

from __future__ import annotations

import pytest
import torch

from apps.sssd.model import SSSDS4


def _net(layer: str = "s4", **kw) -> SSSDS4:
    return SSSDS4(in_channels=3, res_channels=8, skip_channels=8, n_layers=2, layer={"name": layer, "d_state": 4},
                  embed_dim_in=8, embed_dim_mid=16, embed_dim_out=16, **kw)


def test_shapes_and_zero_output_at_initialisation():
    net = _net()
    x = torch.randn(2, 30, 3)
    mask = torch.rand(2, 30, 3) > 0.5
    out = net(x, x, mask, torch.tensor([0, 199]))
    assert out.shape == (2, 30, 3) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("layer", ["s4", "s4d", "dss", "s4nd"])  # S4ND runs over the time axis (dim 1)
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


def test_prepared_conditioning_and_a_shared_step_match_the_plain_call():
    torch.manual_seed(0)
    net = _net(interp_cond=True).double()
    torch.nn.init.normal_(net.out_conv.weight)
    x, cond = torch.randn(3, 25, 3, dtype=torch.float64), torch.randn(3, 25, 3, dtype=torch.float64)
    mask = torch.rand(3, 25, 3) > 0.4
    with torch.no_grad():
        plain = net(x, cond, mask, torch.full((3,), 17))
        prepared = net(x, cond, mask, torch.tensor([17]), condition=net.condition(cond, mask))
    assert torch.allclose(prepared, plain, rtol=1e-12, atol=1e-12)


def test_sampling_with_the_prepared_conditioning_equals_the_plain_network():
    """impute() prepares the conditioning once; a network without ``condition`` gets the plain call each step."""
    from apps.sssd.diffusion import impute, make_scheduler

    class Plain(torch.nn.Module):
        def __init__(self, inner: SSSDS4) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x_t, cond, mask, t):
            return self.inner(x_t, cond, mask, t.expand(x_t.shape[0]))

    torch.manual_seed(0)
    net = _net(interp_cond=True).double()
    torch.nn.init.normal_(net.out_conv.weight, std=0.3)
    x0 = torch.randn(2, 20, 3, dtype=torch.float64)
    mask = torch.rand(2, 20, 3) > 0.5
    for sampler in ("ddpm", "ddim"):
        fast = impute(net, x0, mask, make_scheduler(), sampler, 8, generator=torch.Generator().manual_seed(1))
        slow = impute(Plain(net), x0, mask, make_scheduler(), sampler, 8, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-10)
