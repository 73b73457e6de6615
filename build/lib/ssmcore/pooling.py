"""SaShiMi pooling: strided :class:`DownPool`, causal :class:`UpPool` and :class:`AvgPool`.

Goel, Gu, Donahue, Re (2022), "It's Raw! Audio Generation with State-Space Models", Sec. 3.2.

Pooling in step mode: a :class:`DownPool` buffers ``pool`` inputs and returns ``None``
in between (``(None, state)``), emitting one pooled vector on every ``pool``-th step.
An :class:`UpPool` holds a buffer of pending outputs and emits one per step; it takes
an input (not ``None``) exactly on the step where its buffer runs empty, which is the
step where the matching DownPool emits.  Pooling states are the same objects in
``forward`` and ``step``, so a sequence may be consumed by any mix of chunked forward
calls (of any length) and steps.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class _WindowPool(nn.Module):
    """Shared buffering of :class:`DownPool` and :class:`AvgPool`: reduce each window of ``pool`` steps.

    A subclass defines ``reduce(windows (B, n, pool, H)) -> (B, n, H_out)``.  The state is the
    buffer of inputs since the last full window, (B, k, H) with ``0 <= k < pool``.
    """

    def __init__(self, pool: int) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.pool = pool

    def forward(
        self, x: Tensor, state: Tensor | None = None, rate: float = 1.0
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` (B, L, H) -> ``(y (B, n, H_out), next_state)``.

        ``n = (k + L) // pool`` for ``k`` buffered inputs; without a state, trailing inputs that do
        not fill a window are dropped (in SaShiMi's causal U-Net they influence no output).
        """
        buffered = x if state is None or state.shape[1] == 0 else torch.cat([state.to(x.dtype), x], dim=1)
        n = buffered.shape[1] // self.pool
        windows = rearrange(
            buffered[:, : n * self.pool], "b (n p) h -> b n p h", p=self.pool
        )  # (B, n, pool, H)
        y = self.reduce(windows)
        return y, (None if state is None else buffered[:, n * self.pool :])

    def step(self, x_t: Tensor, state: Tensor, rate: float = 1.0) -> tuple[Tensor | None, Tensor]:
        """``x_t`` (B, H) -> ``(y_t (B, H_out) on every pool-th step else None, next_state)``."""
        x = x_t.unsqueeze(1)  # (B, 1, H)
        buffered = x if state.shape[1] == 0 else torch.cat([state.to(x.dtype), x], dim=1)
        if buffered.shape[1] < self.pool:
            return None, buffered
        return self.reduce(buffered.unsqueeze(1))[:, 0], buffered[:, :0]


class DownPool(_WindowPool):
    """SaShiMi down-pooling: (B, L, H) -> (B, L // pool, H * expand).

    Each window of ``pool`` consecutive steps is flattened to ``pool * H`` features and
    mapped by ``Linear(pool H, expand H)``.  See the module docstring for ``step``.
    """

    def __init__(self, d_model: int, pool: int, expand: int = 2) -> None:
        super().__init__(pool)
        if expand < 1:
            raise ValueError(f"expand must be >= 1, got {expand}")
        self.d_model, self.expand = d_model, expand
        self.d_output = d_model * expand
        self.linear = nn.Linear(d_model * pool, self.d_output)

    def reduce(self, windows: Tensor) -> Tensor:
        return self.linear(rearrange(windows, "b n p h -> b n (p h)"))  # (B, n, H * expand)

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        w = self.linear.weight
        return torch.zeros(batch_size, 0, self.d_model, dtype=w.dtype, device=device or w.device)


class AvgPool(_WindowPool):
    """Average pooling over windows of ``pool`` steps: (B, L, H) -> (B, L // pool, H)."""

    def reduce(self, windows: Tensor) -> Tensor:
        return windows.mean(dim=2)

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        return torch.zeros(batch_size, 0, 0, device=device)


class UpPool(nn.Module):
    """SaShiMi causal up-pooling: (B, n, H) -> (B, n * pool, H // expand).

    ``Linear(H, pool * H / expand)`` turns each input into ``pool`` output steps.  To stay
    causal the result is shifted right by one window: the outputs of window ``w`` (steps
    ``w pool .. w pool + pool - 1``) come from input ``w - 1``, which a :class:`DownPool`
    computed from steps strictly before window ``w``; window 0 is zero.

    The state is the buffer of pending outputs, (B, j, H // expand) with ``1 <= j <= pool``;
    the default is one window of zeros (the shifted-in window).
    """

    def __init__(self, d_model: int, pool: int, expand: int = 2) -> None:
        super().__init__()
        if pool < 1 or expand < 1 or d_model % expand:
            raise ValueError(
                f"need pool >= 1 and expand >= 1 dividing d_model, got {d_model=}, {pool=}, {expand=}"
            )
        self.d_model, self.pool, self.expand = d_model, pool, expand
        self.d_output = d_model // expand
        self.linear = nn.Linear(d_model, self.d_output * pool)

    def _windows(self, x: Tensor) -> Tensor:
        """(B, n, H) -> (B, n * pool, H // expand), unshifted."""
        return rearrange(self.linear(x), "b n (p h) -> b (n p) h", p=self.pool)

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        w = self.linear.weight
        return torch.zeros(batch_size, self.pool, self.d_output, dtype=w.dtype, device=device or w.device)

    def forward(
        self, x: Tensor, state: Tensor | None = None, rate: float = 1.0, length: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` (B, n, H) -> ``(y (B, length, H // expand), next_state)``.

        ``length`` defaults to ``n * pool`` (``j + n pool - pool`` with a buffer of ``j``); a
        U-Net passes the length of its skip connection.
        """
        pending = self.default_state(x.shape[0], x.device) if state is None else state
        available = torch.cat([pending.to(x.dtype), self._windows(x)], dim=1)  # (B, j + n pool, H')
        if length is None:
            length = available.shape[1] - self.pool
        left = available.shape[1] - length
        if left < 0 or (state is not None and not 1 <= left <= self.pool):
            raise ValueError(
                f"UpPool cannot emit {length} steps from {available.shape[1]} available: "
                "its input is out of sync with the matching DownPool"
            )
        return available[:, :length], (None if state is None else available[:, length:])

    def step(self, x_t: Tensor | None, state: Tensor, rate: float = 1.0) -> tuple[Tensor, Tensor]:
        """Emit the next pending output (B, H // expand).

        ``x_t`` (B, H) must be given exactly when this step empties the buffer (the step where the
        matching DownPool emitted) and be ``None`` otherwise.
        """
        y, rest = state[:, 0], state[:, 1:]
        if rest.shape[1] == 0:
            if x_t is None:
                raise ValueError("UpPool.step needs an input on the last step of each window (buffer empty)")
            rest = self._windows(x_t.unsqueeze(1))  # (B, pool, H')
        elif x_t is not None:
            raise ValueError(
                "UpPool.step got an input while outputs are still pending: out of sync with DownPool"
            )
        return y, rest
