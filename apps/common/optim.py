"""The optimiser as one value: ``model.optim`` in a recipe, read by one :func:`configure_optimizers`.

```yaml
model:
  optim: {lr: 0.01, weight_decay: 0.05, ssm_lr: 0.001, scheduler: cosine, warmup_steps: 100}
```
``--model.optim.lr 0.003`` overrides one field; ``ssm_lr`` may be a mapping by SSM parameter kind
(``{A: 0.001, dt: 0.001, B: 0.005}``, see :func:`ssmcore.optim.param_groups`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from ssmcore.optim import SSM_KINDS, param_groups

SCHEDULERS = ("constant", "cosine", "plateau", "step")
#: the optimiser fields, as they were spelled before they were grouped under ``optim``
OPTIM_FIELDS = ("lr", "weight_decay", "ssm_lr", "ssm_weight_decay", "scheduler", "warmup_steps")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with SSM parameter groups and an LR schedule.

    Args:
        lr: learning rate of all non-SSM parameters.
        weight_decay: AdamW weight decay of non-SSM matrices.
        ssm_lr: learning rate of the SSM parameters (A, B, dt, P), or a mapping by kind
            (``{A: ..., B: ..., dt: ..., P: ...}``; a kind left out trains at ``lr``); None: ``lr``.
        ssm_weight_decay: weight decay of the SSM parameters (0 as in the papers).
        scheduler: ``constant``, ``cosine`` (per step, with linear warmup), ``plateau`` or ``step``.
        warmup_steps: linear warmup steps (constant and cosine).
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    ssm_lr: float | dict[str, float] | None = None
    ssm_weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"model.optim.scheduler: unknown {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        rates = list(self.ssm_lr.values()) if isinstance(self.ssm_lr, Mapping) else [self.ssm_lr]
        if self.lr <= 0 or any(r is not None and r <= 0 for r in rates):
            raise ValueError(f"model.optim.lr and model.optim.ssm_lr must be positive, got {self.lr} and {self.ssm_lr}")
        if isinstance(self.ssm_lr, Mapping) and set(self.ssm_lr) - set(SSM_KINDS):
            bad = sorted(set(self.ssm_lr) - set(SSM_KINDS))[0]
            raise ValueError(f"model.optim.ssm_lr: unknown parameter kind {bad!r}; the kinds are {', '.join(SSM_KINDS)}")
        if self.warmup_steps < 0:
            raise ValueError(f"model.optim.warmup_steps must be >= 0, got {self.warmup_steps}")

    @classmethod
    def of(cls, value: OptimConfig | Mapping[str, Any] | None, default: OptimConfig | None = None) -> OptimConfig:
        """``value`` as a config: a config, a mapping of fields over ``default``, or None for ``default``."""
        base = default or cls()
        if value is None:
            return base
        if isinstance(value, OptimConfig):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"model.optim must be a mapping of {', '.join(f.name for f in fields(cls))}, got {value!r}")
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"model.optim.{unknown[0]}: unknown option; the options are "
                             f"{', '.join(f.name for f in fields(cls))}")
        return replace(base, **value)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as saved in a checkpoint's hyper-parameters."""
        return asdict(self)


def configure_optimizers(module: nn.Module, optim: OptimConfig, monitor: str = "val/loss",
                         monitor_mode: str = "min") -> dict[str, Any]:
    """AdamW over :func:`ssmcore.optim.param_groups` of ``module`` and the schedule ``optim`` names.

    ``module`` is a LightningModule (its trainer gives the step count of ``cosine``); ``monitor``
    and ``monitor_mode`` drive ``plateau``.  Returns Lightning's optimiser dict.
    """
    groups = param_groups(module, optim.lr, optim.weight_decay, optim.ssm_lr, optim.ssm_weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=optim.lr)
    if optim.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=monitor_mode, factor=0.5, patience=3)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "monitor": monitor}}
    trainer = module.trainer
    if optim.scheduler == "step":
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 10
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.3)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
    total = max(1, int(trainer.estimated_stepping_batches))
    warmup, cosine = optim.warmup_steps, optim.scheduler == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
