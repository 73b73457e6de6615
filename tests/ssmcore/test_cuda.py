"""The layer contract on a CUDA device: the same numbers as on the CPU, gradients, step and state.

Skipped where no GPU is present (CI has none); run on a GPU machine with
``pytest tests/ssmcore/test_cuda.py``.  TF32 is switched off so float32 means float32.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ssmcore.blocks import SequenceModel
from ssmcore.registry import causal_layer_names, make_layer
from tests.ssmcore.helpers import rel_err

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.usefixtures("strict_float32")]

CUDA = torch.device("cuda")
CAUSAL_LAYERS = causal_layer_names()  # every steppable layer, new ones included
TOL = 1e-4


def _pair(name: str, **kwargs):
    torch.manual_seed(0)
    cpu = make_layer(name, d_model=8, d_state=16, **kwargs)
    return cpu, copy.deepcopy(cpu).to(CUDA)


@pytest.mark.parametrize("name", CAUSAL_LAYERS)
@pytest.mark.parametrize("rate", [1.0, 2.0])
def test_forward_and_gradients_match_cpu(name, rate):
    cpu, gpu = _pair(name)
    x = torch.randn(2, 100, 8)
    y_cpu, _ = cpu(x, rate=rate)
    y_gpu, _ = gpu(x.to(CUDA), rate=rate)
    assert y_gpu.device.type == "cuda"
    assert rel_err(y_gpu.cpu(), y_cpu) < TOL
    y_cpu.square().sum().backward()
    y_gpu.square().sum().backward()
    for (pname, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        if p_cpu.grad is None:
            continue
        assert torch.isfinite(p_gpu.grad).all(), pname
        assert rel_err(p_gpu.grad.cpu(), p_cpu.grad) < 1e-3, pname


@pytest.mark.parametrize("name", CAUSAL_LAYERS)
def test_step_and_chunks_on_cuda(name):
    _, gpu = _pair(name)
    gpu.eval()
    x = torch.randn(2, 48, 8, device=CUDA)
    with torch.no_grad():
        y, _ = gpu(x)
        state = gpu.default_state(2)
        steps = []
        for t in range(x.shape[1]):
            y_t, state = gpu.step(x[:, t], state)
            steps.append(y_t)
        state = gpu.default_state(2)
        chunks = []
        for part in x.chunk(3, dim=1):
            y_p, state = gpu(part, state=state)
            chunks.append(y_p)
    assert rel_err(torch.stack(steps, dim=1), y) < TOL
    assert rel_err(torch.cat(chunks, dim=1), y) < TOL


def test_s5_irregular_steps_on_cuda():
    cpu, gpu = _pair("s5")
    x = torch.randn(2, 64, 8)
    dt = torch.rand(2, 64) + 0.5
    assert rel_err(gpu(x.to(CUDA), dt=dt.to(CUDA))[0].cpu(), cpu(x, dt=dt)[0]) < TOL


def test_s4nd_matches_cpu():
    torch.manual_seed(0)
    cpu = make_layer("s4nd", d_model=8, d_state=16, dim=2)
    gpu = copy.deepcopy(cpu).to(CUDA)
    x = torch.randn(2, 12, 10, 8)
    for rate in (1.0, 2.0):
        assert rel_err(gpu(x.to(CUDA), rate=rate)[0].cpu(), cpu(x, rate=rate)[0]) < TOL


def test_sashimi_unet_steps_on_cuda():
    """The pooled U-Net backbone (SaShiMi) on CUDA: forward equals the CPU and step equals forward."""
    torch.manual_seed(0)
    cpu = SequenceModel(d_model=8, n_layers=1, layer="s4", d_input=1, d_output=4, pool=[2, 2], d_state=16).eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    x = torch.randn(2, 32, 1)
    with torch.no_grad():
        y_gpu, _ = gpu(x.to(CUDA))
        assert rel_err(y_gpu.cpu(), cpu(x)[0]) < TOL
        state = gpu.default_state(2)
        steps = []
        for t in range(x.shape[1]):
            y_t, state = gpu.step(x[:, t].to(CUDA), state)
            steps.append(y_t)
    assert rel_err(torch.stack(steps, dim=1), y_gpu) < TOL
