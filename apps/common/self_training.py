"""Test-time adaptation of a classifier to a new domain by information maximisation, on unlabelled inputs.

SHOT (Liang, Hu, Feng 2020, "Do We Really Need to Access the Source Data? Source Hypothesis Transfer for
Unsupervised Domain Adaptation", its "IM" objective) keeps a trained classifier's output layer (the
*hypothesis*) fixed and trains the rest of the network on unlabelled inputs of the new domain to minimise

    L = mean_i H(p_i) - H(mean_i p_i),      H(p) = -sum_k p_k log p_k,

where ``p_i`` is the softmax output for input ``i``.  The first term makes each prediction confident, the
second keeps the predictions spread over the classes as a whole, so that the network cannot collapse onto
one class.  The features move until the new domain's inputs fall clearly on one side of the fixed decision
boundaries.  No label is read.

It goes with re-estimated BatchNorm statistics (:mod:`apps.common.norms`, AdaBN), which it starts from and
keeps: the network runs in evaluation mode (dropout off, BatchNorm normalising by its running statistics),
so only the weights move.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def information_loss(logits: Tensor) -> Tensor:
    """SHOT's IM objective of a batch of ``logits`` (B, K): the mean entropy of the predictions minus the
    entropy of their mean (a scalar; lower is better)."""
    logp = logits.log_softmax(-1)
    p = logp.exp()
    mean_entropy = -(p * logp).sum(-1).mean()
    pm = p.mean(0)
    return mean_entropy + (pm * pm.clamp_min(1e-12).log()).sum()


def maximise_information(net: nn.Module, inputs: Tensor, frozen: nn.Module | None, epochs: int, lr: float = 1e-3,
                         batch_size: int = 50, forward: Callable[[Tensor], Tensor] | None = None,
                         seed: int = 0) -> list[float]:
    """Train ``net`` in place on unlabelled ``inputs`` (N, ...) to minimise :func:`information_loss`.

    Args:
        net: the classifier; it runs in evaluation mode throughout (its modes are restored afterwards).
        inputs: the new domain's examples, fed as the classifier is fed when it is scored.
        frozen: the part kept as it is (the output layer, SHOT's hypothesis); None trains every weight.
        epochs: passes over ``inputs``, each in a new order drawn from ``seed``.
        lr: Adam's learning rate.
        batch_size: examples per step; the diversity term needs several per batch.
        forward: how to run ``net`` on a batch (default ``net(x)``), e.g. to pass a rate.

    Returns:
        The mean loss of each epoch.
    """
    if epochs < 0 or lr <= 0 or batch_size < 2:
        raise ValueError(f"maximise_information needs epochs >= 0, lr > 0 and batch_size >= 2, got "
                         f"{epochs}, {lr}, {batch_size}")
    forward = forward or net
    keep = {id(p) for p in frozen.parameters()} if frozen is not None else set()
    flags = {p: p.requires_grad for p in net.parameters()}
    modes = {m: m.training for m in net.modules()}
    generator = torch.Generator().manual_seed(seed)
    losses = []
    try:
        for p, flag in flags.items():
            p.requires_grad_(flag and id(p) not in keep)
        net.eval()
        optimiser = torch.optim.Adam([p for p in flags if p.requires_grad], lr=lr)
        with torch.enable_grad():
            for _ in range(epochs):
                order = torch.randperm(len(inputs), generator=generator)
                total = 0.0
                for start in range(0, len(inputs), batch_size):
                    batch = inputs[order[start:start + batch_size]]
                    loss = information_loss(forward(batch))
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * len(batch)
                losses.append(total / max(len(inputs), 1))
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for m, training in modes.items():
            m.training = training
    return losses
