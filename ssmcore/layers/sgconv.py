"""SGConv: Structured Global Convolution (Li, Cai, Zhang, Chen, Dey 2022, "What Makes Convolutional
Models Great on Long Sequence Modeling?").

The kernel is built from S sub-kernels, each a learned vector ``w_i`` of ``d`` taps (``d = d_state``)::

    k = (1 / Z) concat_i( alpha^i * upsample_{2^max(i-1, 0)}(w_i) ),   i = 0 .. S-1

so sub-kernel 0 covers lags ``[0, d)``, sub-kernel 1 ``[d, 2d)``, sub-kernel ``i >= 1`` covers
``[d 2^{i-1}, d 2^i)`` with its ``d`` taps stretched by ``2^{i-1}``: the kernel spans
``K = d 2^{S-1}`` lags with ``S d`` parameters, and the decay ``alpha^i`` (``alpha = 1/2`` by default)
biases it towards recent inputs.  Upsampling is linear interpolation (``F.interpolate(mode="linear",
align_corners=False)``), which defines a continuous kernel: sub-kernel ``i`` at local time ``tau``
reads its taps at coordinate ``(tau + 1/2) / f_i - 1/2`` (clamped to ``[0, d-1]``), ``f_i = 2^max(i-1,0)``.
The normalisation ``Z`` is the paper's: the kernel's norm at initialisation (per feature and
channel), a fixed buffer from then on, so a layer's output starts at the input's scale for any S.

``S`` is the number of scales needed to cover ``l_max`` (``ceil(log2(l_max / d)) + 1``) unless
``n_scales`` is given.  Beyond ``K`` lags the kernel is zero (a sequence longer than ``K`` still
runs: each output sees the last ``K`` inputs).

``rate``: the kernel is read as a continuous function of time in units of the training grid's
step and sampled every ``rate`` steps (times ``rate``: a step of ``rate`` training steps carries
``rate`` times the input, as for the state-space layers), so rate 2 halves the taps and rate 1/2
doubles them.

**Stepping.** SGConv has no finite-state recurrence, so ``has_recurrence`` is False: there is no
:meth:`recurrence` and the fused steppers of the apps treat it as an opaque module.  ``can_step``
is True because its ``step()`` is exact: an FIR step over a ring buffer of the last ``K_rate`` inputs
(``K_rate = ceil(K / rate)``), ``O(K)`` work per step and feature.  The state is
``(buffer (B, H, K_rate), position)`` -- ``position`` a 0-d long tensor, the slot of the newest
input -- shared by ``step()`` and chunked ``forward(x, state)``; ``default_state(B, rate=r)``
sizes the buffer for rate ``r`` (rate 1 by default; a state sized for one rate serves every rate
whose kernel is no longer).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ssmcore.fftconv import fftconv
from ssmcore.layers.base import ConvSSMLayer


class SGConv(ConvSSMLayer):
    """SGConv layer: multi-scale, decaying global convolution + D skip + activation + dropout + output projection.

    ``d_state`` is ``d``, the taps per sub-kernel (S d parameters per feature and channel, no state
    dimension); the kernel spans ``K = d 2^{S-1}`` lags and the recurrent state is the last ``K``
    inputs, (B, H, K) (see the module docstring).

    Args:
        l_max: the length the kernel must cover; sets ``n_scales`` when that is not given.
        n_scales: S, the number of sub-kernels (overrides ``l_max``).
        decay: alpha, the weight ratio of successive sub-kernels (0 < alpha <= 1).
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``,
            ``channels``, ``bidirectional``, ``dropout``, ``activation``, ``postact``).
    """

    can_step = True  # exact step() by FIR
    has_recurrence = False  # ... but no Recurrence of its own (see the module docstring)
    ssm_parameter_names = ("weight",)

    def __init__(
        self,
        d_model: int,
        *,
        l_max: int = 16384,
        n_scales: int | None = None,
        decay: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, **kwargs)
        d = self.d_state
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if n_scales is None:
            if l_max < 1:
                raise ValueError(f"l_max must be positive, got {l_max}")
            n_scales = 1 + math.ceil(math.log2(l_max / d)) if l_max > d else 1  # smallest S with K >= l_max
        if n_scales < 1:
            raise ValueError(f"n_scales must be positive, got {n_scales}")
        self.n_scales, self.decay = n_scales, decay
        self.span = d * 2 ** (n_scales - 1) if n_scales > 1 else d  # K
        self.weight = nn.Parameter(torch.randn(self.n_kernels, d_model, n_scales, d))  # (n_kernels, H, S, d)
        with torch.no_grad():
            raw = self._raw_kernel(self.span, 1.0)  # (n_kernels, H, K)
            norm = raw.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.register_buffer("kernel_norm", norm)  # Z, fixed at initialisation (saved with the weights)

    # ------------------------------------------------------------------ kernel
    def taps(self, rate: float = 1.0) -> int:
        """K_rate = ceil(K / rate): the number of nonzero lags at ``rate``."""
        return max(1, math.ceil(self.span / rate - 1e-9))

    def _interpolation(self, n: int, rate: float, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For lags ``0 .. n-1`` sampled at ``rate``: flat indices of the two taps (into S*d), the weight of
        the upper one, and each lag's ``alpha^i`` (zero beyond the kernel's span)."""
        d = self.d_state
        t = torch.arange(n, dtype=torch.float64, device=device) * rate  # continuous lag
        scale = torch.where(t < d, torch.zeros_like(t), torch.floor(torch.log2(t.clamp_min(d) / d)) + 1)
        scale = scale.clamp(max=self.n_scales - 1)
        start = torch.where(scale == 0, torch.zeros_like(t), d * 2 ** (scale - 1))
        stretch = 2 ** (scale - 1).clamp_min(0)
        coord = ((t - start + 0.5) / stretch - 0.5).clamp(0, d - 1)
        lo = coord.floor().clamp(max=d - 1)
        frac = coord - lo
        hi = (lo + 1).clamp(max=d - 1)
        inside = t < self.span
        gain = torch.where(inside, self.decay ** scale, torch.zeros_like(t))
        base = scale * d
        return (base + lo).long(), (base + hi).long(), frac, gain

    def _raw_kernel(self, L: int, rate: float) -> Tensor:
        """The unnormalised kernel at ``rate``, (n_kernels, H, L), times ``rate``."""
        n = min(L, self.taps(rate))
        lo, hi, frac, gain = self._interpolation(n, rate, self.weight.device)
        w = self.weight.flatten(-2)  # (n_kernels, H, S d)
        frac, gain = frac.to(w.dtype), gain.to(w.dtype)
        k = (w[..., lo] * (1 - frac) + w[..., hi] * frac) * (gain * rate)  # (n_kernels, H, n)
        if n < L:
            k = torch.nn.functional.pad(k, (0, L - n))
        return k

    def ssm_kernel(self, L: int, rate: float = 1.0) -> Tensor:
        return self._raw_kernel(L, rate) / self.kernel_norm.to(self.weight.dtype)

    # ------------------------------------------------------------------ state
    def default_state(
        self, batch_size: int, device: torch.device | str | None = None, rate: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """``(zeros (B, H, K_rate), position)``: no past inputs; ``position`` is the last slot."""
        device = device or self.weight.device
        n = self.taps(rate)
        buffer = torch.zeros(batch_size, self.d_model, n, dtype=self.weight.dtype, device=device)
        return buffer, torch.tensor(n - 1, device=device)

    def _ordered(self, state: tuple[Tensor, Tensor], rate: float) -> Tensor:
        """The state's past inputs oldest first: (B, H, N)."""
        buffer, position = state
        N = buffer.shape[-1]
        if N < self.taps(rate):
            raise ValueError(
                f"this state holds {N} past inputs but the kernel at rate {rate} has {self.taps(rate)} taps; "
                f"start from default_state(batch_size, rate={rate})"
            )
        order = (position + 1 + torch.arange(N, device=buffer.device)) % N
        return buffer.index_select(-1, order)

    def state_forward(self, u: Tensor, state: tuple[Tensor, Tensor], rate: float = 1.0) -> tuple[Tensor, Any]:
        past = self._ordered(state, rate).to(u.dtype)  # (B, H, N)
        B, H, N = past.shape
        L = u.shape[-1]
        k = self.kernel(N + L, rate)[: self.channels]  # (C, H, N + L)
        # the past's share of y_l = sum_m k[l + m] past[N - m]: a causal convolution of [past, 0] read after N
        padded = torch.cat([past, past.new_zeros(B, H, L)], dim=-1)
        y = fftconv(padded, k)[..., N:]  # (B, C, H, L)
        history = torch.cat([past, u.to(past.dtype)], dim=-1)[..., -N:]
        return y, (history.contiguous(), torch.tensor(N - 1, device=u.device))

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor], rate: float = 1.0) -> tuple[Tensor, Any]:
        """Exact FIR step: ``x_t`` (B, H) -> ``(y_t (B, H), next_state)``; O(K) per feature (see the module
        docstring).  The state is not modified in place."""
        if self.bidirectional:
            raise RuntimeError("step() needs a causal layer: this one was built with bidirectional=True")
        buffer, position = state
        N = buffer.shape[-1]
        if N < self.taps(rate):
            self._ordered(state, rate)  # raises the sizing error
        position = (position + 1) % N
        buffer = buffer.index_copy(-1, position.reshape(1), x_t.to(buffer.dtype).unsqueeze(-1))
        k = self.kernel(N, rate)[: self.channels]  # (C, H, N)
        k = torch.cat([k[..., :1] + self.D[:, :, None].to(k.dtype), k[..., 1:]], dim=-1)  # D skip at lag 0
        lags = (position - torch.arange(N, device=buffer.device)) % N  # slot m holds the input of lag lags[m]
        y = torch.einsum("bhn,chn->bch", buffer, k.index_select(-1, lags).to(buffer.dtype))
        y = y.to(x_t.dtype)
        return self._post(y.flatten(1)), (buffer, position)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_scales={self.n_scales}, span={self.span}, decay={self.decay}"
