"""S4D's and S4-PTD's initial kernels have the papers' scale (issue: the SSM branch swamped the D skip).

The papers discretise ``x' = A x + B u`` with the textbook ZOH ``dA = exp(dt A)``,
``dB = (exp(dt A) - 1) / A * B`` and draw ``C`` complex normal.  The layers fold ``dt`` into ``C``
(so that ``rate`` acts on ``dB`` alone) and start from ``C = dt * C_paper``.  The reference below is
the papers' recurrence, unrolled in float64 from the layer's A, B, dt and ``C_paper = C / dt``.
"""

from __future__ import annotations

import pytest
import torch

from ssmcore.registry import make_layer


def paper_impulse_response(dt, A, B, C_paper, L):
    """``K_l = 2 Re sum_n C_n dB_n dA_n^l`` by running the ZOH recurrence on an impulse, float64."""
    dtA = dt[:, None] * A  # (H, M)
    dA = torch.exp(dtA)
    dB = (torch.exp(dtA) - 1) / A * B
    x = torch.zeros_like(dA)
    out = []
    for l in range(L):
        x = dA * x + (dB if l == 0 else 0)
        out.append(2 * (C_paper * x).sum(-1).real)
    return torch.stack(out, -1)  # (H, L)


@pytest.mark.parametrize("spec", [
    {"name": "s4d", "init": "legs"}, {"name": "s4d", "init": "lin"}, {"name": "s4d", "init": "inv"},
    {"name": "s4_ptd"},
])
def test_initial_kernel_is_the_papers(spec):
    torch.manual_seed(0)
    H, N, L = 64, 32, 256
    layer = make_layer({**spec, "d_state": N}, d_model=H).double()
    dt, A, B, C = (t.detach() for t in layer.continuous())
    C_paper = C[0] / dt[:, None]
    ref = paper_impulse_response(dt, A.to(torch.complex128), B.to(torch.complex128), C_paper, L)
    k = layer.kernel(L)[0].detach()
    assert torch.allclose(k, ref, rtol=0, atol=1e-10 * ref.abs().max())
    # the paper's scale: median l2 norm about 1 (S4 0.5, DSS 0.6 at this init), not 1 / dt times it (60-200)
    median = k.norm(dim=-1).median().item()
    assert 0.1 < median < 5, median


def test_s4d_C_paper_is_standard_complex_normal():
    torch.manual_seed(0)
    layer = make_layer({"name": "s4d", "d_state": 64}, d_model=256)
    dt, _, _, C = (t.detach() for t in layer.continuous())
    C_paper = C / dt[:, None]
    power = C_paper.abs().square().mean().item()  # E|C|^2 = 1 for torch's complex normal
    assert 0.95 < power < 1.05, power
    assert abs(C_paper.mean().item()) < 0.05


@pytest.mark.parametrize("name", ["s4d", "s4_ptd"])
def test_trained_weights_load_with_unchanged_kernels(name):
    """Only the initialisation changed: a state dict (as in a checkpoint) gives back its rate-1 and rate-2 kernels."""
    torch.manual_seed(1)
    trained = make_layer({"name": name, "d_state": 16}, d_model=8)
    with torch.no_grad():
        trained.C.mul_(50.0)  # a C far from the new init, as the old one was
    torch.manual_seed(2)
    fresh = make_layer({"name": name, "d_state": 16}, d_model=8)
    fresh.load_state_dict(trained.state_dict())
    for rate in (1.0, 2.0):
        assert torch.equal(fresh.kernel(128, rate=rate), trained.kernel(128, rate=rate))
