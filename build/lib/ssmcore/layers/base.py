"""The layer contract shared by every ssmcore layer.

``SSMLayer`` holds what the published S4 block puts around the SSM itself -- the D
skip, the activation, dropout and the output projection (GLU by default) -- and the
forward / step / state plumbing.  A subclass supplies the SSM:

* ``ssm_forward(u, state, rate) -> (y, next_state)`` on ``u`` (B, H, L), ``y`` (B, C, H, L).
  :class:`ConvSSMLayer` implements it from ``ssm_kernel`` + FFT convolution +
  ``state_forward``; scan layers implement it directly.
* ``ssm_step(u_t, state, rate) -> (y_t, next_state)`` with ``y_t`` (B, C, H).
* ``default_state(batch_size, device)``.

``C`` is ``channels`` (output channels per feature).  A bidirectional layer has a second
set of ``channels`` kernels for the anti-causal direction.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from ssmcore.fftconv import fftconv, two_sided

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}
POSTACTS = ("glu", "linear", "none")


def make_activation(name: str | None) -> nn.Module:
    """An activation module by name (gelu, silu, relu, tanh, identity)."""
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SSMLayer(nn.Module):
    """Base of every ssmcore layer; see the module docstring for what a subclass supplies.

    Args:
        d_model: features H.
        d_state: state size N (each subclass documents what it counts).
        channels: output channels per feature C (mixed back to H by the output projection).
        bidirectional: add an anti-causal SSM with its own output weights.
        dropout: dropout after the activation.
        activation: applied after the SSM + D skip.
        postact: output projection: ``glu`` (Linear(C H, 2H) + GLU), ``linear`` or ``none``.
    """

    #: names of this module's parameters that belong to the SSM itself (own lr, no weight decay)
    ssm_parameter_names: tuple[str, ...] = ()
    #: True when ``ssm_forward`` already includes the D skip (convolutional layers fold it into the kernel)
    skip_in_ssm_forward: bool = False

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        channels: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        activation: str | None = "gelu",
        postact: str | None = "glu",
    ) -> None:
        super().__init__()
        if d_model < 1 or d_state < 1 or channels < 1:
            raise ValueError(f"d_model, d_state and channels must be positive, got {d_model}, {d_state}, {channels}")
        self.d_model, self.d_state, self.channels = d_model, d_state, channels
        self.bidirectional = bidirectional
        self.n_kernels = channels * (2 if bidirectional else 1)
        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        postact = postact or "none"
        if postact not in POSTACTS:
            raise ValueError(f"unknown postact {postact!r}; choose one of {', '.join(POSTACTS)}")
        width = channels * d_model
        if postact == "glu":
            self.output = nn.Sequential(nn.Linear(width, 2 * d_model), nn.GLU(dim=-1))
        elif postact == "linear":
            self.output = nn.Linear(width, d_model)
        else:
            if channels != 1:
                raise ValueError("postact='none' needs channels=1 (nothing maps C*H back to H)")
            self.output = nn.Identity()
        self._step_cache: tuple[Any, Any] | None = None

    # ----------------------------------------------------------------- subclass API
    def ssm_forward(self, u: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        """The bare SSM on ``u`` (B, H, L) -> ``(y (B, C, H, L), next_state or None)``."""
        raise NotImplementedError

    def ssm_step(self, u_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """One step of the bare SSM: ``u_t`` (B, H) -> ``(y_t (B, C, H), next_state)``."""
        raise NotImplementedError

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The zero state for ``batch_size`` sequences."""
        raise NotImplementedError

    # ----------------------------------------------------------------- contract
    def forward(self, x: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        """``x`` (B, L, H) -> ``(y (B, L, H), next_state)``; ``next_state`` is None unless ``state`` was given."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"{type(self).__name__} expects (batch, length, {self.d_model}), got {tuple(x.shape)}")
        if state is not None and self.bidirectional:
            raise ValueError("state passing needs a causal layer: this one was built with bidirectional=True")
        u = rearrange(x, "b l h -> b h l")
        y, next_state = self.ssm_forward(u, state=state, rate=rate)  # (B, C, H, L)
        if not self.skip_in_ssm_forward:
            y = y + self.D[:, :, None].to(y.dtype) * u.unsqueeze(1).to(y.dtype)
        # one contiguous copy here (the projection would make it anyway) keeps the activation off a
        # transposed view, where it runs about twice as slowly
        y = rearrange(y, "b c h l -> b l (c h)").contiguous()
        return self._post(y), next_state

    def step(self, x_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """One recurrent step: ``x_t`` (B, H) -> ``(y_t (B, H), next_state)``."""
        if self.bidirectional:
            raise RuntimeError("step() needs a causal layer: this one was built with bidirectional=True")
        y, state = self.ssm_step(x_t, state, rate)  # (B, C, H)
        y = y + self.D.to(y.dtype) * x_t.unsqueeze(1).to(y.dtype)
        return self._post(rearrange(y, "b c h -> b (c h)")), state

    def _post(self, y: Tensor) -> Tensor:
        return self.output(self.dropout(self.activation(y)))

    # ----------------------------------------------------------------- helpers
    def cached(self, key: Any, compute):
        """``compute()``, memoised while no parameter changes (and recomputed under autograd).

        Used for whatever ``step()`` needs (discretised matrices, ...): it is computed lazily
        on the first step and recomputed automatically after an optimiser step, a
        ``load_state_dict`` or a device / dtype move.
        """
        if torch.is_grad_enabled():
            return compute()
        signature = (key, tuple((p.data_ptr(), p._version, p.dtype) for p in self.parameters()))
        if self._step_cache is None or self._step_cache[0] != signature:
            self._step_cache = (signature, compute())
        return self._step_cache[1]

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, "
            f"bidirectional={self.bidirectional}"
        )


class ConvSSMLayer(SSMLayer):
    """A layer whose SSM is a convolution with ``kernel(L, rate)``.

    Subclasses supply ``ssm_kernel(L, rate) -> (n_kernels, H, L)`` (forward kernels
    first, then the anti-causal ones) and, if causal, ``state_forward`` and ``ssm_step``.
    The D skip is folded into the kernel's lag-0 tap (``conv(u, k) + D u = conv(u, k + D delta)``),
    which saves a pass over the (B, C, H, L) output and its backward.
    """

    skip_in_ssm_forward = True

    def ssm_kernel(self, L: int, rate: float = 1.0) -> Tensor:
        raise NotImplementedError

    def state_forward(self, u: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """Contribution of the incoming ``state`` to the outputs (B, C, H, L), and the state after ``u``."""
        raise NotImplementedError

    def kernel(self, L: int, rate: float = 1.0) -> Tensor:
        """The bare SSM kernel (n_kernels, H, L), computed in full precision even under autocast."""
        if L < 1:
            raise ValueError(f"kernel length must be positive, got {L}")
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        device_type = self.D.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self.ssm_kernel(L, rate)

    def ssm_forward(self, u: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        L = u.shape[-1]
        k = self.kernel(L, rate)  # (n_kernels, H, L)
        if self.bidirectional:
            k = two_sided(k[: self.channels], k[self.channels :])  # (C, H, 2L)
        else:
            k = k[: self.channels]
        lag0 = torch.zeros_like(k[..., :1]) + self.D[:, :, None].to(k.dtype)  # (C, H, 1)
        k = torch.cat([k[..., :1] + lag0, k[..., 1:]], dim=-1)  # D skip at lag 0
        y = fftconv(u, k)  # (B, C, H, L)
        next_state = None
        if state is not None:
            device_type = self.D.device.type
            with torch.autocast(device_type=device_type, enabled=False):
                y_state, next_state = self.state_forward(u, state, rate)
            y = y + y_state
        return y, next_state
