"""Vandermonde and Cauchy kernels for diagonal and DPLR state-space models.

Both are computed without ever building an (H, N, L) tensor.

* :func:`vandermonde_kernel` evaluates ``K[l] = Re sum_n W_n z_n^l`` with a two-level
  split ``l = q T + p`` (``T ~ sqrt(L)``): ``K[q, p] = Re sum_n (W_n z_n^{qT}) z_n^p``.
  That is one real matrix product of a (Q, 2N) and a (2N, T) matrix per channel, so the
  work runs in BLAS and the memory is O(H N sqrt(L)).  Every power is computed as
  ``exp(l log z)`` directly, so no error accumulates along L.
* :func:`vandermonde_transpose` is its adjoint, ``x_n = sum_l u_l z_n^l`` -- the state that a
  diagonal recurrence reaches after consuming a sequence.
* :func:`cauchy_kernel` evaluates ``sum_n v_n / (w - lambda_n)`` in chunks over ``w``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _split(L: int) -> tuple[int, int]:
    """(Q, T) with Q * T >= L and T ~ sqrt(L)."""
    T = max(1, math.ceil(math.sqrt(L)))
    return math.ceil(L / T), T


def _powers(log_z: Tensor, exponents: Tensor) -> Tensor:
    """``exp(e * log_z)`` for every exponent: (..., N) x (E,) -> (..., E, N)."""
    return torch.exp(exponents.to(log_z.real.dtype)[:, None] * log_z[..., None, :])


def vandermonde_kernel(weights: Tensor, log_z: Tensor, L: int) -> Tensor:
    """``K[..., h, l] = Re sum_n weights[..., h, n] * exp(l * log_z[h, n])`` for ``l < L``.

    Args:
        weights: (..., H, N) complex.
        log_z: (H, N) complex, the log of the discrete poles (``dt * A`` for ZOH).
        L: kernel length.
    Returns:
        (..., H, L) real.
    """
    Q, T = _split(L)
    H, N = log_z.shape
    batch = weights.shape[:-2]
    rdtype = log_z.real.dtype
    steps_q = torch.arange(Q, device=log_z.device) * T
    steps_p = torch.arange(T, device=log_z.device)
    coarse = _powers(log_z, steps_q)  # (H, Q, N)
    fine = _powers(log_z, steps_p)  # (H, T, N)
    W = weights.reshape(-1, H, 1, N) * coarse  # (B, H, Q, N)
    W = torch.cat([W.real, -W.imag], dim=-1)  # (B, H, Q, 2N)
    W = W.transpose(0, 1).reshape(H, -1, 2 * N)  # (H, B*Q, 2N)
    F = torch.cat([fine.real, fine.imag], dim=-1).transpose(-1, -2)  # (H, 2N, T)
    K = torch.bmm(W.to(rdtype), F)  # (H, B*Q, T)
    K = K.reshape(H, -1, Q * T)[..., :L].transpose(0, 1)  # (B, H, L)
    return K.reshape(*batch, H, L)


def vandermonde_transpose(u: Tensor, log_z: Tensor) -> Tensor:
    """``x[..., h, n] = sum_l u[..., h, l] * exp(l * log_z[h, n])``.

    Args:
        u: (..., H, L) real.
        log_z: (H, N) complex.
    Returns:
        (..., H, N) complex.
    """
    H, N = log_z.shape
    L = u.shape[-1]
    batch = u.shape[:-2]
    Q, T = _split(L)
    u = torch.nn.functional.pad(u, (0, Q * T - L)).reshape(-1, H, Q, T)  # (B, H, Q, T)
    u = u.transpose(0, 1).reshape(H, -1, T)  # (H, B*Q, T)
    fine = _powers(log_z, torch.arange(T, device=u.device))  # (H, T, N)
    F = torch.cat([fine.real, fine.imag], dim=-1)  # (H, T, 2N)
    partial = torch.bmm(u.to(F.dtype), F)  # (H, B*Q, 2N)
    partial = torch.complex(partial[..., :N], partial[..., N:]).reshape(H, -1, Q, N)
    coarse = _powers(log_z, torch.arange(Q, device=u.device) * T)  # (H, Q, N)
    x = (partial * coarse[:, None]).sum(dim=2)  # (H, B, N)
    return x.transpose(0, 1).reshape(*batch, H, N)


def cauchy_kernel(v: Tensor, w: Tensor, lam: Tensor, chunk: int = 1024) -> Tensor:
    """``out[..., h, k] = sum_n v[..., h, n] / (w[h, k] - lam[h, n])``, chunked over ``k``.

    Args:
        v: (..., H, N) complex numerators (a leading batch, e.g. the four Woodbury terms).
        w: (H, K) complex evaluation points.
        lam: (H, N) complex poles.
        chunk: evaluation points per chunk; memory is O(H N chunk).
    Returns:
        (..., H, K) complex.
    """
    outs = []
    for start in range(0, w.shape[-1], chunk):
        r = 1.0 / (w[:, start : start + chunk, None] - lam[:, None, :])  # (H, k, N)
        outs.append(torch.einsum("...hn,hkn->...hk", v, r))
    return torch.cat(outs, dim=-1)
