"""Optimiser parameter groups: SSM parameters get their own lr and no weight decay.

Each layer lists its SSM parameters (A / Lambda, B, dt / log_step, P) by name in
``ssm_parameter_names``; :func:`param_groups` reads those tags.  Biases and
normalisation weights (1-D parameters) get no weight decay, as is usual.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def ssm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The tagged SSM parameters of every layer inside ``model``."""
    found, seen = [], set()
    for module in model.modules():
        for name in getattr(module, "ssm_parameter_names", ()):
            p = getattr(module, name, None)
            if isinstance(p, nn.Parameter) and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                found.append(p)
    return found


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    ssm_lr: float | None = None,
    ssm_weight_decay: float = 0.0,
) -> list[dict]:
    """Parameter groups for any torch optimiser.

    Returns up to three groups: SSM parameters (``ssm_lr``, ``ssm_weight_decay``;
    ``ssm_lr`` defaults to ``lr``), other matrices (``lr``, ``weight_decay``) and other
    1-D parameters such as biases and norm scales (``lr``, no weight decay).  Each group
    has a ``name`` key.
    """
    ssm = ssm_parameters(model)
    ssm_ids = {id(p) for p in ssm}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in ssm_ids:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"name": "ssm", "params": ssm, "lr": lr if ssm_lr is None else ssm_lr, "weight_decay": ssm_weight_decay},
        {"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def count_parameters(params: Iterable[nn.Parameter]) -> int:
    """Number of scalars in ``params``."""
    return sum(p.numel() for p in params)
