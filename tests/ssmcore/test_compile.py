"""torch.compile(layer, fullgraph=True) and torch.export on every registry layer: no graph break, same results.

The fast tests trace every layer with ``fullgraph=True`` (a graph break is an error) through the
``aot_eager`` backend in training mode -- AOTAutograd traces the backward too, so forward values and
gradients are compared -- and through the ``eager`` backend in evaluation mode under ``no_grad`` (the
inference path, where eager runs use the layer's kernel cache).  The inductor backend (C++ on the CPU,
slow to compile) runs every layer in one ``slow`` test.  Export: ``torch.export.export`` of every layer's
evaluation forward, run and compared with eager.  float32, 1e-4 relative throughout.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ssmcore.layers.s4 import S4
from ssmcore.registry import layer_names, make_layer
from tests.ssmcore.helpers import rel_err

TOL = 1e-4


def layer_and_input(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    """A small layer with default options and an input for it (S4ND is 2-D by default)."""
    torch.manual_seed(seed)
    layer = make_layer(name, d_model=4, d_state=8) if "d_state" in _options(name) else make_layer(name, d_model=4)
    x = torch.randn(2, 8, 8, 4) if name == "s4nd" else torch.randn(2, 32, 4)
    return layer, x


def _options(name: str) -> set[str]:
    from ssmcore.registry import layer_class, layer_options

    return set(layer_options(layer_class(name)))


def forward_and_gradients(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``y`` and the gradients of ``<y, w>`` (fixed random ``w``) for the input and every parameter."""
    x = x.clone().requires_grad_(True)
    y, _ = layer(x)
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (y * weight).sum().backward()
    grads = {"input": x.grad}
    grads.update({n.removeprefix("_orig_mod."): p.grad for n, p in layer.named_parameters() if p.grad is not None})
    return y.detach(), grads


def check_compiled_matches_eager(name: str, backend: str) -> None:
    layer, x = layer_and_input(name)
    eager = copy.deepcopy(layer)  # both unused so far: a reference length is fixed inside the traced graph too
    y_ref, g_ref = forward_and_gradients(eager.train(), x)
    y, g = forward_and_gradients(torch.compile(layer.train(), backend=backend, fullgraph=True), x)
    assert rel_err(y, y_ref) < TOL
    assert g.keys() == g_ref.keys()
    for key in g_ref:
        assert rel_err(g[key], g_ref[key]) < TOL, key
    for key, buffer in eager.named_buffers():  # buffers the forward fixes (S4's l_ref) are fixed alike
        assert torch.equal(dict(layer.named_buffers())[key], buffer), key

    layer.eval(), eager.eval()
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    with torch.no_grad():
        y_ref = eager(x)[0]
        for _ in range(2):  # eager's second call reads its kernel cache
            assert rel_err(compiled(x)[0], y_ref) < TOL
            assert rel_err(eager(x)[0], y_ref) < TOL


@pytest.mark.parametrize("name", layer_names())
def test_fullgraph_compile_matches_eager(name):
    torch._dynamo.reset()
    check_compiled_matches_eager(name, "aot_eager")


@pytest.mark.slow
def test_inductor_compile_matches_eager_for_every_layer():
    for name in layer_names():
        torch._dynamo.reset()
        check_compiled_matches_eager(name, "inductor")


def test_compiled_s4_reads_a_loaded_reference_length():
    """S4 keeps ``l_ref`` as a Python int for traced graphs; load_state_dict must update it."""
    torch.manual_seed(0)
    trained = S4(d_model=2, d_state=8)
    trained(torch.randn(1, 50, 2))  # fixes l_ref = 50
    loaded = S4(d_model=2, d_state=8)
    loaded.load_state_dict(trained.state_dict())
    x = torch.randn(1, 32, 2)
    compiled = torch.compile(loaded.eval(), backend="eager", fullgraph=True)
    with torch.no_grad():
        assert rel_err(compiled(x)[0], trained.eval()(x)[0]) < TOL
    assert int(loaded.l_ref) == 50


@pytest.mark.parametrize("name", layer_names())
def test_export_matches_eager(name):
    layer, x = layer_and_input(name)
    layer.eval()
    program = torch.export.export(layer, (x,))
    y_ref = layer(x)[0]
    y, state = program.module()(x)
    assert state is None
    assert rel_err(y, y_ref) < TOL
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))  # same shape, other values
    assert rel_err(program.module()(other)[0], layer(other)[0]) < TOL
