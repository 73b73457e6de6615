"""CCNN: continuous-kernel convolution, 1-D / 2-D / 3-D (Romero, Knigge et al. 2022).

"Towards a General Purpose CNN for Long Range Dependencies in ND" (CCNN), building on CKConv
("Continuous Kernel Convolution for Sequential Data") and FlexConv's Gaussian mask.  The
depthwise kernel is a continuous function of the relative position, produced by a small
network -- a kernel network -- over normalised coordinates:

    K(x) = net(x) * m(x),      m(x) = prod_i exp(-(x_i - mu_i)^2 / (2 sigma_i^2)),

with ``net`` a MAGNet (multiplicative Gabor filter network: ``h_1 = g_1(x)``,
``h_(l+1) = (W_l h_l + b_l) * g_(l+1)(x)``, ``g(x) = exp(-gamma |x - c|^2 / 2) sin(W x + b)``) or a
SIREN (``sin(omega_0 (W x + b))`` layers), and ``m`` the learnable Gaussian mask.  It is sampled at the
lags of the input grid and applied by an FFT convolution (:func:`ssmcore.fftconv.fftconv_nd`).

Coordinates: lag ``l`` on axis ``i`` (in samples of the current grid) sits at ``x_i = l * rate_i / l_ref_i``,
``l_ref_i`` the reference extent of axis i (``l_max``, or the first forward's size): the kernel lives on
``x in [0, 1)`` on a causal axis and ``(-1, 1)`` on a two-sided one, and is zero beyond.  ``rate`` thus
samples the same continuous kernel on a coarser (rate > 1) or finer (rate < 1) grid, one rate per
axis as for S4ND (a layer trained at 14x14 runs on 28x28 with ``rate=(0.5, 0.5)``); the kernel is
multiplied by ``prod_i rate_i`` so that a step of ``rate`` training samples carries ``rate`` times the
input (a Riemann sum of the same continuous convolution).  It is divided by the square root of the
support's size in rate-1 samples (``prod_i l_ref_i``, twice that per two-sided axis), and the output
layer is scaled at init so that ``net * mask`` has unit RMS there: kernels start with about unit norm.

1-D causal step: the kernel has ``K = ceil(l_ref / rate)`` taps, so ``step()`` is an exact FIR filter
over a ring buffer of the last K inputs (O(K) per step); a forward given a state convolves the
buffered history together with the chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ssmcore.fftconv import fftconv_nd
from ssmcore.layers.base import SSMLayer, axis_flags, axis_rates

KERNEL_NETS = ("magnet", "siren")
#: reference extent used by a step() before any forward when no ``l_max`` was given
DEFAULT_REFERENCE_LENGTH = 1024
#: points of the kernel grid per recomputed block of the kernel network (see :meth:`CCNN.evaluate_net`)
NET_BLOCK_POINTS = 4096


class MAGNet(nn.Module):
    """Multiplicative anisotropic Gabor network: (P, dim) coordinates -> (P, out) values."""

    def __init__(self, dim: int, hidden: int, out: int, layers: int = 3, omega: float = 32.0) -> None:
        super().__init__()
        self.filters = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(layers))
        self.gamma = nn.Parameter(torch.empty(layers, hidden, dim))
        self.centre = nn.Parameter(torch.empty(layers, hidden, dim).uniform_(-1, 1))
        self.linears = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.head = nn.Linear(hidden, out)
        with torch.no_grad():
            for layer_index, f in enumerate(self.filters):
                # the frequencies of the product of `layers` filters add up: each gets omega / sqrt(layers)
                f.weight.normal_(0.0, omega / math.sqrt(layers))
                f.bias.uniform_(-math.pi, math.pi)
                self.gamma[layer_index].exponential_(0.1)  # Gamma(1, rate 0.1) is Exponential(rate 0.1)
            for lin in self.linears:
                nn.init.uniform_(lin.weight, -math.sqrt(1 / hidden), math.sqrt(1 / hidden))
                lin.bias.zero_()
            nn.init.normal_(self.head.weight, 0.0, 1.0 / math.sqrt(hidden))
            self.head.bias.zero_()

    def gabor(self, i: int, x: Tensor) -> Tensor:
        envelope = torch.exp(-0.5 * (self.gamma[i] * (x[:, None, :] - self.centre[i]) ** 2).sum(-1))  # (P, hidden)
        return envelope * torch.sin(self.filters[i](x))

    def forward(self, x: Tensor) -> Tensor:
        h = self.gabor(0, x)
        for i, lin in enumerate(self.linears, start=1):
            h = lin(h) * self.gabor(i, x)
        return self.head(h)


class SIREN(nn.Module):
    """Sinusoidal representation network: (P, dim) coordinates -> (P, out) values."""

    def __init__(self, dim: int, hidden: int, out: int, layers: int = 3, omega: float = 32.0) -> None:
        super().__init__()
        self.omega = omega
        sizes = [dim] + [hidden] * layers
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(hidden, out)
        with torch.no_grad():
            self.linears[0].weight.uniform_(-1 / dim, 1 / dim)
            for lin in self.linears[1:]:
                bound = math.sqrt(6 / hidden) / omega
                lin.weight.uniform_(-bound, bound)
            nn.init.normal_(self.head.weight, 0.0, 1.0 / math.sqrt(hidden))
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for lin in self.linears:
            h = torch.sin(self.omega * lin(h))
        return self.head(h)


def _remember_reference_extent(layer: nn.Module, incompatible_keys: Any = None) -> None:
    """After ``load_state_dict``: the loaded ``l_ref`` buffer's values as the Python ints that traced graphs read."""
    if not layer.l_ref.is_meta:
        layer._l_ref = tuple(int(v) for v in layer.l_ref)


class CCNN(SSMLayer):
    """CCNN layer: depthwise continuous-kernel convolution + D skip + activation + dropout + projection.

    Input and output are channels last: ``x`` (B, *spatial, H) with ``len(spatial) == dim`` (1, 2 or 3),
    exactly like :class:`ssmcore.layers.s4nd.S4ND` (same ``forward(x, rate=...)`` with one rate per axis,
    same ``kernel(shape, rate)`` layout: (C, H, *K), ``K_i = S_i`` causal or ``2 S_i`` two-sided).
    ``d_state`` is the hidden width of the kernel network.  Only the 1-D causal layer has a recurrent
    state: a ring buffer of the last K inputs, ``(buffer (B, H, K), position)``.

    Args:
        dim: number of spatial axes (1, 2 or 3).
        bidirectional: one bool for every axis or one per axis; None: causal in 1-D, two-sided in 2-D / 3-D.
        kernel_net: ``magnet`` (default, CCNN's) or ``siren``.
        kernel_layers: hidden layers of the kernel network.
        omega: frequency scale of the first layer (SIREN's omega_0, MAGNet's filter scale).
        mask: use the learnable Gaussian mask (centre at lag 0, width ``mask_width`` in coordinates).
        l_max: reference extent ``l_ref`` of every axis (int or one per axis; None: the first forward's sizes).
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``,
            ``channels``, ``dropout``, ``activation``, ``postact``); ``bidirectional`` is CCNN's own (per axis).
    """

    ssm_parameter_names = ("mask_mean", "mask_log_width")

    def __init__(
        self,
        d_model: int,
        *,
        dim: int = 1,
        bidirectional: bool | Sequence[bool] | None = None,
        kernel_net: str = "magnet",
        kernel_layers: int = 3,
        omega: float = 32.0,
        mask: bool = True,
        mask_width: float = 0.5,
        l_max: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("d_state", 32)
        super().__init__(d_model, bidirectional=False, **kwargs)
        if dim not in (1, 2, 3):
            raise ValueError(f"CCNN supports dim 1, 2 or 3, got {dim}")
        if bidirectional is None:
            bidirectional = dim > 1
        bidirectional = axis_flags(bidirectional, dim)
        if kernel_net not in KERNEL_NETS:
            raise ValueError(f"unknown kernel_net {kernel_net!r}; choose one of {', '.join(KERNEL_NETS)}")
        if kernel_layers < 1 or mask_width <= 0:
            raise ValueError(f"kernel_layers must be >= 1 and mask_width > 0, got {kernel_layers}, {mask_width}")
        self.dim, self.bidirectional, self.kernel_net_name, self.use_mask = dim, bidirectional, kernel_net, mask
        net = MAGNet if kernel_net == "magnet" else SIREN
        self.kernel_net = net(dim, self.d_state, self.channels * d_model, kernel_layers, omega)
        self.mask_mean = nn.Parameter(torch.zeros(dim))
        self.mask_log_width = nn.Parameter(torch.full((dim,), math.log(mask_width)))
        if l_max is None:
            l_ref = (0,) * dim
        else:
            l_ref = (int(l_max),) * dim if isinstance(l_max, int) else tuple(int(v) for v in l_max)
            if len(l_ref) != dim or any(v < 1 for v in l_ref):
                raise ValueError(f"l_max needs {dim} positive sizes, got {l_max}")
        self.register_buffer("l_ref", torch.tensor(l_ref, dtype=torch.long))
        # the buffer's values as Python ints too: torch.compile / torch.export graphs cannot read a tensor's value
        self._l_ref = l_ref
        self.register_load_state_dict_post_hook(_remember_reference_extent)
        self._normalise_init()

    def _normalise_init(self) -> None:
        """Scale the network's output layer so that ``net * mask`` has unit RMS over the support per feature:
        every kernel then has about unit l2 norm at rate 1, whatever ``l_ref`` (the 1 / sqrt(prod l_ref))."""
        if self.kernel_net.head.weight.is_meta:  # built without storage (shapes only): nothing to scale
            return
        points = {1: 256, 2: 48, 3: 16}[self.dim]
        axes = [torch.linspace(-1.0 if b else 0.0, 1.0, points + 1)[:-1] for b in self.bidirectional]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.dim)
        with torch.no_grad():
            rms = self.continuous_kernel(grid).square().mean(0).sqrt().clamp_min(1e-6)  # (C H,)
            self.kernel_net.head.weight.div_(rms[:, None])

    #: a causal 1-D CCNN (the default) steps exactly (FIR over a ring buffer) ...
    can_step = True
    #: ... but not through a linear ``Recurrence``: no :meth:`recurrence`, opaque to the fused steppers
    has_recurrence = False

    def recurrence(self, rate: float = 1.0):
        raise RuntimeError("CCNN has no recurrence(): its exact step() is an FIR filter over a ring buffer")

    # ----------------------------------------------------------------- kernel
    def _rates(self, rate: float | Sequence[float]) -> tuple[float, ...]:
        return axis_rates(rate, self.dim)

    def reference_extent(self, shape: Sequence[int] | None = None) -> tuple[int, ...]:
        """``l_ref`` per axis; fixed to ``shape`` (or 1024 per axis) if still unset."""
        l_ref = self._l_ref if torch.compiler.is_compiling() else tuple(int(v) for v in self.l_ref)
        if min(l_ref) == 0:
            l_ref = tuple(int(s) for s in (shape if shape is not None else (DEFAULT_REFERENCE_LENGTH,) * self.dim))
            with torch.no_grad():
                self.l_ref.copy_(torch.tensor(l_ref, dtype=torch.long))
        if l_ref != self._l_ref:
            self._l_ref = l_ref
        return l_ref

    def axis_lags(self, size: int, axis: int) -> Tensor:
        """The lags of the kernel's entries on one axis: ``0..S-1`` causal, ``0..S-1, -S..-1`` two-sided."""
        lags = torch.arange(size, dtype=torch.float32)
        return torch.cat([lags, lags - size]) if self.bidirectional[axis] else lags

    def evaluate_net(self, coords: Tensor) -> Tensor:
        """``kernel_net(coords)`` (P, dim) -> (P, C H).  Under autograd, over blocks of
        :data:`NET_BLOCK_POINTS` points, each a ``torch.utils.checkpoint``: the backward recomputes one
        block's hidden activations at a time instead of keeping every layer's (P, hidden) values (a
        few dozen of them per layer) for all P points; the values and gradients are the same."""
        if not torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.kernel_net(coords)
        blocks = coords.split(NET_BLOCK_POINTS)
        outs = [checkpoint(self.kernel_net, c, use_reentrant=False) for c in blocks]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def continuous_kernel(self, coords: Tensor) -> Tensor:
        """``net(x) * mask(x)`` at coordinates (P, dim) -> (P, C H), zero outside the support."""
        values = self.evaluate_net(coords)
        low = torch.tensor([-1.0 if b else 0.0 for b in self.bidirectional], device=coords.device)
        inside = ((coords >= low) & (coords < 1)).all(-1, keepdim=True)
        if self.use_mask:
            width = torch.exp(self.mask_log_width)
            values = values * torch.exp(-0.5 * (((coords - self.mask_mean) / width) ** 2).sum(-1, keepdim=True))
        return values * inside.to(values.dtype)

    def kernel(self, shape: Sequence[int] | int, rate: float | Sequence[float] = 1.0) -> Tensor:
        """The bare kernel (C, H, *K) sampled on the grid ``shape`` at ``rate``; full precision under autocast."""
        shape = tuple(int(s) for s in ((shape,) if isinstance(shape, int) else shape))
        if len(shape) != self.dim or any(s < 1 for s in shape):
            raise ValueError(f"kernel shape needs {self.dim} positive sizes, got {shape}")
        rates = self._rates(rate)
        l_ref = self.reference_extent(shape)

        def compute() -> Tensor:
            ref = self.mask_mean
            axes = [self.axis_lags(s, i).to(ref.device) * r / l for i, (s, r, l) in enumerate(zip(shape, rates, l_ref))]
            grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (*K, dim)
            sizes = grid.shape[:-1]
            values = self.continuous_kernel(grid.reshape(-1, self.dim).to(ref.dtype))  # (P, C H)
            support = math.prod([l * (2 if b else 1) for l, b in zip(l_ref, self.bidirectional)])
            scale = math.prod(rates) / math.sqrt(support)
            k = values.t().reshape(self.channels, self.d_model, *sizes)
            return k * scale

        with torch.autocast(device_type=self.D.device.type, enabled=False):
            return self.cached(("kernel", shape, rates), compute)

    def taps(self, rate: float = 1.0) -> int:
        """K, the number of taps of the 1-D causal kernel at ``rate`` (the ring buffer's length)."""
        return math.ceil(self.reference_extent()[0] / rate)

    # ----------------------------------------------------------------- forward
    def ssm_forward(self, u: Tensor, state: Any = None, rate: float | Sequence[float] = 1.0) -> tuple[Tensor, Any]:
        """The bare convolution on ``u`` (B, H, *spatial) -> ``(y (B, C, H, *spatial), next_state)``."""
        if state is None:
            return fftconv_nd(u, self.kernel(u.shape[2:], rate)), None
        self._check_steppable()
        r = self._rates(rate)[0]
        buffer, position = state
        K, L = buffer.shape[-1], u.shape[-1]
        history = torch.roll(buffer, -int(position) % K, dims=-1)  # oldest first
        full = torch.cat([history.to(u.dtype), u], dim=-1)  # (B, H, K + L)
        y = fftconv_nd(full, self.kernel(K + L, r))[..., K:]
        return y, (full[..., -K:].clone(), torch.zeros_like(position))

    def forward(self, x: Tensor, state: Any = None, rate: float | Sequence[float] = 1.0) -> tuple[Tensor, Any]:
        """``x`` (B, *spatial, H) -> ``(y (B, *spatial, H), next_state)``; ``rate`` one float or one per axis."""
        if x.dim() != self.dim + 2 or x.shape[-1] != self.d_model:
            axes = ", ".join(f"size_{i + 1}" for i in range(self.dim))
            raise ValueError(f"CCNN(dim={self.dim}) expects (batch, {axes}, {self.d_model}) channels last, got {tuple(x.shape)}")
        u = rearrange(x, "b ... h -> b h ...")  # (B, H, *S)
        y, next_state = self.ssm_forward(u, state=state, rate=rate)  # (B, C, H, *S)
        D = self.D.reshape(*self.D.shape, *([1] * self.dim))
        y = y + D.to(y.dtype) * u.unsqueeze(1).to(y.dtype)
        return self.post_channels_first(y), next_state

    # ----------------------------------------------------------------- step
    def _check_steppable(self) -> None:
        if self.dim != 1 or self.bidirectional[0]:
            raise RuntimeError("CCNN steps only in 1-D and causal (bidirectional=False, dim=1)")

    def default_state(self, batch_size: int, device: torch.device | str | None = None, rate: float = 1.0) -> Any:
        """``(buffer (B, H, K) zeros, position 0)``: the last K inputs (K = :meth:`taps` at ``rate``)."""
        self._check_steppable()
        ref = self.D
        buffer = torch.zeros(batch_size, self.d_model, self.taps(rate), dtype=ref.dtype, device=device or ref.device)
        return buffer, torch.zeros((), dtype=torch.long, device=buffer.device)

    def ssm_step(self, u_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """FIR step (no D skip): ``u_t`` (B, H) -> ``(y_t (B, C, H), next_state)``, O(K) per step."""
        self._check_steppable()
        buffer, position = state
        K = buffer.shape[-1]
        if K != self.taps(rate):
            raise ValueError(f"state holds {K} taps, rate {rate} needs {self.taps(rate)}: use default_state(rate=...)")
        buffer = buffer.clone()
        buffer[..., int(position)] = u_t.to(buffer.dtype)
        k = self.kernel(K, rate)  # (C, H, K), cached without autograd
        # lag j reads slot (position - j) mod K
        order = (int(position) - torch.arange(K, device=buffer.device)) % K
        y = torch.einsum("chk,bhk->bch", k, buffer[..., order].to(k.dtype))
        return y.to(u_t.dtype), (buffer, (position + 1) % K)

    def step(self, x_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """One exact FIR step: ``x_t`` (B, H) -> ``(y_t (B, H), next_state)``."""
        y, state = self.ssm_step(x_t, state, rate)
        y = y + self.D.to(y.dtype) * x_t.unsqueeze(1)
        return self._post(rearrange(y, "b c h -> b (c h)")), state

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, dim={self.dim}, channels={self.channels}, "
            f"bidirectional={self.bidirectional}, kernel_net={self.kernel_net_name}, l_ref={tuple(self.l_ref.tolist())}"
        )
