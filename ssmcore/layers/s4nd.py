"""S4ND: multidimensional state spaces for images and videos (Nguyen, Goel, Gu et al. 2022).

"S4ND: Modeling Images and Videos as Multidimensional Signals Using State Spaces".  The
N-D SSM factorises into one 1-D diagonal SSM per axis (Sec. 3.1-3.2): axis ``i`` has its
own step size, state matrix ``A_i``, ``B_i`` and ``C_i`` and gives a 1-D kernel
``k_i[l] = 2 Re sum_n C_in dB_in dA_in^l`` (the S4D kernel); the N-D kernel is their outer
product ``K[l_1, ..., l_D] = prod_i k_i[l_i]`` (a rank-1, separable kernel per channel and
feature), applied by an N-D FFT convolution.

Resolution change (Sec. 3.3): the kernel is a sampled continuous signal, so input on a
finer grid runs with a smaller step, ``rate = old_size / new_size`` per axis (a layer
trained at 14x14 runs on 28x28 with ``rate=(0.5, 0.5)``).  Bandlimiting (Sec. 3.3) zeroes
the modes that would alias: mode ``n`` of axis ``i`` oscillates at
``|Im(dt_i A_in)| / (2 pi)`` cycles per sample; it is kept only if that is at most
``bandlimit / 2`` (``bandlimit=1`` keeps everything up to the Nyquist frequency 0.5).  The
mask uses the step after ``rate`` when ``rate > 1``, so a coarser grid masks more modes; on a
finer grid (``rate < 1``) it stays the mask of rate 1: the modes masked in training never
received a gradient (their ``C`` is still the random init), and a finer grid must sample the
same continuous kernel the model learned, not let those modes back in.

Init: ``C`` is complex normal as in S4D, then scaled so that every axis kernel has unit l2 norm
over ``C_NORM_LENGTH`` taps (see ``S4ND._normalise_C``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from ssmcore.fftconv import fftconv_nd, two_sided
from ssmcore.init import DIAGONAL_INITS, diagonal_init, inverse_real_transform, log_dt_init, real_transform
from ssmcore.kernels import vandermonde_kernel
from ssmcore.layers.base import SSMLayer, axis_flags, axis_rates
from ssmcore.layers.s4d import DISCRETIZATIONS, discretize_diagonal

_AXIS_LETTERS = "ijk"
#: grid size over which the init scales each axis kernel to unit norm (see ``S4ND._normalise_C``)
C_NORM_LENGTH = 32


class S4ND(SSMLayer):
    """S4ND layer: separable N-D diagonal SSM + D skip + activation + dropout + output projection.

    Input and output are channels last: ``x`` (B, *spatial, H) with ``len(spatial) == dim``
    (1, 2 or 3).  ``d_state`` is the real state size N *per axis*: each axis keeps
    N // 2 complex modes, one of each conjugate pair.  ``kernel(shape)`` is
    (channels, H, *K) with ``K_i = S_i`` on a causal axis and ``2 S_i`` on a bidirectional
    one (see :func:`ssmcore.fftconv.two_sided`).

    The layer is a convolution over a whole grid: there is no recurrent state, so passing
    ``state`` to ``forward``, ``step()`` and ``default_state()`` raise errors.

    Args:
        d_model: features H.
        d_state: real state size N per axis (N // 2 complex modes per axis).
        dim: number of spatial axes (1, 2 or 3).
        channels: output channels per feature C.
        bidirectional: one bool for every axis, or one per axis; a bidirectional axis has a
            second (anti-causal) ``C`` and a two-sided kernel.
        dropout: dropout after the activation.
        init: ``lin``, ``inv``, ``legs``, ``real`` or ``rand`` (see :func:`ssmcore.init.diagonal_init`).
        disc: ``zoh`` or ``bilinear``.
        dt_min, dt_max: range of the log-uniform step-size init (drawn per axis and feature).
        bandlimit: keep only modes at or below ``bandlimit / 2`` cycles per sample (in (0, 1]);
            None keeps all.
        real_transform: ``exp``/``softplus`` keep Re A < 0; ``none`` leaves it free.
        align_rate: at ``rate != 1`` keep the half-step offset of the rate-1 kernel (see :meth:`discrete`);
            off by default, where ``rate`` only rescales the step.
        **kwargs: the other shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``,
            ``channels``, ``dropout``, ``activation``, ``postact``); ``bidirectional`` is S4ND's own (per axis).

    Without autograd the N-D kernel is cached per shape and rate while the parameters are unchanged
    (:meth:`ssmcore.layers.base.SSMLayer.cached`), so zero-shot evaluation at a new resolution
    computes it once.
    """

    ssm_parameter_names = ("log_dt", "A_real", "A_imag", "B")

    def __init__(
        self,
        d_model: int,
        *,
        dim: int = 2,
        bidirectional: bool | Sequence[bool] = True,
        init: str = "legs",
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bandlimit: float | None = None,
        real_transform: str = "exp",
        align_rate: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, bidirectional=False, **kwargs)
        d_state, channels = self.d_state, self.channels
        if dim not in (1, 2, 3):
            raise ValueError(f"S4ND supports dim 1, 2 or 3, got {dim}")
        bidirectional = axis_flags(bidirectional, dim)
        if init not in DIAGONAL_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(DIAGONAL_INITS)}")
        if disc not in DISCRETIZATIONS:
            raise ValueError(f"unknown disc {disc!r}; choose one of {', '.join(DISCRETIZATIONS)}")
        if bandlimit is not None and not 0 < bandlimit <= 1:
            raise ValueError(f"bandlimit must be in (0, 1] (1 = Nyquist) or None, got {bandlimit}")
        self.dim, self.disc, self.transform, self.bandlimit = dim, disc, real_transform, bandlimit
        self.align_rate = align_rate
        self.bidirectional = bidirectional
        H, M = d_model, d_state // 2
        A, B = diagonal_init(init, d_state)  # (M,) complex128 each
        self.log_dt = nn.Parameter(
            torch.stack([log_dt_init(H, dt_min, dt_max) for _ in range(dim)]).float()
        )  # (D, H)
        self.A_real = nn.Parameter(
            inverse_real_transform(A.real, real_transform).float().repeat(dim, H, 1)
        )  # (D, H, M)
        self.A_imag = nn.Parameter(A.imag.float().repeat(dim, H, 1))  # (D, H, M)
        self.B = nn.Parameter(torch.view_as_real(B.to(torch.complex64)).repeat(dim, H, 1, 1))  # (D, H, M, 2)
        # axis i: (channels, H, M, 2), or (2 channels, H, M, 2) -- forward then backward -- if bidirectional
        self.C = nn.ParameterList(
            nn.Parameter(
                torch.view_as_real(torch.randn(channels * (2 if b else 1), H, M, dtype=torch.complex64))
            )
            for b in bidirectional
        )
        self._normalise_C(C_NORM_LENGTH)

    @torch.no_grad()
    def _normalise_C(self, length: int) -> None:
        """Scale the random ``C`` of every axis so that each (channel, feature) axis kernel has unit
        l2 norm over ``length`` taps at rate 1 (both directions together if bidirectional; after the
        bandlimit mask, so that a bandlimited layer starts from kernels as large as an unlimited one).

        With unscaled complex-normal ``C`` (the S4D init) the 1-D kernels are large -- the LegS
        ``B`` has entries in the hundreds -- and the N-D kernel is their product, so a 16x16
        image gave SSM outputs with std ~1e4 at ``d_state=64``.  Normalised, white unit-variance
        input on a ``length``-sized grid gives SSM outputs of std of order 1 (about 0.5) whatever ``dim``.
        """
        for axis in range(self.dim):
            log_dA, dB, C = self.discrete(axis)
            k = 2 * vandermonde_kernel(C * dB, log_dA, length)  # (n, H, L)
            k = rearrange(k, "(d c) h l -> c h (d l)", c=self.channels)  # both directions of a channel
            norm = k.norm(dim=-1).clamp_min(1e-12)  # (C, H)
            scale = norm.repeat(2 if self.bidirectional[axis] else 1, 1)  # (n, H)
            self.C[axis].div_(scale[..., None, None])

    # ----------------------------------------------------------------- the SSM
    def _rates(self, rate: float | Sequence[float]) -> tuple[float, ...]:
        return axis_rates(rate, self.dim)

    def discrete(self, axis: int, rate: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """``(log dA (H, M), dB (H, M), C (n, H, M))`` of one axis at ``rate``; masked modes have C = 0.

        With ``align_rate``: the discrete kernel ``k[l] = C dA^l dB`` answers input sample ``t - l``
        with the continuous kernel over ``[l, l + 1)`` steps, so the SSM output lags the D skip by
        half a step -- a fixed distance at the training grid, half of it on a grid twice as fine.
        At ``rate`` r the forward ``C`` is multiplied by ``exp(dt A (1 - r) / 2)`` (``dt`` of rate 1)
        and the backward one by its inverse, which moves the kernel by the missing
        ``(1 - r) / 2`` training steps, so every grid sees the offset the model was trained with.
        """
        A = torch.complex(real_transform(self.A_real[axis], self.transform), self.A_imag[axis])
        dtA = (torch.exp(self.log_dt[axis]) * rate).unsqueeze(-1) * A  # (H, M)
        log_dA, dB = discretize_diagonal(dtA, self.disc, rate)
        C = torch.view_as_complex(self.C[axis])
        if self.bandlimit is not None:
            C = C * self.mode_mask(axis, rate).to(C.real.dtype)
        if self.align_rate and rate != 1.0:
            shift = torch.exp(dtA * (1 - rate) / (2 * rate))  # (H, M): (1 - r) / 2 steps of rate 1
            n = self.channels
            C = torch.cat([C[:n] * shift, C[n:] / shift]) if self.bidirectional[axis] else C * shift
        return log_dA, dB * torch.view_as_complex(self.B[axis]), C

    def mode_mask(self, axis: int, rate: float = 1.0) -> Tensor:
        """(H, M) bool: modes of ``axis`` at or below ``bandlimit / 2`` cycles per sample (all if no bandlimit).

        The frequency is taken at ``max(rate, 1)``: a finer grid keeps the modes of rate 1 (see the
        module docstring).
        """
        freq = (torch.exp(self.log_dt[axis]) * max(rate, 1.0)).unsqueeze(-1) * self.A_imag[axis].abs() / (2 * math.pi)
        if self.bandlimit is None:
            return torch.ones_like(freq, dtype=torch.bool)
        return freq <= self.bandlimit / 2

    def axis_kernels(self, shape: Sequence[int], rate: float | Sequence[float] = 1.0) -> list[Tensor]:
        """The 1-D kernel of every axis: (C, H, S_i) causal or (C, H, 2 S_i) two-sided."""
        if len(shape) != self.dim or any(s < 1 for s in shape):
            raise ValueError(f"kernel shape needs {self.dim} positive sizes, got {tuple(shape)}")
        kernels = []
        for axis, (size, r) in enumerate(zip(shape, self._rates(rate))):
            log_dA, dB, C = self.discrete(axis, r)
            k = 2 * vandermonde_kernel(C * dB, log_dA, size)  # (n, H, S)
            if self.bidirectional[axis]:
                k = two_sided(k[: self.channels], k[self.channels :])  # (C, H, 2S)
            kernels.append(k)
        return kernels

    def kernel(self, shape: Sequence[int] | int, rate: float | Sequence[float] = 1.0) -> Tensor:
        """The bare N-D SSM kernel (C, H, *K), the outer product of :meth:`axis_kernels`.

        Computed in full precision even under autocast.
        """
        shape = tuple(int(s) for s in ((shape,) if isinstance(shape, int) else shape))
        rates = self._rates(rate)

        def compute() -> Tensor:
            kernels = self.axis_kernels(shape, rates)
            letters = _AXIS_LETTERS[: self.dim]
            spec = ",".join(f"ch{a}" for a in letters) + f"->ch{letters}"
            return torch.einsum(spec, *kernels)  # (C, H, *K)

        with torch.autocast(device_type=self.D.device.type, enabled=False):
            return self.cached(("kernel", shape, rates), compute)

    def ssm_forward(
        self, u: Tensor, state: None = None, rate: float | Sequence[float] = 1.0
    ) -> tuple[Tensor, None]:
        """The bare SSM on ``u`` (B, H, *spatial) -> ``(y (B, C, H, *spatial), None)``."""
        if state is not None:
            raise ValueError("S4ND is a convolution over the whole grid: it takes no state")
        return fftconv_nd(u, self.kernel(u.shape[2:], rate)), None

    # ----------------------------------------------------------------- contract
    def forward(
        self, x: Tensor, state: None = None, rate: float | Sequence[float] = 1.0
    ) -> tuple[Tensor, None]:
        """``x`` (B, *spatial, H) -> ``(y (B, *spatial, H), None)``; ``rate`` is one float or one per axis."""
        if x.dim() != self.dim + 2 or x.shape[-1] != self.d_model:
            axes = ", ".join(f"size_{i + 1}" for i in range(self.dim))
            raise ValueError(
                f"S4ND(dim={self.dim}) expects (batch, {axes}, {self.d_model}) channels last, got {tuple(x.shape)}"
            )
        if state is not None:
            raise ValueError(
                "S4ND is a convolution over the whole grid: state passing is not supported (pass state=None)"
            )
        u = rearrange(x, "b ... h -> b h ...")  # (B, H, *S)
        y, _ = self.ssm_forward(u, rate=rate)  # (B, C, H, *S)
        D = self.D.reshape(*self.D.shape, *([1] * self.dim))  # (C, H, 1, ...)
        y = y + D.to(y.dtype) * u.unsqueeze(1).to(y.dtype)
        return self.post_channels_first(y), None  # (B, *S, H)

    def step(self, x_t: Tensor, state: None = None, rate: float = 1.0) -> tuple[Tensor, None]:
        raise RuntimeError(
            "S4ND has no recurrent step: it convolves a whole N-D grid; call forward() on the grid"
        )

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> None:
        raise RuntimeError(
            "S4ND has no recurrent state: it convolves a whole N-D grid; call forward() without state"
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, dim={self.dim}, channels={self.channels}, "
            f"bidirectional={self.bidirectional}, disc={self.disc}, bandlimit={self.bandlimit}, "
            f"align_rate={self.align_rate}"
        )
