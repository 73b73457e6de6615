"""Causal, bidirectional and N-D convolution by FFT, zero-padded (no circular wrap).

Kernels are given per axis either at the input length ``S`` (causal: lags ``0..S-1``)
or at ``2S`` (two-sided, see :func:`two_sided`).  The FFT is taken at ``2S`` on each
axis, which is enough for the linear (not circular) convolution of length-``S`` inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def _compute_dtype(u: Tensor, k: Tensor) -> torch.dtype:
    """float32 at least (half-precision FFTs lose too much), float64 when either input is."""
    return torch.promote_types(torch.promote_types(u.dtype, k.dtype), torch.float32)


def two_sided(k_forward: Tensor, k_backward: Tensor, dim: int = -1) -> Tensor:
    """Combine a causal and an anti-causal kernel of length L into one of length 2L.

    The result convolves as ``y[t] = sum_{m>=0} k_forward[m] u[t-m] + sum_{m>=0} k_backward[m] u[t+1+m]``:
    ``k_backward`` is the causal kernel run over the reversed sequence, shifted by one
    step so that the current input is counted once (by ``k_forward``).
    """
    k_forward = k_forward.movedim(dim, -1)
    k_backward = k_backward.movedim(dim, -1)
    L = k_forward.shape[-1]
    k = F.pad(k_forward, (0, L)) + F.pad(k_backward.flip(-1), (L, 0))
    return k.movedim(-1, dim)


#: complex elements of one block's spectrum at 2L: the FFT convolution runs over blocks of features
#: of about this size (4 MiB in complex64), so its transients (padded inputs, spectra, the inverse
#: FFT at 2L) are a block's, not the whole (B, C, H, 2L) tensors' (4-6 times the output's bytes)
BLOCK_ELEMENTS = 1 << 19


def feature_blocks(H: int, per_feature: int, block_elements: int | None = None) -> list[tuple[int, int]]:
    """``[(h0, h1), ...]`` covering ``range(H)``, each holding at most ``block_elements`` (default
    :data:`BLOCK_ELEMENTS`) elements when one feature takes ``per_feature``; one block while tracing."""
    if torch.compiler.is_compiling():
        return [(0, H)]
    size = max(1, (block_elements or BLOCK_ELEMENTS) // max(per_feature, 1))
    return [(h0, min(h0 + size, H)) for h0 in range(0, H, size)]


class _FFTConv(torch.autograd.Function):
    """``irfft(rfft(u, 2L) * rfft(k, 2L))[:L]`` with a backward made of real FFTs only.

    The gradient of a (zero-padded, circular) convolution is a correlation with the same
    spectra: ``du = irfft(sum_c G conj(K))[:L]`` and ``dk = irfft(sum_b G conj(U))[:Lk]``, with
    ``G = rfft(grad, 2L)``.  Autograd's own backward of ``rfft`` builds a zero-filled full
    spectrum and runs a complex FFT of twice the size: on the CPU that was ~45% of a training
    step of a raw-audio classifier.  Only the real inputs ``u`` and ``k`` are saved (the spectra
    at ``2L`` are complex and twice as long: 4x the bytes), and the backward recomputes the one
    spectrum each gradient needs.  Forward and backward run over blocks of features
    (:func:`feature_blocks`): features are independent, so every value is the same as in one
    pass, and the spectra, padded copies and inverse FFTs at 2L exist one block at a time; the
    output (and ``du``) are written contiguous at length L, not kept as views of 2L buffers.
    """

    @staticmethod
    def forward(ctx, u: Tensor, k: Tensor, dtype: torch.dtype) -> Tensor:
        B, H, L = u.shape
        C = k.shape[0]
        n = 2 * L
        y = torch.empty((B, C, H, L), dtype=dtype, device=u.device)
        for h0, h1 in feature_blocks(H, B * C * (L + 1)):
            u_f = torch.fft.rfft(u[:, h0:h1].to(dtype), n=n).unsqueeze(1)  # (B, 1, h, n/2+1)
            k_f = torch.fft.rfft(k[:, h0:h1].to(dtype), n=n)  # (C, h, n/2+1)
            # the product in place of whichever spectrum has its shape (one spectrum less alive)
            if C == 1:
                prod = u_f.mul_(k_f)
            elif B == 1:
                prod = k_f.mul_(u_f[0]).unsqueeze(0)
            else:
                prod = u_f * k_f  # (B, C, h, n/2+1)
            del u_f, k_f
            y[:, :, h0:h1] = torch.fft.irfft(prod, n=n)[..., :L]
            del prod
        ctx.save_for_backward(u, k)
        ctx.dtype = dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        u, k = ctx.saved_tensors
        dtype = ctx.dtype
        (B, H, L), (C, _, Lk) = u.shape, k.shape
        n = 2 * L
        du = torch.empty_like(u) if ctx.needs_input_grad[0] else None
        dk = torch.empty_like(k) if ctx.needs_input_grad[1] else None
        for h0, h1 in feature_blocks(H, B * C * (L + 1)):
            g_f = torch.fft.rfft(grad[:, :, h0:h1].to(dtype), n=n)  # (B, C, h, n/2+1)
            if du is not None:
                # the kernel's spectrum is the small one
                prod = g_f * torch.fft.rfft(k[:, h0:h1].to(dtype), n=n).conj_physical_()
                prod = prod[:, 0] if C == 1 else prod.sum(1)
                du[:, h0:h1] = torch.fft.irfft(prod, n=n)[..., :L]
                del prod
            if dk is not None:  # g_f is not needed again
                prod = g_f.mul_(torch.fft.rfft(u[:, h0:h1].to(dtype), n=n).conj_physical_().unsqueeze(1))
                prod = prod[0] if B == 1 else prod.sum(0)
                dk[:, h0:h1] = torch.fft.irfft(prod, n=n)[..., :Lk]
                del prod
            del g_f
        return du, dk, None


def fftconv(u: Tensor, k: Tensor) -> Tensor:
    """1-D convolution of ``u`` (B, H, L) with kernels ``k`` (C, H, L or 2L) -> (B, C, H, L).

    Computed in float32 at least, whatever the input dtype (safe under autocast); the backward
    uses real FFTs only (see :class:`_FFTConv`).
    """
    L = u.shape[-1]
    if k.shape[-1] not in (L, 2 * L):
        raise ValueError(f"kernel length {k.shape[-1]} must be L={L} (causal) or 2L (two-sided)")
    return _FFTConv.apply(u, k, _compute_dtype(u, k))


class _FFTConvND(torch.autograd.Function):
    """N-D :class:`_FFTConv`: ``irfftn(rfftn(u, 2S) * rfftn(k, 2S))`` cropped to ``S``, over blocks of
    features, keeping only the real ``u`` and ``k`` for the backward (autograd of ``rfftn`` kept both
    complex spectra at 2S per axis: 2^N times the bytes of ``u`` each) and recomputing the one
    spectrum each gradient needs: ``du = irfftn(sum_c G conj(K))``, ``dk = irfftn(sum_b G conj(U))``,
    cropped to ``S`` and to the kernel's extent."""

    @staticmethod
    def forward(ctx, u: Tensor, k: Tensor, dtype: torch.dtype) -> Tensor:
        (B, H, *spatial), C = u.shape, k.shape[0]
        sizes = [2 * s for s in spatial]
        dims = tuple(range(-len(spatial), 0))
        crop = (..., *[slice(0, s) for s in spatial])
        per_feature = B * C * math.prod(sizes[:-1]) * (sizes[-1] // 2 + 1)
        y = torch.empty((B, C, H, *spatial), dtype=dtype, device=u.device)
        for h0, h1 in feature_blocks(H, per_feature):
            u_f = torch.fft.rfftn(u[:, h0:h1].to(dtype), s=sizes, dim=dims).unsqueeze(1)
            k_f = torch.fft.rfftn(k[:, h0:h1].to(dtype), s=sizes, dim=dims)
            prod = u_f.mul_(k_f) if C == 1 else u_f * k_f
            del u_f, k_f
            y[:, :, h0:h1] = torch.fft.irfftn(prod, s=sizes, dim=dims)[crop]
            del prod
        ctx.save_for_backward(u, k)
        ctx.dtype, ctx.per_feature = dtype, per_feature
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        u, k = ctx.saved_tensors
        dtype = ctx.dtype
        (B, H, *spatial), C = u.shape, k.shape[0]
        sizes = [2 * s for s in spatial]
        dims = tuple(range(-len(spatial), 0))
        crop_u = (..., *[slice(0, s) for s in spatial])
        crop_k = (..., *[slice(0, s) for s in k.shape[2:]])
        du = torch.empty_like(u) if ctx.needs_input_grad[0] else None
        dk = torch.empty_like(k) if ctx.needs_input_grad[1] else None
        for h0, h1 in feature_blocks(H, ctx.per_feature):
            g_f = torch.fft.rfftn(grad[:, :, h0:h1].to(dtype), s=sizes, dim=dims)  # (B, C, h, ...)
            if du is not None:
                prod = g_f * torch.fft.rfftn(k[:, h0:h1].to(dtype), s=sizes, dim=dims).conj_physical_()
                prod = prod[:, 0] if C == 1 else prod.sum(1)
                du[:, h0:h1] = torch.fft.irfftn(prod, s=sizes, dim=dims)[crop_u]
                del prod
            if dk is not None:
                u_f = torch.fft.rfftn(u[:, h0:h1].to(dtype), s=sizes, dim=dims).conj_physical_().unsqueeze(1)
                prod = g_f.mul_(u_f)
                del u_f
                prod = prod[0] if B == 1 else prod.sum(0)
                dk[:, h0:h1] = torch.fft.irfftn(prod, s=sizes, dim=dims)[crop_k]
                del prod
            del g_f
        return du, dk, None


def fftconv_nd(u: Tensor, k: Tensor) -> Tensor:
    """N-D convolution: ``u`` (B, H, *S) with ``k`` (C, H, *K) -> (B, C, H, *S).

    Each kernel axis has length ``S_i`` (causal along that axis) or ``2 S_i`` (two-sided).  Computed in
    float32 at least; the backward keeps only the real ``u`` and ``k`` (see :class:`_FFTConvND`).
    """
    spatial = u.shape[2:]
    ndim = len(spatial)
    if k.dim() != ndim + 2:
        raise ValueError(f"kernel has {k.dim() - 2} spatial axes, input has {ndim}")
    for s, ks in zip(spatial, k.shape[2:]):
        if ks not in (s, 2 * s):
            raise ValueError(f"kernel axis length {ks} must be {s} (causal) or {2 * s} (two-sided)")
    return _FFTConvND.apply(u, k, _compute_dtype(u, k))
