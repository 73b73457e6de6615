"""torch.export of the SSSD denoiser (``SSSDS4.forward``): the exported program reproduces it."""

from __future__ import annotations

import torch

from apps.sssd.model import SSSDS4


def test_exported_denoiser_matches_eager():
    torch.manual_seed(0)
    net = SSSDS4(in_channels=2, res_channels=8, skip_channels=8, n_layers=2, layer={"name": "s4d", "d_state": 4}).eval()
    with torch.no_grad():
        for p in net.parameters():  # the output convolution starts at zero (as in SSSD): give it values
            if not p.any():
                p.normal_(0.0, 0.1)
    x_t, cond = torch.randn(2, 24, 2), torch.randn(2, 24, 2)
    mask = torch.rand(2, 24, 2) > 0.5
    t = torch.tensor([3, 7])
    program = torch.export.export(net, (x_t, cond, mask, t)).module()
    with torch.no_grad():
        expected = net(x_t, cond, mask, t)
    got = program(x_t, cond, mask, t)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-4
    t2 = torch.tensor([1, 9])  # other values through the same program
    with torch.no_grad():
        expected = net(x_t * 0.5, cond, ~mask, t2)
    assert ((program(x_t * 0.5, cond, ~mask, t2) - expected).norm() / expected.norm()).item() < 1e-4
