"""A tiny learning task for layer tests: can a layer, between two linear maps, learn a causal filter?"""

from __future__ import annotations

import torch
from torch import nn


def moving_sum_task(batch: int, L: int, width: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (batch, L, 1) of white noise and targets (batch, L, 1): the sum of the last ``width`` inputs."""
    u = torch.randn(batch, L, 1, generator=generator)
    padded = nn.functional.pad(u.transpose(1, 2), (width - 1, 0))  # (batch, 1, L + width - 1)
    target = padded.unfold(-1, width, 1).sum(-1).transpose(1, 2)  # (batch, L, 1)
    return u, target / width**0.5


def train_moving_sum(layer: nn.Module, steps: int = 300, width: int = 4, L: int = 64, lr: float = 1e-2) -> tuple[float, float]:
    """Train ``Linear(1, H) -> layer -> Linear(H, 1)`` with Adam on :func:`moving_sum_task`;
    returns (loss of the first batch, mean loss of the last 20 batches) (targets have unit variance)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    H = layer.d_model
    model = nn.ModuleDict({"encode": nn.Linear(1, H), "layer": layer, "decode": nn.Linear(H, 1)})
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        u, target = moving_sum_task(16, L, width, g)
        y, _ = model["layer"](model["encode"](u))
        loss = nn.functional.mse_loss(model["decode"](y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], sum(losses[-20:]) / 20


def train_delay(layer: nn.Module, steps: int, delay: int = 4, L: int = 32, lr: float = 1e-2) -> tuple[float, float]:
    """Train ``layer -> Linear(H, 1)`` with Adam to output ``u_(t - delay)`` from white noise ``u`` fed to every
    feature; returns the mean loss of the first and of the last 20 steps."""
    torch.manual_seed(0)
    head = nn.Linear(layer.d_model, 1)
    opt = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=lr)
    losses = []
    for _ in range(steps):
        u = torch.randn(16, L, 1)
        target = torch.zeros(16, L)
        target[:, delay:] = u[:, :-delay, 0]
        y, _ = layer(u.expand(-1, -1, layer.d_model))
        loss = (head(y)[..., 0] - target).square()[:, delay:].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[:20]) / 20, sum(losses[-20:]) / 20
