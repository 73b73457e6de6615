"""Any layer of the registry runs by name in every 1-D app's model: smoke, synthetic, sashimi
(causal layers), speech, vis4mer and sssd, with finite outputs and gradients (S4ND over one axis, as the
apps' :func:`apps.common.layers.layer_spec` sets it)."""

from __future__ import annotations

import pytest
import torch

from apps.common.layers import layer_spec
from apps.sashimi.model import SaShiMi
from apps.smoke.module import RecallModel
from apps.speech.model import SpeechNet
from apps.sssd.model import SSMBlock
from apps.synthetic.module import TaskModel
from apps.vis4mer.model import ViS4merStage
from ssmcore.registry import causal_layer_names, layer_names

#: every layer, S4ND included (its 2-D/3-D grids are the s4nd app's own tests)
ONE_D = layer_names()


def _spec(name: str) -> dict:
    return layer_spec({"name": name, "d_state": 8})  # as the apps' modules check it: S4ND gets dim 1


def _finite_backward(y: torch.Tensor, model: torch.nn.Module) -> None:
    assert torch.isfinite(y).all()
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ONE_D)
def test_every_layer_in_every_one_d_app(name):
    torch.manual_seed(0)
    spec = _spec(name)
    models = {
        "smoke": (RecallModel(vocab=4, d_model=8, n_layers=1, layer=spec), lambda m: m(torch.randint(0, 4, (2, 32)))),
        "synthetic": (TaskModel(d_input=2, d_output=3, d_model=8, n_layers=1, layer=spec),
                      lambda m: m(torch.randn(2, 32, 2), 8)),
        "speech": (SpeechNet(d_input=1, num_classes=3, d_model=8, n_layers=2, layer=spec),
                   lambda m: m(torch.randn(2, 64, 1))),
        "vis4mer": (ViS4merStage(d_model=8, layer=spec, dropout=0.0), lambda m: m(torch.randn(2, 16, 8))),
        "sssd": (SSMBlock(d_model=8, layer={**spec, "bidirectional": True}), lambda m: m(torch.randn(2, 8, 32))),
    }
    for app, (model, run) in models.items():
        out = run(model)
        y = out[0] if isinstance(out, tuple) else out
        assert y.shape[0] == 2, app
        _finite_backward(y, model)


@pytest.mark.parametrize("name", causal_layer_names())
def test_every_causal_layer_generates_in_sashimi(name):
    torch.manual_seed(0)
    model = SaShiMi(n_classes=16, d_model=8, n_layers=1, pool=[2], layer=_spec(name)).eval()
    tokens = torch.randint(0, 16, (2, 8))
    with torch.no_grad():
        full, _ = model(tokens)
        state = model.default_state(2)
        steps = []
        for t in range(8):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
    stepped = torch.stack(steps, 1)
    assert torch.isfinite(full).all()
    torch.testing.assert_close(stepped, full, rtol=1e-3, atol=1e-4)
