"""The eleven atomic sequence-to-sequence tasks of DLR.

Gupta, Mehta, Berant (2022), "Simplifying and Understanding State Space Models with Diagonal
Linear RNNs", Sec. 5 / App. C.  Every task draws real values in [-1, 1] (a standard normal
vector divided by its largest magnitude, as in the paper), appends the positional features
``cos(2 pi t / L_in)`` and ``sin(2 pi t / L_in)`` to every step, and is trained with the mean
squared error on the output positions, reported as R^2.

A generator returns ``(x, y)``: ``x`` (B, L_in, d_in) holds the value channel(s) followed by the
two positional features, ``y`` (B, L_out, d_out) is the target of the *last* ``L_out`` input
positions (``L_out <= L_in``).  A causal model reads the whole input and answers on those steps.

Tasks whose answer is a fixed set of convolution kernels (Shift, CumSum, Reverse,
MaskedSelect-Fixed, Solve-Fixed) are within a diagonal SSM's reach; the context-dependent ones
(ContextShift, Sort, MaskedSelect, Solve, MIPS) need a different kernel per input, which is
where the paper finds SSMs weak.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: seed of the positions / matrix that the "-Fixed" variants share across all samples
FIXED_SEED = 1234


def unit_values(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Standard normal values divided by their largest magnitude along the last axis: in [-1, 1]."""
    z = torch.randn(shape, generator=g)
    return z / z.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)


def with_positions(values: Tensor) -> Tensor:
    """Append ``cos(2 pi t / L)`` and ``sin(2 pi t / L)``: (B, L, C) -> (B, L, C + 2)."""
    B, L, _ = values.shape
    angle = 2 * math.pi * torch.arange(L, dtype=values.dtype) / L
    pos = torch.stack([angle.cos(), angle.sin()], dim=-1).expand(B, L, 2)  # (B, L, 2)
    return torch.cat([values, pos], dim=-1)


def shift(batch: int, length: int, g: torch.Generator, num_shifts: int = 8) -> tuple[Tensor, Tensor]:
    """Shift: ``num_shifts`` delayed copies of the input at evenly spaced delays.

    ``u`` (L values) -> ``y[t, j] = u[t - d_j]`` (0 for ``t < d_j``) with delays
    ``d_j = floor(j L / num_shifts)``, ``j = 0 .. num_shifts - 1`` (the largest delay is
    ``L - L / num_shifts``).  Shapes: x (B, L, 3), y (B, L, num_shifts).
    """
    if not 1 <= num_shifts <= length:
        raise ValueError(f"data.num_shifts must be in [1, length], got {num_shifts} for length {length}")
    u = unit_values((batch, length), g)
    y = torch.zeros(batch, length, num_shifts)
    for j, d in enumerate(shift_delays(length, num_shifts)):
        y[:, d:, j] = u[:, : length - d]
    return with_positions(u.unsqueeze(-1)), y


def shift_delays(length: int, num_shifts: int) -> list[int]:
    """The delays of :func:`shift`: ``floor(j L / num_shifts)``."""
    return [j * length // num_shifts for j in range(num_shifts)]


def cumsum(batch: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """CumSum: the running sum, normalised by the square root of the count.

    ``y[t] = (u[0] + ... + u[t]) / sqrt(t + 1)`` (t from 0), so the target stays O(1).
    Shapes: x (B, L, 3), y (B, L, 1).
    """
    u = unit_values((batch, length), g)
    y = u.cumsum(-1) / torch.arange(1, length + 1).sqrt()
    return with_positions(u.unsqueeze(-1)), y.unsqueeze(-1)


def cummax(batch: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """CumMax: the running maximum ``y[t] = max(u[0], ..., u[t])``.  x (B, L, 3), y (B, L, 1)."""
    u = unit_values((batch, length), g)
    return with_positions(u.unsqueeze(-1)), u.cummax(-1).values.unsqueeze(-1)


def reverse(batch: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Reverse: read ``u`` (L values) followed by L zeros, then emit ``u`` backwards.

    ``y[t] = u[L - 1 - t]`` on the last L of the 2L input steps.  x (B, 2L, 3), y (B, L, 1).
    """
    u = unit_values((batch, length), g)
    x = torch.cat([u, torch.zeros_like(u)], dim=-1)
    return with_positions(x.unsqueeze(-1)), u.flip(-1).unsqueeze(-1)


def sort(batch: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Sort: read ``u`` (L values) followed by L zeros, then emit ``u`` in ascending order.

    x (B, 2L, 3), y (B, L, 1) with ``y[:, t] <= y[:, t + 1]``.
    """
    u = unit_values((batch, length), g)
    x = torch.cat([u, torch.zeros_like(u)], dim=-1)
    return with_positions(x.unsqueeze(-1)), u.sort(-1).values.unsqueeze(-1)


def _select(batch: int, length: int, n_select: int, g: torch.Generator, fixed: bool) -> tuple[Tensor, Tensor]:
    if not 1 <= n_select <= length:
        raise ValueError(f"data.n_select must be in [1, length], got {n_select} for length {length}")
    if fixed:
        pick = torch.randperm(length, generator=torch.Generator().manual_seed(FIXED_SEED))[:n_select]
        positions = pick.sort().values.expand(batch, n_select)
    else:
        positions = torch.rand(batch, length, generator=g).argsort(-1)[:, :n_select].sort(-1).values
    u = unit_values((batch, length), g)
    marker = torch.zeros(batch, length).scatter_(-1, positions, 1.0)
    pad = torch.zeros(batch, n_select)
    values = torch.stack([torch.cat([u, pad], -1), torch.cat([marker, pad], -1)], dim=-1)  # (B, L + M, 2)
    return with_positions(values), u.gather(-1, positions).unsqueeze(-1)


def masked_select(batch: int, length: int, g: torch.Generator, n_select: int = 32) -> tuple[Tensor, Tensor]:
    """MaskedSelect: copy the M = ``n_select`` marked values, in order, after the input.

    Input: L values ``u`` with a second channel marking M random positions ``p_1 < ... < p_M``
    (new positions per sample), then M zero steps.  Output on those M steps: ``y[i] = u[p_i]``.
    x (B, L + M, 4) (value, marker, cos, sin), y (B, M, 1).
    """
    return _select(batch, length, n_select, g, fixed=False)


def masked_select_fixed(
    batch: int, length: int, g: torch.Generator, n_select: int = 32
) -> tuple[Tensor, Tensor]:
    """MaskedSelect-Fixed: :func:`masked_select` with the same M positions in every sample.

    The answer is then M fixed shifts (kernels).  x (B, L + M, 4), y (B, M, 1).
    """
    return _select(batch, length, n_select, g, fixed=True)


def context_shift(batch: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """ContextShift: shift the sequence by an amount the sequence itself states.

    A shift ``s ~ U{0, ..., L - 3}`` per sample is written into the first two steps as
    ``cos(2 pi s / L), sin(2 pi s / L)``; the other L - 2 steps are values ``u``.  With
    ``v = [cos, sin, u]`` the target is ``y[t] = v[t - s]`` (0 for ``t < s``).
    x (B, L, 3), y (B, L, 1).
    """
    if length < 4:
        raise ValueError(f"context_shift needs length >= 4, got {length}")
    u = unit_values((batch, length - 2), g)
    s = torch.randint(0, length - 2, (batch,), generator=g)
    angle = 2 * math.pi * s / length
    v = torch.cat([angle.cos().unsqueeze(-1), angle.sin().unsqueeze(-1), u], dim=-1)  # (B, L)
    t = torch.arange(length)
    src = t.unsqueeze(0) - s.unsqueeze(-1)  # (B, L)
    y = torch.where(src >= 0, v.gather(-1, src.clamp_min(0)), torch.zeros(()))
    return with_positions(v.unsqueeze(-1)), y.unsqueeze(-1)


def solve_size(length: int) -> int:
    """The matrix size N of :func:`solve` for a length budget: the largest N with N^2 + 2N <= length."""
    n = int(math.isqrt(length + 1)) - 1
    if n < 2:
        raise ValueError(f"solve needs length >= 8 (a 2 x 2 system), got {length}")
    return n


def _orthogonal(batch: int, n: int, g: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(batch, n, n, generator=g))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar-distributed


def _solve(batch: int, length: int, g: torch.Generator, fixed: bool) -> tuple[Tensor, Tensor]:
    n = solve_size(length)
    if fixed:
        A = _orthogonal(1, n, torch.Generator().manual_seed(FIXED_SEED)).expand(batch, n, n)
    else:
        A = _orthogonal(batch, n, g)
    b = unit_values((batch, n), g)
    x_true = torch.linalg.solve(A, b.unsqueeze(-1)).squeeze(-1)  # (B, N); = A^T b for orthogonal A
    seq = torch.cat([A.reshape(batch, n * n), b, torch.zeros(batch, n)], dim=-1)  # (B, N^2 + 2N)
    return with_positions(seq.unsqueeze(-1)), x_true.unsqueeze(-1)


def solve(batch: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Solve: read a linear system ``A x = b`` and emit its solution ``x``.

    N = :func:`solve_size` (length); the input is ``A`` row by row (N^2 steps), then ``b``
    (N steps), then N zero steps on which the target ``x = A^-1 b`` is emitted.  A new ``A``
    per sample, drawn Haar-orthogonal so that every system is perfectly conditioned and all
    entries lie in [-1, 1]; ``b`` is in [-1, 1].  x (B, N^2 + 2N, 3), y (B, N, 1).
    """
    return _solve(batch, length, g, fixed=False)


def solve_fixed(batch: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Solve-Fixed: :func:`solve` with the same ``A`` in every sample (x is then linear in b).

    x (B, N^2 + 2N, 3), y (B, N, 1).
    """
    return _solve(batch, length, g, fixed=True)


def mips(batch: int, length: int, g: torch.Generator, dim: int = 4) -> tuple[Tensor, Tensor]:
    """MIPS (maximum inner-product search), causal.

    Each step t carries a unit query ``q_t``, key ``k_t`` and value ``v_t`` in R^D (D = ``dim``);
    the target is the value of the best-matching key seen so far:
    ``y[t] = v[j*]`` with ``j* = argmax_{j <= t} <q_t, k_j>``.
    x (B, L, 3D + 2) (q, k, v, cos, sin), y (B, L, D).
    """
    if dim < 1:
        raise ValueError(f"data.mips_dim must be >= 1, got {dim}")
    qkv = torch.nn.functional.normalize(torch.randn(batch, length, 3, dim, generator=g), dim=-1)
    q, k, v = qkv.unbind(2)  # (B, L, D) each
    sim = q @ k.transpose(-1, -2)  # (B, L, L)
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    best = sim.masked_fill(future, -math.inf).argmax(-1)  # (B, L)
    y = v.gather(1, best.unsqueeze(-1).expand(-1, -1, dim))
    return with_positions(qkv.reshape(batch, length, 3 * dim)), y


@dataclass(frozen=True)
class Task:
    """A task: its generator, the options it takes and a label for tables."""

    name: str
    label: str
    make: Callable[..., tuple[Tensor, Tensor]]
    options: tuple[str, ...] = ()


#: task name (recipe / CLI spelling) -> :class:`Task`, in the paper's order
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("shift", "Shift", shift, ("num_shifts",)),
        Task("cumsum", "CumSum", cumsum),
        Task("cummax", "CumMax", cummax),
        Task("reverse", "Reverse", reverse),
        Task("sort", "Sort", sort),
        Task("masked_select", "MaskedSelect", masked_select, ("n_select",)),
        Task("masked_select_fixed", "MaskedSelect-Fixed", masked_select_fixed, ("n_select",)),
        Task("context_shift", "ContextShift", context_shift),
        Task("solve", "Solve", solve),
        Task("solve_fixed", "Solve-Fixed", solve_fixed),
        Task("mips", "MIPS", mips, ("dim",)),
    )
}


def generate(
    task: str,
    batch: int,
    length: int,
    g: torch.Generator,
    num_shifts: int = 8,
    n_select: int = 32,
    mips_dim: int = 4,
) -> tuple[Tensor, Tensor]:
    """``(x (B, L_in, d_in), y (B, L_out, d_out))`` of the named task (see :data:`TASKS`)."""
    if task not in TASKS:
        raise ValueError(f"data.task: unknown {task!r}; choose one of {', '.join(TASKS)}")
    spec = TASKS[task]
    given = {"num_shifts": num_shifts, "n_select": n_select, "dim": mips_dim}
    return spec.make(batch, length, g, **{k: given[k] for k in spec.options})


def task_dims(task: str, num_shifts: int = 8, mips_dim: int = 4) -> tuple[int, int]:
    """``(d_in, d_out)`` of a task: value channels + 2 positional features, and target channels."""
    if task not in TASKS:
        raise ValueError(f"data.task: unknown {task!r}; choose one of {', '.join(TASKS)}")
    d_in = {"masked_select": 4, "masked_select_fixed": 4, "mips": 3 * mips_dim + 2}.get(task, 3)
    d_out = {"shift": num_shifts, "mips": mips_dim}.get(task, 1)
    return d_in, d_out
