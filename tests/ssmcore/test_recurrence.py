"""Every steppable layer's public ``recurrence()``: it is what ``step()`` runs, it reproduces ``forward()``,
and it (like every convolutional layer's kernel) is cached per parameter version."""

from __future__ import annotations

import pytest
import torch

from ssmcore.layers.base import CACHE_SIZE, Recurrence
from ssmcore.registry import layer_class, layer_names, make_layer
from tests.ssmcore.helpers import rel_err

OPTIONS = {"dlr": {"d_state": 16}, "s4_ptd": {"d_state": 16}, "s5_ptd": {"d_state": 16}, "s4nd": {"dim": 1}}
STEPPABLE = [name for name in layer_names() if layer_class(name).can_step and layer_class(name).has_recurrence]
#: layers whose exact step() is their own (not a Recurrence)
OWN_STEP = [name for name in layer_names() if layer_class(name).can_step and not layer_class(name).has_recurrence]
CONVOLUTIONAL = [name for name in layer_names() if hasattr(layer_class(name), "kernel")]


def _layer(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {"d_state": 8, **OPTIONS.get(name, {}), **kw}
    layer = make_layer(name, d_model=4, **options).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return layer


def test_every_layer_says_whether_it_steps():
    assert {"s4", "s4d", "dss", "dlr", "s5", "s4_ptd", "s5_ptd", "ema"} <= set(STEPPABLE)
    assert {"sgconv", "gss", "mega"} <= set(OWN_STEP)
    assert not layer_class("s4nd").can_step
    for name in ("s4nd", *OWN_STEP):
        with pytest.raises(RuntimeError, match="no recurrence"):
            _layer(name).recurrence()
    assert {"liquid_s4", "ccnn"} <= set(OWN_STEP)


@pytest.mark.parametrize("name", STEPPABLE)
def test_recurrence_reproduces_forward_and_is_what_step_runs(name):
    layer = _layer(name, channels=2)
    x = torch.randn(2, 40, 4)
    with torch.no_grad():
        y, _ = layer(x)
        rec = layer.recurrence()
        assert isinstance(rec, Recurrence) and rec.C.shape[:2] == (2, 4) and rec.D.shape == (2, 4)
        assert rec.rank == (1 if name == "s4" else 0) and rec.mimo == name.startswith("s5")
        state, by_terms = layer.default_state(2), []
        for t in range(40):  # the documented recurrence, then the layer's activation and projection
            y_t, state = rec.step(state, x[:, t])  # (B, C, H)
            by_terms.append(layer.output(layer.activation(y_t.flatten(1))))
        state, by_step = layer.default_state(2), []
        for t in range(40):
            y_t, state = layer.step(x[:, t], state)
            by_step.append(y_t)
    assert rel_err(torch.stack(by_terms, 1), y) < 1e-4
    assert torch.equal(torch.stack(by_step, 1), torch.stack(by_terms, 1))


@pytest.mark.parametrize("name", STEPPABLE)
def test_recurrence_is_cached_per_parameter_version(name):
    layer = _layer(name)
    with torch.no_grad():
        first = layer.recurrence()
        assert layer.recurrence() is first  # reused
        assert layer.recurrence(2.0) is not first and layer.recurrence() is first  # per rate
        getattr(layer, layer.ssm_parameter_names[-1]).mul_(1.5)  # in place (as optimiser steps do)
        second = layer.recurrence()
        assert second is not first
    changed = [not torch.equal(a, b) for a, b in zip(first, second, strict=True) if a is not None]
    assert any(changed)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    y, _ = layer(torch.randn(2, 16, 4))
    y.square().mean().backward()
    opt.step()
    with torch.no_grad():
        third = layer.recurrence()
        fresh = layer.discrete_recurrence()
    assert third is not second
    assert all(torch.equal(a, b) for a, b in zip(third, fresh, strict=True) if a is not None)


def test_recurrence_under_autograd_is_recomputed_and_differentiable():
    layer = _layer("s4d")
    rec = layer.recurrence()
    assert layer.recurrence() is not rec
    y, _ = rec.step(layer.default_state(1), torch.randn(1, 4))
    y.sum().backward()
    assert layer.log_dt.grad is not None and layer.log_dt.grad.abs().sum() > 0


@pytest.mark.parametrize("name", STEPPABLE)
def test_a_bidirectional_layer_has_no_recurrence(name):
    layer = _layer(name, bidirectional=True)
    with pytest.raises(RuntimeError, match="bidirectional"):
        layer.recurrence()


@pytest.mark.parametrize("name", CONVOLUTIONAL)
def test_every_convolutional_layer_reuses_its_kernel_while_parameters_are_unchanged(name):
    layer = _layer(name, bidirectional=True)
    shape = (24,) if name == "s4nd" else 24
    with torch.enable_grad():
        reference = layer.kernel(shape).detach()
    with torch.no_grad():
        k = layer.kernel(shape)
        assert torch.equal(k, reference)
        assert layer.kernel(shape) is k
        assert layer.kernel(shape, 2.0) is not k and layer.kernel(shape) is k
        next(iter(layer.parameters())).add_(0.1)
        assert layer.kernel(shape) is not k
        for n in range(1, CACHE_SIZE + 4):  # bounded
            layer.kernel((n,) if name == "s4nd" else n)
        assert len([key for key in layer._cache if key[0] == "kernel"]) == CACHE_SIZE


def test_inference_mode_steps_reuse_the_recurrence():
    layer = _layer("s4")
    x = torch.randn(2, 4)
    with torch.inference_mode():
        rec = layer.recurrence()
        y, state = layer.step(x, layer.default_state(2))
        assert layer.recurrence() is rec and not rec.lam.is_inference()
    with torch.no_grad():
        assert torch.equal(layer.step(x, layer.default_state(2))[0], y)


def test_shared_layer_arguments_are_declared_once_in_the_base_class():
    import inspect

    from ssmcore.layers.base import SSMLayer

    shared = set(inspect.signature(SSMLayer.__init__).parameters) - {"self", "d_model"}
    assert shared == {"d_state", "channels", "bidirectional", "dropout", "activation", "postact"}
    own_default = {"dlr": {"d_state"}, "s4_ptd": {"d_state"}, "s5_ptd": {"d_state"}, "s4nd": {"bidirectional"},
                   "ccnn": {"bidirectional"}}
    for name in layer_names():
        params = inspect.signature(layer_class(name).__init__).parameters
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), name
        assert shared & set(params) == own_default.get(name, set()), name
