"""SSSD's sampling on a CUDA device: the same imputations as on the CPU for every sampler.

The noise is drawn on the CPU from the caller's generator and moved to the device, so a CUDA run of the same
model, series, mask and seed must give the CPU's imputations up to float32 rounding.  Skipped where no GPU is
present (CI has none); run on a GPU machine with ``pytest tests/apps/sssd/test_cuda.py`` (benchmarks/gpu_tables.sh
does).  TF32 is switched off so float32 means float32.
"""

from __future__ import annotations

import copy

import pytest
import torch

from apps.sssd.module import SSSDModule
from tests.ssmcore.helpers import rel_err

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.usefixtures("strict_float32")]

CUDA = torch.device("cuda")


@pytest.mark.parametrize("sampler, steps", [("ddpm", 20), ("ddim", 5), ("dpm", 5)])
def test_sampling_on_cuda_matches_the_cpu(sampler, steps):
    torch.manual_seed(0)
    cpu = SSSDModule(channels=3, res_channels=8, skip_channels=8, n_layers=2, layer={"name": "s4", "d_state": 8},
                     embed_dim_in=16, embed_dim_mid=16, embed_dim_out=16).eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    raw = torch.randn(4, 40, 3, generator=torch.Generator().manual_seed(1))
    raw[0, :5, 1] = float("nan")  # a gap in the data: never observed, always imputed
    cond = torch.rand(4, 40, 3, generator=torch.Generator().manual_seed(2)) < 0.4
    on_cpu = cpu.sample(raw, cond, 2, sampler, steps, torch.Generator().manual_seed(3))
    on_gpu = gpu.sample(raw.to(CUDA), cond.to(CUDA), 2, sampler, steps, torch.Generator().manual_seed(3))
    assert on_gpu.device.type == "cuda" and on_gpu.shape == on_cpu.shape == (2, 4, 40, 3)
    assert torch.isfinite(on_gpu).all()
    observed = cond & ~torch.isnan(raw)
    assert torch.equal(on_gpu.cpu()[:, observed], on_cpu[:, observed])  # observed entries returned as given
    assert rel_err(on_gpu.cpu(), on_cpu) < 1e-3  # float32 rounding, carried through every step of the chain
