"""Recurrent generation through a SaShiMi model: ``FastStepper(model).start(state).step(token) -> logits``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from apps.sashimi.model import SaShiMi


class _ModuleRun:
    """Steps the model's own ``step()`` (every layer, exact)."""

    def __init__(self, model: SaShiMi, state: Any) -> None:
        self.model, self.state = model, state

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        logits, self.state = self.model.step(token, self.state)
        return logits


class FastStepper:
    """Recurrent stepping of a :class:`SaShiMi` model from a state (``default_state`` or a prefix's)."""

    def __init__(self, model: SaShiMi) -> None:
        self.model = model

    def start(self, state: Any) -> _ModuleRun:
        return _ModuleRun(self.model, state)
