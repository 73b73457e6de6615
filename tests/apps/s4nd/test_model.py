"""Backbones: the rate comes from the input resolution, rate 1 is the identity at the training
resolution, the Conv2D baseline matches S4ND's size, and the same backbone runs videos."""

from __future__ import annotations

import pytest
import torch

from apps.s4nd.model import ConvNeXtNet, IsotropicNet, Stem, count_parameters, matched_conv_kernel
from ssmcore.layers.s4nd import S4ND


def _recorded_rates(model: torch.nn.Module, x: torch.Tensor, monkeypatch) -> list:
    """Run ``model`` on ``x`` and return the rate every S4ND layer received."""
    seen = []
    forward = S4ND.forward

    def spy(self, x, state=None, rate=1.0):
        seen.append(tuple(rate) if not isinstance(rate, float) else rate)
        return forward(self, x, state, rate)

    monkeypatch.setattr(S4ND, "forward", spy)
    with torch.no_grad():
        model(x)
    return seen


def test_isotropic_rate_is_derived_from_the_resolution(monkeypatch):
    torch.manual_seed(0)
    net = IsotropicNet(1, 10, train_resolution=14, d_model=8, n_layers=2, layer={"name": "s4nd", "d_state": 8})
    assert net.rate((14, 14)) == (1.0, 1.0)
    assert net.rate((28, 28)) == (0.5, 0.5)  # a layer trained at 14 runs on 28 at half the step
    assert net.rate((7, 28)) == (2.0, 0.5)
    assert _recorded_rates(net, torch.randn(2, 28, 28, 1), monkeypatch) == [(0.5, 0.5)] * 2
    assert _recorded_rates(net, torch.randn(2, 7, 7, 1), monkeypatch)[-1] == (2.0, 2.0)


def test_convnext_rate_per_stage(monkeypatch):
    torch.manual_seed(0)
    net = ConvNeXtNet(1, 10, train_resolution=14, depths=(1, 1), dims=(8, 16), layer={"name": "s4nd", "d_state": 8})
    assert net.grids((14, 14)) == [(14, 14), (7, 7)]
    assert net.rate((28, 28)) == [(0.5, 0.5), (0.5, 0.5)]
    assert net.rate((7, 7)) == [(2.0, 2.0), (7 / 4, 7 / 4)]  # 7 -> 4 after the half-size resampling
    assert _recorded_rates(net, torch.randn(2, 28, 28, 1), monkeypatch) == [(0.5, 0.5)] * 2
    assert net(torch.randn(2, 7, 7, 1)).shape == (2, 10)


@pytest.mark.parametrize("backbone", [IsotropicNet, ConvNeXtNet])
@pytest.mark.parametrize("mixer", ["s4nd", "conv2d"])
def test_rate_one_is_the_identity_at_the_training_resolution(backbone, mixer):
    torch.manual_seed(0)
    net = backbone(3, 5, train_resolution=12, layer={"name": mixer, "d_state": 8}).eval()
    x = torch.randn(2, 12, 12, 3)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, rate=1.0))
        assert torch.equal(net(x), net(x, rate=(1.0, 1.0)))
        if mixer == "s4nd":  # and a wrong explicit rate does change it
            assert not torch.allclose(net(x), net(x, rate=0.5))


def test_patch_stem_covers_the_same_fraction_of_the_image():
    torch.manual_seed(0)
    stem = Stem("patch", 1, 4, dim=2, train_size=(8, 8), patch_size=2)
    assert stem.patch_sizes((16, 16)) == (4, 4) and stem.grid((16, 16)) == (4, 4) == stem.grid((8, 8))
    net = IsotropicNet(1, 10, train_resolution=8, stem="patch", patch_size=2, d_model=8, n_layers=1,
                       layer={"name": "s4nd", "d_state": 8})
    assert net.rate((16, 16)) == (1.0, 1.0) and net.rate((4, 4)) == (1.0, 1.0)
    # a constant image gives the same tokens at every resolution (the resampled weights keep their sum)
    const = torch.full((1, 8, 8, 1), 0.3)
    with torch.no_grad():
        assert torch.allclose(stem(const), stem(torch.full((1, 16, 16, 1), 0.3)), atol=1e-5)
    with pytest.raises(ValueError, match="whole number"):
        stem(torch.randn(1, 10, 10, 1))


def test_conv2d_baseline_matches_size_and_depth_and_ignores_rate():
    assert matched_conv_kernel(16) == 11 and matched_conv_kernel(32) == 17
    kw = dict(d_model=32, n_layers=3)
    s4nd = IsotropicNet(1, 10, 14, layer={"name": "s4nd", "d_state": 16}, **kw)
    conv = IsotropicNet(1, 10, 14, layer={"name": "conv2d", "d_state": 16}, **kw)
    assert abs(count_parameters(conv) / count_parameters(s4nd) - 1) < 0.05
    assert len(conv.blocks) == len(s4nd.blocks)
    x = torch.randn(2, 14, 14, 1)
    with torch.no_grad():
        assert torch.equal(conv(x, rate=0.5), conv(x))


@pytest.mark.parametrize("backbone", [IsotropicNet, ConvNeXtNet])
def test_video_tensors_run_with_3d_s4nd(backbone, monkeypatch):
    """(B, T, H, W, C) videos: S4ND 3-D layers, one rate per axis (time included)."""
    torch.manual_seed(0)
    kw = dict(d_model=8, n_layers=1) if backbone is IsotropicNet else dict(depths=(1, 1), dims=(8, 8))
    net = backbone(3, 4, train_resolution=(4, 8, 8), dim=3, layer={"name": "s4nd", "d_state": 8}, **kw)
    assert all(m.dim == 3 for m in net.modules() if isinstance(m, S4ND))
    video = torch.randn(2, 8, 16, 12, 3)  # twice the frames and height, 1.5x the width
    assert net(video).shape == (2, 4)
    rates = _recorded_rates(net, video, monkeypatch)
    assert rates[0] == (0.5, 0.5, 8 / 12)
    assert net(torch.randn(2, 4, 8, 8, 3)).shape == (2, 4)


def test_wrong_channel_count_or_shape_is_a_clear_error():
    net = IsotropicNet(1, 10, 14, d_model=8, n_layers=1, layer={"name": "s4nd", "d_state": 8})
    with pytest.raises(ValueError, match=r"expects \(batch, height, width, 1\) channels-last.*in_channels=1"):
        net(torch.randn(2, 14, 14, 3))
    with pytest.raises(ValueError, match="channels-last"):
        net(torch.randn(2, 1, 14, 14)[:, :, :, :, None])
    with pytest.raises(ValueError, match="model.layer.name: unknown mixer"):
        IsotropicNet(1, 10, 14, layer={"name": "attention"})
