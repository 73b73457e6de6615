"""Optimiser parameter groups: SSM parameters get their own lr and no weight decay.

Each layer lists its SSM parameters (A / Lambda, B, dt / log_step, P) by name in
``ssm_parameter_names``; :func:`param_groups` reads those tags.  The kind of each tagged
parameter (``A``, ``B``, ``dt`` or ``P``) comes from the layer's ``ssm_parameter_kinds``
(``{name: kind}``) where it declares one, otherwise from the name (:func:`parameter_kind`).
Biases and normalisation weights (1-D parameters) get no weight decay, as is usual.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

#: the kinds of SSM parameter that ``ssm_lr`` may set one by one
SSM_KINDS = ("A", "B", "dt", "P")


def parameter_kind(name: str) -> str:
    """The kind of the SSM parameter called ``name``: ``dt`` (``log_dt``, ``log_step``), ``B``, ``P``,
    else ``A`` (``A_real``, ``Lambda_im``, DLR's ``rho`` / ``theta``, ...)."""
    if "dt" in name or "step" in name:
        return "dt"
    if name in ("B", "P") or name.startswith(("B_", "P_")):
        return name[0]
    return "A"


def ssm_parameters_by_kind(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The tagged SSM parameters of every layer inside ``model``, by kind (A, B, dt, P)."""
    found: dict[str, list[nn.Parameter]] = {kind: [] for kind in SSM_KINDS}
    seen: set[int] = set()
    for module in model.modules():
        kinds = getattr(module, "ssm_parameter_kinds", None) or {}
        for name in getattr(module, "ssm_parameter_names", ()):
            p = getattr(module, name, None)
            if isinstance(p, nn.Parameter) and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                found[kinds.get(name) or parameter_kind(name)].append(p)
    return found


def ssm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The tagged SSM parameters of every layer inside ``model``."""
    return [p for params in ssm_parameters_by_kind(model).values() for p in params]


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    ssm_lr: float | Mapping[str, float] | None = None,
    ssm_weight_decay: float = 0.0,
) -> list[dict]:
    """Parameter groups for any torch optimiser.

    ``ssm_lr`` is one learning rate for every SSM parameter, or a mapping by kind
    (``{"A": 1e-3, "dt": 1e-3, "B": 5e-3}``; a kind left out trains at ``lr``); None means ``lr``.
    Returns the SSM group(s) (``ssm``, or ``ssm_A``, ``ssm_B``, ... with a mapping; each with
    ``ssm_weight_decay``), the other matrices (``decay``: ``lr``, ``weight_decay``) and the other
    1-D parameters such as biases and norm scales (``no_decay``: ``lr``, no weight decay); empty
    groups are left out.  Each group has a ``name`` key.
    Raises:
        ValueError: a key of ``ssm_lr`` that is not a kind, or a learning rate that is not positive.
    """
    by_kind = ssm_parameters_by_kind(model)
    ssm_ids = {id(p) for params in by_kind.values() for p in params}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in ssm_ids:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    if isinstance(ssm_lr, Mapping):
        unknown = sorted(set(ssm_lr) - set(SSM_KINDS))
        if unknown:
            raise ValueError(f"ssm_lr: unknown parameter kind {unknown[0]!r}; the kinds are {', '.join(SSM_KINDS)}")
        rates = {kind: float(ssm_lr.get(kind, lr)) for kind in SSM_KINDS}
        groups = [{"name": f"ssm_{kind}", "params": by_kind[kind], "lr": rates[kind], "weight_decay": ssm_weight_decay}
                  for kind in SSM_KINDS]
    else:
        rates = {"ssm": lr if ssm_lr is None else float(ssm_lr)}
        groups = [{"name": "ssm", "params": [p for params in by_kind.values() for p in params], "lr": rates["ssm"],
                   "weight_decay": ssm_weight_decay}]
    if min([lr, *rates.values()]) <= 0:
        raise ValueError(f"learning rates must be positive, got lr={lr} and ssm_lr={ssm_lr}")
    groups += [
        {"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
