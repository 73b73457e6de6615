"""BatchNorm statistics re-estimated from data (calibration, and AdaBN adaptation to a new domain)."""

from __future__ import annotations

import torch
from torch import nn

from apps.common.norms import batch_norms, reestimate_batchnorm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 2))


def test_statistics_are_the_exact_average_of_the_inputs():
    net = _net().eval()
    x = torch.randn(64, 3, dtype=torch.float64) * 2 + 1
    net.double()
    seen = reestimate_batchnorm(net, [(x[:16], torch.zeros(16)), (x[16:48], None), (x[48:],)])
    assert seen == 64
    h = net[0](x)  # the BatchNorm's input, computed here from the first layer alone
    bn = net[1]
    # the cumulative average over batches (each batch counts the same) of their means and unbiased variances
    mean = torch.stack([h[:16].mean(0), h[16:48].mean(0), h[48:].mean(0)])
    torch.testing.assert_close(bn.running_mean, mean.mean(0), rtol=1e-12, atol=1e-12)
    var = torch.stack([h[:16].var(0), h[16:48].var(0), h[48:].var(0)])
    torch.testing.assert_close(bn.running_var, var.mean(0), rtol=1e-12, atol=1e-12)
    assert bn.momentum == 0.1 and not net.training and not bn.training  # every setting restored


def test_an_affine_shift_of_the_input_is_undone():
    """AdaBN's case: the new domain's inputs are 3x + 2 of the old one's.  A BatchNorm after a linear layer
    normalises that shift away exactly, so the adapted network on shifted inputs gives what the calibrated
    network gives on the original inputs, and the unadapted one does not."""
    net = _net().double().eval()
    net[1].eps = 1e-300  # BatchNorm's eps is the one thing that would tell the scales apart
    x = torch.randn(256, 3, dtype=torch.float64)
    shifted = 3 * x + 2
    reestimate_batchnorm(net, [x])
    want = net(x)
    unadapted = net(shifted)
    reestimate_batchnorm(net, [shifted])
    torch.testing.assert_close(net(shifted), want, rtol=1e-9, atol=1e-9)
    assert (unadapted - want).abs().max() > 1


def test_only_the_norms_train_and_max_items_stops():
    net = _net().eval()
    seen_modes = []
    net[3].register_forward_hook(lambda m, i, o: seen_modes.append(m.training))
    calls = []
    seen = reestimate_batchnorm(net, (torch.randn(10, 3) for _ in range(100)), lambda x: calls.append(net(x)),
                                max_items=25)
    assert seen == 30 and len(calls) == 3  # stops after the batch that reaches 25
    assert seen_modes == [False] * 3  # dropout stayed in evaluation mode
    seen_modes.clear()
    net.train()
    reestimate_batchnorm(net, [torch.randn(10, 3)], only_norms=False)
    assert seen_modes == [True] and net.training  # calibration during training: the whole net trains


def test_a_net_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    before = [p.clone() for p in net.state_dict().values()]
    assert batch_norms(net) == [] and reestimate_batchnorm(net, [torch.randn(4, 3)]) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, net.state_dict().values(), strict=True))
