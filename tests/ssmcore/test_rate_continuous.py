"""Every layer's ``rate`` means the same continuous-time system on a coarser or finer grid."""

from __future__ import annotations

import math

import pytest
import torch

from ssmcore.registry import make_layer
from tests.ssmcore.helpers import rate_pair


def _smooth(L: int) -> torch.Tensor:
    """A band-limited test signal (a few cycles per sequence under a Gaussian window): (1, L)."""
    t = torch.arange(L, dtype=torch.float64) / L
    return sum(torch.sin(2 * math.pi * f * t + f) for f in (3, 7, 12, 20))[None] * torch.exp(-((t - 0.5) / 0.2) ** 2)


@pytest.mark.parametrize("name", ["s4d", "s4", "dss", "s5", "s4_ptd", "ema"])
@pytest.mark.parametrize("rate", [2.0, 0.5])
def test_rate_resamples_the_same_continuous_system(name, rate):
    """On a smooth signal, the layer at rate 2 on every other sample (or rate 1/2 on a signal sampled
    twice as finely) gives the outputs of rate 1 at the shared times: a step of ``rate`` training steps
    carries ``rate`` times the input.  Before the input gain was scaled by the rate, S4D and S4ND at rate
    2 gave half the output (relative error 0.5)."""
    torch.manual_seed(0)
    layer = make_layer(name, 4, d_state=16).double().eval()
    L = 4096
    fine = _smooth(2 * L if rate < 1 else L).expand(4, -1)[None]  # (1, H, L)
    out, ref = rate_pair(layer, fine, rate)
    assert float((out - ref).norm() / ref.norm()) < 0.03
