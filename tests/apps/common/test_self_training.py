"""Test-time adaptation by information maximisation (SHOT-IM) on unlabelled inputs of a new domain."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from apps.common.self_training import information_loss, maximise_information


def test_the_loss_is_mean_entropy_less_the_entropy_of_the_mean():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-3.0, 1.0, 0.0]], dtype=torch.float64)
    p = [[math.exp(v) / sum(math.exp(w) for w in row) for v in row] for row in logits.tolist()]
    entropy = [-sum(q * math.log(q) for q in row) for row in p]
    mean = [sum(row[k] for row in p) / 3 for k in range(3)]
    want = sum(entropy) / 3 + sum(q * math.log(q) for q in mean)
    assert float(information_loss(logits)) == pytest.approx(want, rel=1e-12)
    # confident and spread over the classes: the minimum, -log K; one class for every input is not rewarded
    assert float(information_loss(torch.eye(4, dtype=torch.float64) * 1e3)) == pytest.approx(-math.log(4), rel=1e-9)
    assert float(information_loss(torch.tensor([[1e3, 0.0]] * 4, dtype=torch.float64))) == pytest.approx(0, abs=1e-9)


def _blobs(n: int, shift: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes, Gaussian blobs at (-2, 0) and (+2, 0) in 2-D, all moved by ``shift``."""
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=generator) * 0.7 + torch.stack([4.0 * y - 2.0, torch.zeros(n)], 1) + shift
    return x, y


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(-1) == y).float().mean())


def test_a_shifted_domain_is_learned_without_labels_and_the_head_is_kept():
    """A classifier of two blobs meets them shifted by (+2, 0): half of one class falls over its boundary.
    Information maximisation on the unlabelled shifted points moves the features back (the output layer is
    kept) and recovers most of the accuracy; BatchNorm's statistics, dropout and every flag are left alone."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 2))
    x, y = _blobs(512, torch.zeros(2), g)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(200):
        optimiser.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    net.eval()
    target, target_y = _blobs(512, torch.tensor([2.0, 0.0]), g)
    before = _accuracy(net, target, target_y)
    head = {k: v.clone() for k, v in net[4].state_dict().items()}
    stats = net[1].running_mean.clone()
    modes = []
    net[3].register_forward_hook(lambda m, i, o: modes.append(m.training))
    net.train()  # restored afterwards, whatever it was
    losses = maximise_information(net, target, net[4], epochs=30, lr=0.01, batch_size=64)
    assert net.training and all(not m for m in modes)  # ran in evaluation mode, the mode put back
    net.eval()
    after = _accuracy(net, target, target_y)
    assert before < 0.8 and after > before + 0.15, (before, after)
    assert losses[-1] < losses[0]
    assert all(torch.equal(net[4].state_dict()[k], v) for k, v in head.items())  # the hypothesis is kept
    torch.testing.assert_close(net[1].running_mean, stats, rtol=0, atol=0)  # statistics untouched
    assert all(p.requires_grad for p in net.parameters())


def test_frozen_flags_stay_and_bad_settings_are_refused():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2))
    net[0].bias.requires_grad_(False)
    bias = net[0].bias.clone()
    weight = net[0].weight.clone()
    maximise_information(net, torch.randn(20, 2), None, epochs=2, lr=0.1, batch_size=10)
    assert torch.equal(net[0].bias, bias) and not net[0].bias.requires_grad  # a frozen weight stays frozen
    assert not torch.equal(net[0].weight, weight)  # with frozen=None every other weight trains
    assert maximise_information(net, torch.randn(20, 2), None, epochs=0) == []
    for kwargs in ({"epochs": -1}, {"epochs": 1, "lr": 0.0}, {"epochs": 1, "batch_size": 1}):
        with pytest.raises(ValueError, match="maximise_information needs"):
            maximise_information(net, torch.randn(4, 2), None, **kwargs)
