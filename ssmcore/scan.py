"""Parallel scan for diagonal linear recurrences ``x_k = a_k * x_{k-1} + b_k``.

The recurrence is associative: the pairs ``(a, b)`` compose as
``(a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2)`` (Blelloch 1990), which is what S5 (Smith,
Warrington, Linderman 2022) uses to run a diagonal SSM with time-varying (or constant)
discretisation in parallel over the sequence.

:func:`linear_scan` computes it with a chunked scan and no Python loop over the length:

1. the sequence is cut into chunks of ``T`` steps; inside every chunk a log-depth
   Hillis-Steele scan (``log2 T`` vectorised passes) gives the local states and the
   cumulative products of ``a``;
2. the chunk-end states are themselves a recurrence of length ``L / T``, scanned the
   same way (recursively);
3. each chunk adds its incoming carry times the cumulative product.

Work is O(L log T), memory O(L).  Autograd goes through a custom function whose backward
is the adjoint recurrence run in reverse, ``g_k = dx_k + conj(a_{k+1}) g_{k+1}``, again a
scan, so nothing but ``a`` and the outputs is kept for the backward pass (and double
backward works, since the backward itself calls :func:`linear_scan`).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor

#: chunk length of the log-depth (Hillis-Steele) chunk scan
CHUNK = 32
#: longest chunk of the rescaled (cumulative-sum) chunk scan
CHUNK_MAX = 128


def linear_scan(a: Tensor, b: Tensor, initial: Tensor | None = None, dim: int = 1,
                log_a: Tensor | None = None) -> Tensor:
    """All states of ``x_k = a_k * x_{k-1} + b_k`` along ``dim``, with ``x_{-1} = initial`` (or 0).

    Args:
        a: multipliers, broadcastable to ``b``; a size-1 ``dim`` means the same ``a`` at every step
            (e.g. (1, 1, P) for a time-invariant diagonal SSM).
        b: inputs (B, L, ...), real or complex.
        initial: the state before the first step, shaped like ``b`` without ``dim`` (broadcastable).
        dim: the sequence axis.
        log_a: a log of ``a`` (``exp(log_a) == a``, any branch), shaped like ``a``, when the caller has
            one (S5's ``Lambda dt``): the scan then takes no complex log of its own (an ``atan2`` per
            element).  A constant: gradients reach ``a`` only.
    Returns:
        ``x`` shaped like ``b`` (dtype promoted from ``a`` and ``b``).
    """
    dim = dim % b.dim()
    if a.dim() != b.dim():
        a = a.reshape((1,) * (b.dim() - a.dim()) + tuple(a.shape))
    if a.shape[dim] not in (1, b.shape[dim]):
        raise ValueError(f"a has length {a.shape[dim]} along dim {dim}; expected 1 or {b.shape[dim]}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if initial is not None:
        dtype = torch.promote_types(dtype, initial.dtype)
    if log_a is not None:
        if log_a.shape != a.shape:
            log_a = log_a.reshape(a.shape)
        log_a = _principal(log_a.detach().movedim(dim, -2).to(dtype))
    a, b = a.movedim(dim, -2).to(dtype), b.movedim(dim, -2).to(dtype)  # (..., L, F)
    if initial is None:
        x = _LinearScan.apply(a, b, log_a)
    else:
        # fold the initial state into the first input: b_0 += a_0 x_{-1}
        initial = initial.to(dtype).unsqueeze(dim).movedim(dim, -2)  # (..., 1, F)
        first = b[..., :1, :] + a[..., :1, :] * initial
        if first.shape != b[..., :1, :].shape:
            b = b.expand(*first.shape[:-2], *b.shape[-2:])
        x = _LinearScan.apply(a, torch.cat([first, b[..., 1:, :]], dim=-2), log_a)
    return x.movedim(-2, dim)


def _principal(log_a: Tensor) -> Tensor:
    """``log_a`` with its imaginary part brought into [-pi, pi): the angles :func:`complex_log` would give, so
    that the chunk scan's running sums of them stay as small (and as precise in float32)."""
    if not log_a.is_complex():
        return log_a
    return torch.complex(log_a.real, torch.remainder(log_a.imag + math.pi, 2 * math.pi) - math.pi)


def sequential_scan(a: Tensor, b: Tensor, initial: Tensor | None = None, dim: int = 1) -> Tensor:
    """Reference: the same recurrence as :func:`linear_scan` with a Python loop over ``dim``."""
    dim = dim % b.dim()
    if a.dim() != b.dim():
        a = a.reshape((1,) * (b.dim() - a.dim()) + tuple(a.shape))
    L = b.shape[dim]
    a_steps = a.unbind(dim) if a.shape[dim] == L else [a.select(dim, 0)] * L
    x = torch.zeros((), dtype=b.dtype, device=b.device) if initial is None else initial
    out = []
    for a_k, b_k in zip(a_steps, b.unbind(dim)):
        x = a_k * x + b_k
        out.append(x)
    return torch.stack(out, dim=dim)


class _LinearScan(torch.autograd.Function):
    """``x = scan(a, b)`` on (..., L, F) with its adjoint scan as the backward."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, log_a: Tensor | None = None) -> Tensor:
        x = _scan(a, b, log_a)
        ctx.save_for_backward(a, x, log_a)
        ctx.shapes = (a.shape, b.shape)
        return x

    @staticmethod
    def backward(ctx, grad_x: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        a, x, log_a = ctx.saved_tensors
        a_shape, b_shape = ctx.shapes
        L = b_shape[-2]
        # g_k = dx_k + conj(a_{k+1}) g_{k+1}: a forward scan over the reversed sequence
        shift = (lambda t: t) if a.shape[-2] == 1 else (lambda t: torch.cat([t[..., 1:, :], t[..., -1:, :]], dim=-2))
        a_next = shift(a).conj()
        log_next = None if log_a is None else shift(log_a).conj().flip(-2)
        g = linear_scan(a_next.flip(-2), grad_x.flip(-2), dim=-2, log_a=log_next).flip(-2)  # (..., L, F)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            # dL/da_k = g_k conj(x_{k-1}), x_{-1} = 0 (the initial state was folded into b_0)
            if a_shape[-2] == 1:
                grad_a = torch.linalg.vecdot(x[..., : L - 1, :], g[..., 1:, :], dim=-2).unsqueeze(-2)
            else:
                grad_a = torch.nn.functional.pad(g[..., 1:, :] * x[..., : L - 1, :].conj(), (0, 0, 1, 0))
            grad_a = _sum_to(grad_a, a_shape)
        if ctx.needs_input_grad[1]:
            grad_b = _sum_to(g, b_shape)
        return grad_a, grad_b, None


def complex_log(z: Tensor) -> Tensor:
    """Complex (or real) log through vectorised real kernels (complex log is scalar code on CPU)."""
    if not z.is_complex():
        return torch.log(z)
    re, im = z.real, z.imag
    return torch.complex(0.5 * torch.log(re.square() + im.square()), torch.atan2(im, re))


def _log_magnitude(z: Tensor) -> Tensor:
    """``complex_log(z).real`` without the angle (log of a real ``z`` as it is: NaN where negative)."""
    if not z.is_complex():
        return torch.log(z)
    return 0.5 * torch.log(z.real.square() + z.imag.square())


def complex_exp(z: Tensor) -> Tensor:
    """Complex (or real) exp through vectorised real kernels."""
    if not z.is_complex():
        return torch.exp(z)
    return torch.polar(torch.exp(z.real), z.imag)


def complex_expm1(z: Tensor) -> Tensor:
    """``exp(z) - 1`` through vectorised real kernels (complex expm1 is scalar code on CPU), accurate near 0:
    the real part is ``expm1(x) cos y - 2 sin^2(y / 2)`` (no ``cos y - 1`` cancellation)."""
    if not z.is_complex():
        return torch.expm1(z)
    x, y = z.real, z.imag
    return torch.complex(torch.expm1(x) * torch.cos(y) - 2 * torch.sin(y / 2).square(), torch.exp(x) * torch.sin(y))


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum ``t`` over the axes it was broadcast along to reach it from ``shape``."""
    return t.sum_to_size(shape) if t.shape != shape else t


#: largest exponent |log| the rescaled (cumulative-sum) chunk scan may reach; e^30 ~ 1e13 is safe in float32
RESCALE_LIMIT = 30.0
#: chunks shorter than this fall back to the log-depth (Hillis-Steele) chunk scan
MIN_RESCALED_CHUNK = 8


@torch.no_grad()
def _scan(a: Tensor, b: Tensor, log_a: Tensor | None = None) -> Tensor:
    """The chunked scan on (..., L, F) tensors, no autograd (see the module docstring).

    Inside a chunk, ``x_t = A_t * cumsum_s(b_s / A_s)`` with ``A_t = a_0 ... a_t`` costs a few
    in-place passes; it is exact algebra, and safe as long as ``|log A_t|`` stays below
    ``RESCALE_LIMIT``, so the chunk length is chosen from the strongest decay in ``a``.  When that
    would make chunks too short (``a`` near 0), the log-depth Hillis-Steele chunk scan is used.
    ``log_a``: a log of ``a`` with angles in [-pi, pi), if known (see :func:`linear_scan`).
    """
    L = b.shape[-2]
    full = 1 << max(0, math.ceil(math.log2(L)))  # one chunk covering everything
    if torch.compiler.is_compiling():  # a traced graph cannot branch on the data: the scan that is safe for any a
        return _chunked(a, b, min(CHUNK, full), _doubling_chunks)
    magnitude = _log_magnitude(a) if log_a is None else log_a.real
    decay = magnitude.abs().amax().item()  # largest |log |a_k||: |log A_t| <= (t + 1) decay
    if math.isfinite(decay):
        T = CHUNK_MAX if decay * CHUNK_MAX <= RESCALE_LIMIT else 1 << max(0, int(math.log2(RESCALE_LIMIT / decay)))
        T = min(T, full)
        if T >= MIN_RESCALED_CHUNK or T == full:
            return _chunked(a, b, T, _rescaled_chunks, log_a)
    return _chunked(a, b, min(CHUNK, full), _doubling_chunks)


def _chunked(a: Tensor, b: Tensor, T: int, within, log_a: Tensor | None = None) -> Tensor:
    """Split (..., L, F) into chunks of ``T``, scan within them, then propagate the chunk carries
    (``log_a``: passed on to ``within``, chunked like ``a``)."""
    L = b.shape[-2]
    constant = a.shape[-2] == 1
    Q = math.ceil(L / T)
    pad = Q * T - L
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    x = torch.nn.functional.pad(b.expand(*batch, *b.shape[-2:]), (0, 0, 0, pad))
    x = rearrange(x, "... (q t) f -> ... q t f", t=T).contiguous()  # (..., Q, T, F)
    def chunks(t: Tensor, one: float) -> Tensor:  # (..., L, F) -> (..., Q, T, F), padded with ``one``
        if constant:
            return t.unsqueeze(-3)  # (..., 1, 1, F)
        t = torch.nn.functional.pad(t.expand(*batch, *t.shape[-2:]), (0, 0, 0, pad), value=one)
        return rearrange(t, "... (q t) f -> ... q t f", t=T).contiguous()

    a_chunks = chunks(a, 1.0)
    log_chunks = None if log_a is None else chunks(log_a, 0.0)
    cum = within(a_chunks, x, log_chunks)  # x <- local states; cum: products a_0..a_t within each chunk
    if Q > 1:
        # carries: the chunk-end states, themselves a recurrence over the Q chunks: (..., Q, F)
        carry = _scan(cum[..., -1, :], x[..., -1, :])
        incoming = carry[..., :-1, None, :]  # state entering chunks 1..Q-1, (..., Q-1, 1, F)
        x[..., 1:, :, :].addcmul_(cum if constant else cum[..., 1:, :, :], incoming)
    x = rearrange(x, "... q t f -> ... (q t) f")
    return x[..., :L, :]


def _rescaled_chunks(a: Tensor, x: Tensor, log_a: Tensor | None = None) -> Tensor:
    """In place: ``x`` (..., Q, T, F) becomes the within-chunk states; returns the cumulative products.

    ``a`` is (..., Q, T, F), or (..., 1, 1, F) for a constant multiplier; ``log_a`` its log if known.
    """
    T = x.shape[-2]
    log = complex_log(a) if log_a is None else log_a
    if a.shape[-2] == 1:
        steps = torch.arange(T, device=x.device, dtype=x.real.dtype)[:, None]  # (T, 1)
        log_cum = (steps + 1) * log  # (..., 1, T, F)
    else:
        log_cum = log.cumsum(-2) if log_a is not None else log.cumsum_(-2)  # (..., Q, T, F)
    cum = complex_exp(log_cum)
    if cum.is_complex():  # 1 / A_s = conj(A_s) / |A_s|^2: one real exp instead of another polar (exp, cos, sin)
        x.mul_(cum.conj()).mul_(torch.exp(log_cum.real * -2))  # b_s / A_s
    else:
        x.div_(cum)  # b_s / A_s
    x.cumsum_(-2)
    x.mul_(cum)  # A_t * sum_{s<=t} b_s / A_s
    return cum


def _doubling_chunks(a: Tensor, x: Tensor, log_a: Tensor | None = None) -> Tensor:
    """As :func:`_rescaled_chunks` with a log-depth Hillis-Steele scan (safe for any ``a``; no logs)."""
    T = x.shape[-2]
    if a.shape[-2] == 1:
        power = a  # a^s at shift s
        shift = 1
        while shift < T:
            x[..., shift:, :] += power * x[..., :-shift, :]
            power = power * power
            shift *= 2
        return torch.cumprod(a.expand(*a.shape[:-2], T, a.shape[-1]), dim=-2)  # a^(t+1): (..., 1, T, F)
    cum = a.clone()
    shift = 1
    while shift < T:
        # (A_t, x_t) <- (A_t A_{t-s}, A_t x_{t-s} + x_t), the old A_t in both
        x[..., shift:, :] += cum[..., shift:, :] * x[..., :-shift, :]
        cum[..., shift:, :] *= cum[..., :-shift, :].clone()
        shift *= 2
    return cum
