"""Shared checks for the layer contract, used by every layer's tests."""

from __future__ import annotations

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def diagonal_recurrence(dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, u: torch.Tensor, scale: float = 2.0):
    """Explicit recurrence x_k = dA x_{k-1} + dB u_k, y_k = scale Re(C x_k).

    dA, dB: (H, M); C: (H, M); u: (H, L) -> y (H, L).  Use float64 / complex128 inputs.
    """
    H, M = dA.shape
    x = torch.zeros(H, M, dtype=dA.dtype)
    ys = []
    for k in range(u.shape[-1]):
        x = dA * x + dB * u[:, k : k + 1]
        ys.append(scale * (C * x).sum(-1).real)
    return torch.stack(ys, dim=-1)


def impulse_kernel_from_step(layer, L: int) -> torch.Tensor:
    """The bare SSM kernel read off ``ssm_step`` with an impulse input: (C, H, L)."""
    H = layer.d_model
    state = layer.default_state(1)
    outs = []
    with torch.no_grad():
        for k in range(L):
            u = torch.zeros(1, H, dtype=torch.float64 if state_is_double(state) else torch.float32)
            if k == 0:
                u += 1
            y, state = layer.ssm_step(u, state)
            outs.append(y[0])
    return torch.stack(outs, dim=-1)


def state_is_double(state) -> bool:
    t = state[0] if isinstance(state, (tuple, list)) else state
    return t.dtype in (torch.float64, torch.complex128)


def check_step_matches_forward(layer, L: int, batch: int = 2, tol: float = 1e-4, seed: int = 0) -> float:
    """Run ``forward`` and then ``step`` token by token; return the relative error."""
    torch.manual_seed(seed)
    layer.eval()
    x = torch.randn(batch, L, layer.d_model)
    with torch.no_grad():
        y, _ = layer(x)
        state = layer.default_state(batch)
        ys = []
        for t in range(L):
            y_t, state = layer.step(x[:, t], state)
            ys.append(y_t)
    err = rel_err(torch.stack(ys, dim=1), y)
    assert err < tol, f"step vs forward relative error {err:.3g} >= {tol}"
    return err


def check_chunked_matches_whole(layer, L: int, chunks: int = 4, batch: int = 2, tol: float = 1e-4, seed: int = 0) -> float:
    """``forward`` over chunks with state passing equals ``forward`` of the whole sequence."""
    torch.manual_seed(seed)
    layer.eval()
    x = torch.randn(batch, L, layer.d_model)
    with torch.no_grad():
        y, none_state = layer(x)
        assert none_state is None
        state = layer.default_state(batch)
        pieces = []
        for part in x.chunk(chunks, dim=1):
            y_p, state = layer(part, state=state)
            pieces.append(y_p)
    err = rel_err(torch.cat(pieces, dim=1), y)
    assert err < tol, f"chunked vs whole relative error {err:.3g} >= {tol}"
    return err


def check_causal(layer, L: int = 64, t: int = 40) -> None:
    """Changing inputs after position t leaves outputs up to t unchanged."""
    torch.manual_seed(0)
    layer.eval()
    x = torch.randn(1, L, layer.d_model)
    x2 = x.clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
    with torch.no_grad():
        y1, _ = layer(x)
        y2, _ = layer(x2)
    assert torch.allclose(y1[:, : t + 1], y2[:, : t + 1], atol=1e-5), "output depends on future inputs"
    assert not torch.allclose(y1[:, t + 1 :], y2[:, t + 1 :], atol=1e-5)


def check_sees_future(layer, L: int = 64, t: int = 20) -> None:
    """A bidirectional layer's output at t changes when inputs after t change."""
    torch.manual_seed(0)
    layer.eval()
    x = torch.randn(1, L, layer.d_model)
    x2 = x.clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
    with torch.no_grad():
        y1, _ = layer(x)
        y2, _ = layer(x2)
    assert not torch.allclose(y1[:, : t + 1], y2[:, : t + 1], atol=1e-5), "bidirectional layer ignores the future"


def rate_pair(layer, fine: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, ref)``: the bare SSM at ``rate`` against itself at rate 1 on the same signal, ``fine`` (1, H, L)
    sampled on the finer grid.  Rate 2 runs on every other sample of ``fine`` (ref: rate 1 on ``fine``,
    decimated); rate 1/2 runs on ``fine`` (ref: rate 1 on every other sample); both compared on the coarse grid."""
    with torch.no_grad():
        if rate > 1:
            return layer.ssm_forward(fine[..., ::2], rate=rate)[0], layer.ssm_forward(fine)[0][..., ::2]
        return layer.ssm_forward(fine, rate=rate)[0][..., ::2], layer.ssm_forward(fine[..., ::2])[0]
