"""The no-grad kernel cache (S4 here; every layer in test_recurrence.py): exact, per length and rate, never
stale after a parameter change."""

from __future__ import annotations

import copy

import torch

from ssmcore.layers.base import CACHE_SIZE as KERNEL_CACHE_SIZE
from ssmcore.layers.s4 import S4
from tests.ssmcore.helpers import rel_err
from tests.ssmcore.test_s4 import perturb


def _layer(**kw) -> S4:
    torch.manual_seed(0)
    return perturb(S4(d_model=4, d_state=16, bidirectional=True, dt_min=0.01, dt_max=0.1, **kw))


def _uncached(layer: S4, L: int, rate: float = 1.0) -> torch.Tensor:
    with torch.enable_grad():
        return layer.kernel(L, rate).detach()


def test_cached_kernel_equals_uncached_and_is_reused():
    layer = _layer(l_max=64)
    with torch.no_grad():
        first = layer.kernel(64)
        assert torch.equal(first, _uncached(layer, 64))
        assert layer.kernel(64) is first  # reused, not recomputed
        for L, rate in ((40, 1.0), (64, 2.0), (80, 1.0)):  # truncated, converted at a rate, longer than l_ref
            assert torch.equal(layer.kernel(L, rate), _uncached(layer, L, rate))
        assert layer.kernel(64) is first  # other lengths did not evict it
        x = torch.randn(3, 64, 4)
        y_cached, _ = layer(x)
    with torch.enable_grad():
        y_grad, _ = layer(x)
    assert torch.equal(y_cached, y_grad.detach())


def test_grad_mode_never_uses_the_cache():
    layer = _layer(l_max=32)
    with torch.no_grad():
        layer.kernel(32)
    k = layer.kernel(32)
    assert k.requires_grad and k.grad_fn is not None
    k.sum().backward()
    assert layer.Lambda_real.grad is not None and layer.Lambda_real.grad.abs().sum() > 0


def test_optimizer_step_invalidates():
    layer = _layer(l_max=32)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    with torch.no_grad():
        before = layer.kernel(32).clone()
    y, _ = layer(torch.randn(2, 32, 4))
    y.square().mean().backward()
    opt.step()
    with torch.no_grad():
        after = layer.kernel(32)
    assert not torch.equal(after, before)
    assert torch.equal(after, _uncached(layer, 32))


def test_load_state_dict_invalidates():
    layer = _layer(l_max=32)
    other = perturb(copy.deepcopy(layer), scale=0.3, seed=5)
    with torch.no_grad():
        before = layer.kernel(32).clone()
        layer.load_state_dict(other.state_dict())
        after = layer.kernel(32)
    assert rel_err(after, before) > 1e-3
    assert torch.equal(after, _uncached(other, 32))


def test_in_place_edits_dtype_moves_and_writes_into_the_kernel_invalidate():
    layer = _layer(l_max=32)
    with torch.no_grad():
        k = layer.kernel(32)
        layer.log_dt.add_(0.5)  # a manual in-place edit of one SSM parameter
        assert torch.equal(layer.kernel(32), _uncached(layer, 32))
        layer.double()
        k64 = layer.kernel(32)
        assert k64.dtype == torch.float64 and torch.equal(k64, _uncached(layer, 32))
        k64.mul_(0)  # a caller writing into the returned kernel must not poison the cache
        assert torch.equal(layer.kernel(32), _uncached(layer, 32))
        assert not torch.equal(layer.kernel(32), k.double())


def test_cache_is_bounded():
    layer = _layer(l_max=16)
    with torch.no_grad():
        for L in range(1, KERNEL_CACHE_SIZE + 5):
            layer.kernel(L)
    assert len([key for key in layer._cache if key[0] == "kernel"]) == KERNEL_CACHE_SIZE


def test_inference_mode_uses_the_cache():
    layer = _layer(l_max=32)
    x = torch.randn(2, 32, 4)
    with torch.inference_mode():
        k = layer.kernel(32)
        assert layer.kernel(32) is k and not k.is_inference()
        y, _ = layer(x)
    with torch.no_grad():
        assert torch.equal(layer(x)[0], y)
    assert torch.equal(k, _uncached(layer, 32))
