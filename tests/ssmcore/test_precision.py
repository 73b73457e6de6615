"""Every registry layer under CPU autocast (bfloat16 and float16): forward and backward stay close to float32,
and the SSM kernel / discrete recurrence is computed in float32 / complex64 whatever the autocast dtype.

Tolerances come from the unit roundoff u of the autocast dtype (bfloat16: 8-bit mantissa, u = 2^-8 ~ 3.9e-3;
float16: 11-bit mantissa, u = 2^-11 ~ 4.9e-4).  Under autocast only the dense projections (the output GLU,
GSS / Mega projections) round their inputs to u; they accumulate in float32 and the kernel and the FFT
convolution stay in float32.  So the output and the gradients carry an error of a few u: we allow 5u
(bfloat16 2e-2, float16 2.5e-3); measured at these sizes: 2e-3..1e-2 (bfloat16), 2e-4..8e-4 (float16).

Each SSM parameter's own gradient (a sum over L with cancellation) gets 5x the layer's gradient bound.
"""

from __future__ import annotations

import pytest
import torch

from ssmcore import layer_names, make_layer
from ssmcore.optim import ssm_parameters
from tests.ssmcore.helpers import rel_err

#: (dtype, unit roundoff)
DTYPES = {"bf16": (torch.bfloat16, 2.0**-8), "fp16": (torch.float16, 2.0**-11)}
L = 64


def _layer_and_input(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "s4nd":
        return make_layer(name, d_model=8, dim=2), torch.randn(2, 8, 8, 8)  # (B, S1, S2, H)
    return make_layer(name, d_model=8), torch.randn(2, L, 8)  # (B, L, H)


def _ssm_terms(layer: torch.nn.Module) -> list[torch.Tensor]:
    """What the layer's SSM computes in full precision: its kernel, or its discrete recurrence (S5)."""
    inner = getattr(layer, "ema", None) or getattr(layer, "ssm", None)  # Mega's EMA, GSS's inner SSM
    if isinstance(inner, torch.nn.Module) and hasattr(inner, "kernel"):
        layer = inner
    if hasattr(layer, "kernel"):
        return [layer.kernel((8, 8) if getattr(layer, "dim", 1) == 2 else L)]
    return [t for t in layer.recurrence() if isinstance(t, torch.Tensor)]  # S5, S5-PTD: the scan's terms


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", layer_names())
def test_autocast_forward_backward_close_to_float32(name, dtype):
    low_dtype, u = DTYPES[dtype]
    layer, x = _layer_and_input(name)
    x.requires_grad_(True)
    tensors = [x, *layer.parameters()]
    ref, _ = layer(x)
    ref.square().mean().backward()
    ref_grads = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    with torch.autocast("cpu", dtype=low_dtype):
        low, _ = layer(x)
    loss = low.float().square().mean()
    assert torch.isfinite(loss)
    loss.backward()
    assert low.dtype in (low_dtype, torch.float32)  # the projections ran in the low dtype (Mega: a float32 residual)
    assert rel_err(low.float(), ref) < 5 * u
    grads = torch.cat([t.grad.flatten() for t in tensors])
    assert grads.dtype == torch.float32 and torch.isfinite(grads).all()
    units = 5
    assert rel_err(grads, torch.cat([g.flatten() for g in ref_grads])) < units * u
    # each SSM parameter (A, B, dt, ...) gets its own gradient, not one lost in the others' norm
    ssm_ids = {id(p) for p in ssm_parameters(layer)}
    assert ssm_ids
    for t, g in zip(tensors, ref_grads):
        if id(t) in ssm_ids:
            assert rel_err(t.grad, g) < 5 * units * u


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", layer_names())
def test_ssm_kernel_is_float32_under_autocast(name, dtype):
    layer, _ = _layer_and_input(name)
    # with autograd on nothing is served from the no-grad kernel cache: both calls compute
    with torch.autocast("cpu", dtype=DTYPES[dtype][0]):
        low = [t.detach() for t in _ssm_terms(layer)]
    ref = [t.detach() for t in _ssm_terms(layer)]
    assert low
    for a, b in zip(low, ref):
        assert a.dtype in (torch.float32, torch.complex64)
        assert torch.equal(a, b)  # bit for bit: no matmul or einsum of the kernel ran in the low dtype
