"""torch.export of SaShiMi's recurrent step (the generation loop's unit): the programs step like the model.

The pooling buffers' sizes change with the step's phase in a frame (``t mod model.frame``): an exported
program is specialised to those shapes, so generation uses one program per phase.
"""

from __future__ import annotations

import torch
from torch import nn

from apps.sashimi.model import SaShiMi


class Step(nn.Module):
    """``(token (B,), state) -> (logits (B, n_classes), next state)``: :meth:`SaShiMi.step` as a module's forward."""

    def __init__(self, model: SaShiMi) -> None:
        super().__init__()
        self.model = model

    def forward(self, token, state):
        return self.model.step(token, state)


def test_exported_step_generates_like_the_model():
    torch.manual_seed(0)
    model = SaShiMi(n_classes=16, d_model=8, n_layers=2, pool=(2, 2), layer={"name": "s4d", "d_state": 8}).eval()
    token = torch.tensor([3, 5])
    state = model.default_state(2)
    programs = []
    with torch.no_grad():
        for _ in range(model.frame):  # one program per phase, exported on that phase's state
            programs.append(torch.export.export(Step(model), (token, state)).module())
            _, state = model.step(token, state)
    state = exported_state = model.default_state(2)
    with torch.no_grad():
        for t in range(2 * model.frame):
            logits, state = model.step(token, state)
            got, exported_state = programs[t % model.frame](token, exported_state)
            assert ((got - logits).norm() / logits.norm()).item() < 1e-4, t
            token = logits.argmax(-1)
