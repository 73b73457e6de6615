"""BatchNorm statistics re-estimated from data: after training ("precise BatchNorm") or for a new domain.

A BatchNorm layer normalises with running averages of its inputs' mean and variance collected during
training.  Two uses replace them with an average over chosen inputs, the weights untouched:

- *calibration* on the training data: the running averages lag a fast-moving model, and an exact
  average makes evaluation match training;
- *adaptation* to a new domain (AdaBN, Li et al. 2016, "Revisiting Batch Normalization for Practical
  Domain Adaptation"): the statistics of unlabelled inputs from the domain the model is tested on.
  A network's features shift with the source of its inputs (another synthesiser, microphone or
  sample rate), and renormalising each layer by the new source's statistics undoes much of that
  shift.  No label is read and no weight changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``net`` (1-D, 2-D or 3-D)."""
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(net: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any] | None = None,
                         max_items: int | None = None, only_norms: bool = True) -> int:
    """Replace every BatchNorm's running mean and variance by their average over ``batches``.

    Each batch's mean and unbiased variance count the same (BatchNorm's cumulative average, ``momentum=None``),
    so batches of one size give the exact mean over the examples and the mean within-batch variance.

    Args:
        net: the network; its weights are not changed.
        batches: inputs, or ``(inputs, ...)`` tuples whose first element is the input (labels are ignored).
        forward: how to run ``net`` on one input batch (default ``net(x)``), e.g. to pass a rate.
        max_items: stop once this many examples were seen (default: all of ``batches``).
        only_norms: put only the BatchNorm layers in training mode, so dropout and the rest run as in
            evaluation (adaptation); False runs the whole network in training mode (calibration
            during training).

    Returns:
        How many examples the statistics average over (0 when ``net`` has no BatchNorm).
    """
    norms = batch_norms(net)
    if not norms:
        return 0
    forward = forward or net
    modes = {m: m.training for m in net.modules()}
    momenta = [m.momentum for m in norms]
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
    if only_norms:
        net.eval()
        for m in norms:
            m.train()
    else:
        net.train()
    seen = 0
    try:
        for batch in batches:
            x: Tensor = batch[0] if isinstance(batch, (tuple, list)) else batch
            forward(x.to(device))
            seen += len(x)
            if max_items is not None and seen >= max_items:
                break
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training
    return seen
