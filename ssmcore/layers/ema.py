"""EMA: Mega's multi-dimensional damped exponential moving average (Ma et al. 2022, "Mega: Moving
Average Equipped Gated Attention", Sec. 2.2 / 3.1).

Each feature h is expanded into N = ``d_state`` real dimensions with expansion weights beta,
smoothed by a damped EMA with weights alpha and damping delta (both in (0, 1) through a sigmoid)
and projected back with eta::

    s_t = alpha * beta * u_t + (1 - alpha * delta) * s_{t-1}       (s_t: (N,) per feature)
    y_t = eta . s_t

a real diagonal linear recurrence, so its convolution kernel
``K_k = sum_n eta_n beta_n alpha_n (1 - alpha_n delta_n)^k`` is the same Vandermonde product as S4D's
(:func:`ssmcore.kernels.vandermonde_kernel`, here with real poles).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from ssmcore.kernels import vandermonde_kernel
from ssmcore.layers.s4d import DiagonalConvLayer

#: ``mega``: the paper's alpha and delta logits ~ N(0, init_std^2) (forgetting rates alpha delta ~ 1/4: a
#: few steps of memory); ``multiscale``: forgetting rates log-uniform in [rate_min, rate_max]
EMA_INITS = ("mega", "multiscale")


class EMA(DiagonalConvLayer):
    """Mega's damped EMA + D skip (Mega's omega residual) + activation + dropout + output projection.

    ``d_state`` is the expansion dimension N of the paper (real states per feature; Mega uses 16,
    the default here).  The recurrent state is (B, H, N): real numbers, kept in the complex dtype
    (zero imaginary part) so that :class:`ssmcore.layers.base.Recurrence` and every stepper built on it
    take the layer unchanged.

    Shapes: ``x`` (B, L, H) -> ``y`` (B, L, H); ``kernel(L)`` (C, H, L), or (2C, H, L) bidirectional
    (the anti-causal kernels last).

    Bidirectional (as in Mega): the anti-causal direction has its own alpha, delta, beta and eta.

    ``rate``, the continuous-time reading: the EMA is the zero-order-hold discretisation of
    ``s'(t) = -a s(t) + b u(t)`` with ``exp(-a) = 1 - alpha delta`` per step of the training grid.  At
    ``rate`` r a step spans r training steps: the decay is ``(1 - alpha delta)^r`` and the input gain
    ``alpha beta (1 - (1 - alpha delta)^r) / (alpha delta)`` (the input held over the longer step), which
    is ``alpha beta`` at r = 1; as for S4D, the output on a signal sampled r times more coarsely matches
    the output at rate 1 on the fine one at the shared times.

    Args:
        init: ``mega`` (default, the paper's): alpha and delta logits ~ N(0, ``init_std``^2), forgetting
            rates ``alpha delta`` near 1/4, a few steps of memory (in a Mega block the attention covers
            the long range); ``multiscale``: the forgetting rates log-uniform in [``rate_min``,
            ``rate_max``] (memories of ~3 to ~1000 steps, like S4D's range of dt), delta's logits as in Mega.
            Either way the kernel is a sum of decaying real exponentials, which smooths but cannot
            form a sharp delay (S4D's complex poles can): a bare EMA stack does not learn exact
            delayed recall.  Measured on the smoke copy task (delay 16, 8 tokens; recipe
            ``recipes/smoke/copy.yaml`` with ``ema``): 29.4% validation accuracy with Mega's init, 27.7%
            multiscale, 30.2% with ssm_lr 0.01, 28.8% with d_state 64; and even the best linear read-out
            of the exact state of 16 or 32 real decays per token (least squares, float64) recalls only
            31-39%, where 8 complex modes reach far more.  Mega solves the task through its attention
            (``mega``); see benchmarks/README.md, "ema on the smoke copy task".
        init_std: standard deviation of the delta (and, ``init="mega"``, alpha) logits around 0 (Mega: 0.2).
        rate_min, rate_max: the range of the ``multiscale`` forgetting rates (rate_max < 0.5).
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``
            defaults to 16 here, ``channels``, ``bidirectional``, ``dropout``, ``activation``, ``postact``).
    """

    ssm_parameter_names = ("alpha", "delta", "beta")
    output_scale = 1.0

    def __init__(
        self,
        d_model: int,
        *,
        init: str = "mega",
        init_std: float = 0.2,
        rate_min: float = 1e-3,
        rate_max: float = 0.3,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("d_state", 16)
        super().__init__(d_model, **kwargs)
        if init not in EMA_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(EMA_INITS)}")
        if not 0 < rate_min <= rate_max < 0.5:
            raise ValueError(f"need 0 < rate_min <= rate_max < 0.5, got {rate_min}, {rate_max}")
        self.init = init
        H, N = d_model, self.d_state
        directions = 2 if self.bidirectional else 1
        delta = init_std * torch.randn(directions, H, N)  # logits
        if init == "mega":
            alpha = init_std * torch.randn(directions, H, N)
        else:  # forgetting rates alpha delta log-uniform in [rate_min, rate_max], per feature and dimension
            rates = torch.exp(torch.empty(directions, H, N).uniform_(math.log(rate_min), math.log(rate_max)))
            alpha = torch.logit((rates / torch.sigmoid(delta)).clamp(max=0.99))  # alpha = rate / delta
        self.alpha = nn.Parameter(alpha)  # logits
        self.delta = nn.Parameter(delta)  # logits
        signs = torch.ones(N)
        signs[1::2] = -1  # Mega's alternating expansion signs, so that the N copies differ from the start
        self.beta = nn.Parameter(signs + 0.02 * torch.randn(directions, H, N))
        self.eta = nn.Parameter(torch.randn(self.n_kernels, H, N) / math.sqrt(N))

    def decay_and_gain(self, rate: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(log q, b)``, each (directions, H, N) real: the log decay per step and the input gain at ``rate``."""
        alpha, delta = torch.sigmoid(self.alpha), torch.sigmoid(self.delta)
        log_q = torch.log1p(-alpha * delta)  # log(1 - alpha delta) per training step
        # alpha beta (1 - q^r) / (alpha delta) = beta (1 - q^r) / delta
        gain = self.beta * -torch.expm1(rate * log_q) / delta
        return rate * log_q, gain

    def discrete(self, rate: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """The causal direction as a diagonal system: ``(log dA (H, N), dB (H, N), C (C, H, N))``, complex."""
        log_q, gain = self.decay_and_gain(rate)
        zero = torch.zeros_like(log_q[0])
        cplx = lambda t: torch.complex(t, torch.zeros_like(t))  # noqa: E731
        return torch.complex(log_q[0], zero), cplx(gain[0]), cplx(self.eta[: self.channels])

    def ssm_kernel(self, L: int, rate: float = 1.0) -> Tensor:
        log_q, gain = self.decay_and_gain(rate)  # (D, H, N)
        directions = log_q.shape[0]
        weights = self.eta.view(directions, self.channels, *log_q.shape[1:]) * gain.unsqueeze(1)  # (D, C, H, N)
        weights = rearrange(weights, "d c h n -> c (d h) n")
        log_z = rearrange(log_q, "d h n -> (d h) n")
        k = vandermonde_kernel(weights, torch.complex(log_z, torch.zeros_like(log_z)), L)  # (C, D H, L)
        return rearrange(k, "c (d h) l -> (d c) h l", d=directions)

    @property
    def state_modes(self) -> int:
        return self.d_state

    def extra_repr(self) -> str:
        return super().extra_repr() + " (Mega EMA)"
