"""The layer contract shared by every ssmcore layer.

``SSMLayer`` holds what the published S4 block puts around the SSM itself -- the D
skip, the activation, dropout and the output projection (GLU by default) -- and the
forward / step / state plumbing.  A subclass supplies the SSM:

* ``ssm_forward(u, state, rate) -> (y, next_state)`` on ``u`` (B, H, L), ``y`` (B, C, H, L).
  :class:`ConvSSMLayer` implements it from ``ssm_kernel`` + FFT convolution +
  ``state_forward``; scan layers implement it directly.
* ``default_state(batch_size, device)``.
* a steppable layer (class attribute ``can_step = True``): ``discrete_recurrence(rate) ->``
  :class:`Recurrence`, its discrete terms; ``recurrence(rate)`` caches them per parameter version
  and ``step()`` / ``ssm_step()`` run them.

Shared arguments (declared once, here; subclasses take their own options explicitly and pass
these through ``**kwargs``): ``d_model``, ``d_state``, ``channels``, ``bidirectional``,
``dropout``, ``activation``, ``postact``.

Caching: without autograd, whatever a layer derives from its parameters (the discrete recurrence,
convolution kernels per length and rate) is computed once and reused while no parameter or buffer
changes (:meth:`SSMLayer.cached`), so samplers and evaluation loops that call a layer many times
with fixed weights skip that work; under autograd it is always recomputed.

``C`` is ``channels`` (output channels per feature).  A bidirectional layer has a second
set of ``channels`` kernels for the anti-causal direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ssmcore.fftconv import fftconv, two_sided

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}
POSTACTS = ("glu", "linear", "none")
#: entries of one kind (kernels, recurrences) kept by a layer's no-grad cache
CACHE_SIZE = 8


def make_activation(name: str | None) -> nn.Module:
    """An activation module by name (gelu, silu, relu, tanh, identity)."""
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()



def axis_flags(flags: bool | tuple[bool, ...] | list[bool], dim: int, name: str = "bidirectional") -> tuple[bool, ...]:
    """One boolean per axis of an N-D layer: a single flag for every axis, or a sequence of ``dim`` flags."""
    if isinstance(flags, bool):
        flags = (flags,) * dim
    flags = tuple(bool(b) for b in flags)
    if len(flags) != dim:
        raise ValueError(f"{name} needs one flag per axis ({dim}), got {len(flags)}")
    return flags


def axis_rates(rate: float | tuple[float, ...] | list[float], dim: int) -> tuple[float, ...]:
    """One positive rate per axis of an N-D layer: a single rate for every axis, or ``dim`` of them."""
    rates = (float(rate),) * dim if isinstance(rate, (int, float)) else tuple(float(r) for r in rate)
    if len(rates) != dim:
        raise ValueError(f"rate needs one value per axis ({dim}), got {len(rates)}")
    if any(not r > 0 for r in rates):
        raise ValueError(f"rates must be positive, got {rates}")
    return rates


class Recurrence(NamedTuple):
    """The discrete recurrence of a steppable layer at one rate: its ``step()`` in closed form.

    Per feature (H features, M kept complex modes, r low-rank terms; ``u`` the layer input)::

        q_k = Re(a_k . x) + c_k u                 (k < r; none for a diagonal layer)
        x'  = lam * x + b u - sum_k G_k q_k
        y   = Re(C . x') + D u                    (one row of C and D per output channel)

    ``C`` already carries the factor 2 of conjugate-symmetric layers (only one mode of each pair
    is kept), so ``Re(C . x)`` is the whole output.  A diagonal layer (S4D, DSS, DLR, S4-PTD) has
    ``a = c = G = None``; S4's bilinear DPLR step is exact in this form with r = rank (the Woodbury
    identity, see :meth:`ssmcore.layers.s4.S4.discrete_recurrence`).  A MIMO layer (S5: ``mimo``)
    shares one state (M,) across features: ``x' = lam * x + b @ u`` with ``b`` (M, H), and
    ``y_h = Re(C_h . x') + D_h u_h``.

    Fields (complex in the parameters' complex dtype, real ones real):
        lam: (H, M), or (M,) for MIMO.
        b: (H, M), or (M, H) for MIMO.
        C: (channels, H, M).
        D: (channels, H) real.
        a: (r, H, M) or None.
        c: (r, H) real or None.
        G: (r, H, M) or None.
    """

    lam: Tensor
    b: Tensor
    C: Tensor
    D: Tensor
    a: Tensor | None = None
    c: Tensor | None = None
    G: Tensor | None = None

    @property
    def rank(self) -> int:
        """r, the number of low-rank terms (0 for a diagonal or MIMO layer)."""
        return 0 if self.a is None else self.a.shape[0]

    @property
    def mimo(self) -> bool:
        """Whether the state is shared by all features (S5)."""
        return self.lam.dim() == 1

    def advance(self, state: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """The bare SSM: ``state`` (B, H, M) or (B, M), ``u`` (B, H) -> ``(Re(C . x') (B, C, H), x')``."""
        uc = u.to(self.b.dtype)
        if self.mimo:
            x = self.lam * state + torch.einsum("mh,bh->bm", self.b, uc)  # (B, M)
            return torch.einsum("chm,bm->bch", self.C, x).real.to(u.dtype), x
        x = self.lam * state + self.b * uc.unsqueeze(-1)  # (B, H, M)
        if self.rank:
            q = torch.einsum("khm,bhm->bkh", self.a, state).real + self.c * u.unsqueeze(1)  # (B, r, H)
            x = x - torch.einsum("khm,bkh->bhm", self.G, q.to(self.G.dtype))
        return torch.einsum("chm,bhm->bch", self.C, x).real.to(u.dtype), x

    def step(self, state: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """One step with the D skip: ``u`` (B, H) -> ``(y (B, C, H), next_state)``."""
        y, x = self.advance(state, u)
        return y + self.D.to(y.dtype) * u.unsqueeze(1), x


#: elements of one block of rows of the fused output block (4 MiB in float32), and its fewest rows
OUTPUT_BLOCK_ELEMENTS = 1 << 20
OUTPUT_BLOCK_MIN_ROWS = 256


def _row_blocks(rows: int, width: int) -> list[tuple[int, int]]:
    size = max(OUTPUT_BLOCK_MIN_ROWS, OUTPUT_BLOCK_ELEMENTS // max(width, 1))
    return [(r0, min(r0 + size, rows)) for r0 in range(0, rows, size)]


def _to_rows(y: Tensor, b: int | None, r0: int, r1: int) -> Tensor:
    """Rows ``r0:r1`` of the channels-last matrix of ``y``: ``y`` (B, C, H, L) with ``b`` given (rows of
    sequence ``b`` are its positions), else ``y`` (R, C H) already channels last."""
    if b is None:
        return y[r0:r1]
    return rearrange(y[b, :, :, r0:r1], "c h l -> l (c h)").contiguous()


def accumulate_grads(d_params: list[Tensor | None], wanted: list[int], grads) -> None:
    """Add one block's parameter gradients (``grads``, in ``wanted`` order; None where unused) to
    ``d_params``: the blocked backwards (the fused output block, S5's chunked scan, Mega's attention)
    recompute block by block and sum their parameters' gradients over the blocks."""
    for i, gi in zip(wanted, grads):
        if gi is not None:
            d_params[i] = gi if d_params[i] is None else d_params[i].add_(gi)


class _MethodOf(nn.Module):
    """One method of ``module`` as a module's forward, so that ``torch.func.functional_call`` can run it
    with given parameters."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.inner, self.method = module, method

    def forward(self, *args):
        return getattr(self.inner, self.method)(*args)


def with_parameters(module: nn.Module, method: str, names: list[str], params: list[Tensor]) -> Callable:
    """``module.<method>``, recomputing with ``params`` in place of the parameters called ``names``
    (relative to ``module``): the tensors a blocked forward used, for its backward's recompute.

    Under ``torch.func.functional_call`` the forward sees the call's tensors, which are swapped back out
    before the backward; a recompute with the module's own would give the call's tensors no gradient
    (or gradients of other values).  When the module still holds the forward's tensors (the ordinary
    path) this is the bound method itself, with no reparametrisation."""
    fn = getattr(module, method)
    if all(_attribute(module, n) is p for n, p in zip(names, params, strict=True)):
        return fn
    wrapper, given = _MethodOf(module, method), {f"inner.{n}": p for n, p in zip(names, params, strict=True)}
    return lambda *args: torch.func.functional_call(wrapper, given, args, strict=False)


def _attribute(module: nn.Module, name: str):
    """``module``'s attribute at the dotted ``name``: a parameter, or the tensor that
    ``torch.func.functional_call`` put in its place."""
    path, _, leaf = name.rpartition(".")
    return getattr(module.get_submodule(path), leaf)


def _with_parameters(post: Callable[[Tensor], Tensor], params: list[Tensor]) -> Callable[[Tensor], Tensor]:
    """``post`` (a layer's bound ``_post``) recomputing with ``params``, the output projection's
    parameters the forward used (see :func:`with_parameters`)."""
    layer = getattr(post, "__self__", None)
    output = getattr(layer, "output", None)
    if not params or not isinstance(output, nn.Module):
        return post
    names = [f"output.{name}" for name, _ in output.named_parameters()]
    return with_parameters(layer, post.__name__, names, params)


class _FusedOutput(torch.autograd.Function):
    """``post(y)`` -- a layer's activation, output projection and GLU -- run over blocks of rows; only
    ``y`` is saved, and the backward recomputes each block's activation and projection.

    The plain composition keeps, for its backward, the activation's input and output and the
    projection's output (GLU: 2 H wide): four (B, L, H) tensors, or five with the contiguous copy of
    the SSM's output.  Here only ``y`` itself is kept (one tensor); the backward reruns ``post`` on one
    block of rows at a time under autograd (the same operators, so the same gradient formulas) and
    writes the block's input gradient, summing the parameters' gradients over blocks; transients are
    a block's.  The price is the projection's forward once more in the backward.

    ``y`` is (B, C, H, L), the SSM's output (rows are (sequence, position); each block is transposed
    to channels last on the fly, so the (B, L, C H) copy is never made), or (R, C H) channels last.
    """

    @staticmethod
    def forward(ctx, y: Tensor, post: Callable[[Tensor], Tensor], bchl: bool, *params: Tensor) -> Tensor:
        device_type = y.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        if bchl:
            B, C, H, L = y.shape
            seqs, rows, width = list(range(B)), L, C * H
        else:
            seqs, rows, width = [None], y.shape[0], y.shape[1]
        out = None
        for b in seqs:
            for r0, r1 in _row_blocks(rows, width):
                o = post(_to_rows(y, b, r0, r1))
                if out is None:
                    out = o.new_empty((len(seqs), rows, o.shape[-1]))
                out[0 if b is None else b, r0:r1] = o
        ctx.post, ctx.bchl = post, bchl
        ctx.save_for_backward(y, *params)
        return out if bchl else out[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        y, *params = ctx.saved_tensors
        device_type, enabled, dtype = ctx.autocast
        wanted = [i for i, p in enumerate(params) if ctx.needs_input_grad[3 + i]]
        d_params: list[Tensor | None] = [None] * len(params)
        dy = torch.empty_like(y) if ctx.needs_input_grad[0] else None
        if ctx.bchl:
            B, C, H, L = y.shape
            seqs, rows, width = list(range(B)), L, C * H
        else:
            seqs, rows, width = [None], y.shape[0], y.shape[1]
            grad = grad.unsqueeze(0)
        post = _with_parameters(ctx.post, params)
        for b in seqs:
            for r0, r1 in _row_blocks(rows, width):
                z = _to_rows(y, b, r0, r1).detach().requires_grad_(dy is not None)
                with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
                    o = post(z)
                inputs = ([z] if dy is not None else []) + [params[i] for i in wanted]
                g = torch.autograd.grad(o, inputs, grad[0 if b is None else b, r0:r1], allow_unused=True)
                if dy is not None:
                    if b is None:
                        dy[r0:r1] = g[0]
                    else:
                        dy[b, :, :, r0:r1] = rearrange(g[0], "l (c h) -> c h l", c=C)
                    g = g[1:]
                accumulate_grads(d_params, wanted, g)
        return (dy, None, None, *d_params)


class SSMLayer(nn.Module):
    """Base of every ssmcore layer; see the module docstring for what a subclass supplies.

    The shared arguments of every layer (a subclass passes them on through ``**kwargs``):

    Args:
        d_model: features H.
        d_state: state size N (each subclass documents what it counts, and may change the default).
        channels: output channels per feature C (mixed back to H by the output projection).
        bidirectional: add an anti-causal SSM with its own output weights (no ``step()`` then).
        dropout: dropout after the activation.
        activation: applied after the SSM + D skip (``gelu``, ``silu``, ``relu``, ``tanh``, ``identity``).
        postact: output projection: ``glu`` (Linear(C H, 2H) + GLU), ``linear`` or ``none``.
    """

    #: names of this module's parameters that belong to the SSM itself (own lr, no weight decay)
    ssm_parameter_names: tuple[str, ...] = ()
    #: True when ``ssm_forward`` already includes the D skip (convolutional layers fold it into the kernel)
    skip_in_ssm_forward: bool = False
    #: whether this kind of layer, built causal (``bidirectional=False``), has an exact recurrent
    #: ``step()``; apps derive their lists of causal layers from it
    can_step: bool = False
    #: whether that step runs through :meth:`recurrence` (diagonal / DPLR terms a fused stepper can use);
    #: False for a layer with its own ``step()`` (SGConv's FIR ring buffer, GSS's inner SSM)
    has_recurrence: bool = True
    #: whether ``forward`` takes ``dt`` (B, L): a per-step multiplier of the step size for irregularly
    #: sampled sequences (the time since the previous sample, in units of the nominal step); S5 does
    has_dt: bool = False

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
        self.postact = postact
        width = channels * d_model
        if postact == "glu":
            self.output = nn.Sequential(nn.Linear(width, 2 * d_model), nn.GLU(dim=-1))
        elif postact == "linear":
            self.output = nn.Linear(width, d_model)
        else:
            if channels != 1:
                raise ValueError("postact='none' needs channels=1 (nothing maps C*H back to H)")
            self.output = nn.Identity()
        self._cache: dict[Any, tuple[Any, tuple[int, ...]]] = {}
        self._cache_signature: Any = None

    @property
    def output_linear(self) -> nn.Linear | None:
        """The output projection's linear map: ``Linear(C H, 2H)`` before the GLU (``postact="glu"``),
        ``Linear(C H, H)`` (``"linear"``), or None (``"none"``)."""
        if self.postact == "glu":
            return self.output[0]
        return self.output if self.postact == "linear" else None

    # ----------------------------------------------------------------- subclass API
    def ssm_forward(self, u: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        """The bare SSM on ``u`` (B, H, L) -> ``(y (B, C, H, L), next_state or None)``."""
        raise NotImplementedError

    def discrete_recurrence(self, rate: float = 1.0) -> Recurrence:
        """The discrete terms at ``rate``, computed afresh (steppable layers; use :meth:`recurrence`)."""
        raise NotImplementedError

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The zero state for ``batch_size`` sequences."""
        raise NotImplementedError

    # ----------------------------------------------------------------- recurrence
    def recurrence(self, rate: float = 1.0) -> Recurrence:
        """The discrete recurrence at ``rate`` (see :class:`Recurrence`): what ``step()`` runs and what a
        fused or native stepper needs.  Cached while no parameter or buffer changes (and without
        autograd; see :meth:`cached`): an optimiser step, ``load_state_dict``, an in-place edit or a
        dtype / device move recomputes it.  Raises RuntimeError for a layer without a recurrent step
        (``can_step`` False, or built bidirectional)."""
        if not (self.can_step and self.has_recurrence):
            raise RuntimeError(f"{type(self).__name__} has no recurrence() (can_step {self.can_step}, "
                               f"has_recurrence {self.has_recurrence})")
        if self.bidirectional:
            raise RuntimeError("step() needs a causal layer: this one was built with bidirectional=True")
        return self.cached(("recurrence", float(rate)), lambda: self.discrete_recurrence(rate))

    def ssm_step(self, u_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """One step of the bare SSM (no D skip): ``u_t`` (B, H) -> ``(y_t (B, C, H), next_state)``."""
        return self.recurrence(rate).advance(state, u_t)

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
        return self.post_channels_first(y), next_state

    def step(self, x_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """One recurrent step: ``x_t`` (B, H) -> ``(y_t (B, H), next_state)``."""
        y, state = self.recurrence(rate).step(state, x_t)  # (B, C, H)
        return self._post(rearrange(y, "b c h -> b (c h)")), state

    def _post(self, y: Tensor) -> Tensor:
        """Activation, dropout and output projection on channels-last ``y`` (..., C H) -> (..., H)."""
        return self.output(self.dropout(self.activation(y)))

    def _fused_output(self, y: Tensor) -> bool:
        """Whether ``_post`` runs as :class:`_FusedOutput` (keeping only its input for the backward):
        under autograd, outside tracing, and with no active dropout (a mask would have to be kept)."""
        return (torch.is_grad_enabled() and not torch.compiler.is_compiling()
                and not (self.training and isinstance(self.dropout, nn.Dropout)))

    def post_channels_first(self, y: Tensor) -> Tensor:
        """:meth:`_post` on the SSM's output ``y`` (B, C, H, *S) -> (B, *S, H): as a :class:`_FusedOutput`
        that keeps only ``y`` and transposes one block of rows at a time, when :meth:`_fused_output`
        allows; else on one contiguous channels-last copy (the activation runs about twice as slowly
        on a transposed view)."""
        spatial = y.shape[3:]
        if self._fused_output(y):
            out = _FusedOutput.apply(y.flatten(3), self._post, True, *self.output.parameters())
            return out.reshape(y.shape[0], *spatial, out.shape[-1])
        return self._post(rearrange(y.flatten(3), "b c h l -> b l (c h)").contiguous()).reshape(
            y.shape[0], *spatial, -1)

    def post(self, y: Tensor) -> Tensor:
        """:meth:`_post` on channels-last ``y`` (..., C H) -> (..., H), as a :class:`_FusedOutput` (only ``y``
        kept for the backward) when :meth:`_fused_output` allows; layers with their own ``forward`` call it."""
        if y.dim() < 2 or not self._fused_output(y):
            return self._post(y)
        lead = y.shape[:-1]
        out = _FusedOutput.apply(y.reshape(-1, y.shape[-1]), self._post, False, *self.output.parameters())
        return out.reshape(*lead, out.shape[-1])

    # ----------------------------------------------------------------- helpers
    def _signature(self) -> tuple | None:
        """Identity, in-place version, dtype and device of every parameter and buffer; None for inference
        tensors (no version counter: nothing is cached then)."""
        try:
            return tuple((t.data_ptr(), t._version, t.dtype, t.device)
                         for t in (*self.parameters(), *self.buffers()))
        except RuntimeError:
            return None

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, memoised under ``key`` while no parameter or buffer changes; ``key[0]`` names the kind.

        Without autograd (``no_grad``, ``inference_mode``, evaluation and sampling loops) a value is
        computed once and reused until a parameter or buffer is replaced, edited in place (optimiser
        steps, ``load_state_dict``) or moved to another dtype / device; a returned tensor that a caller
        wrote into is recomputed too.  Values are built as normal tensors even under ``inference_mode``.
        At most :data:`CACHE_SIZE` values of one kind are kept.  Under autograd ``compute()`` always runs.
        (Writes through ``param.data`` bypass the version counter: edit parameters in place under
        ``torch.no_grad()`` instead, as optimisers and ``load_state_dict`` do, or call :meth:`clear_cache`
        after such a write.)
        """
        if torch.is_grad_enabled() or torch.compiler.is_compiling():  # a traced graph recomputes, no cache
            return compute()
        signature = self._signature()
        if signature is None:
            return compute()
        if self._cache_signature != signature:
            self._cache.clear()
            self._cache_signature = signature
        hit = self._cache.get(key)
        if hit is not None and _versions(hit[0]) == hit[1]:
            return hit[0]
        with torch.inference_mode(False), torch.no_grad():  # normal tensors, with version counters
            value = compute()
        same_kind = [k for k in self._cache if k[0] == key[0]]
        if key not in self._cache and len(same_kind) >= CACHE_SIZE:
            del self._cache[same_kind[0]]  # the oldest of this kind
        self._cache[key] = (value, _versions(value))
        return value

    def clear_cache(self) -> None:
        """Forget every memoised value (:meth:`cached`): for code that writes parameters through ``.data``,
        which the version check cannot see (Lightning's weight averaging swaps weights that way)."""
        self._cache.clear()
        self._cache_signature = None

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, "
            f"bidirectional={self.bidirectional}"
        )


def _versions(value: Any) -> tuple[int, ...]:
    """The version counters of the tensors in ``value`` (a tensor or a tuple of them)."""
    items = value if isinstance(value, tuple) else (value,)
    return tuple(t._version for t in items if isinstance(t, Tensor))


class ConvSSMLayer(SSMLayer):
    """A layer whose SSM is a convolution with ``kernel(L, rate)``.

    Subclasses supply ``ssm_kernel(L, rate) -> (n_kernels, H, L)`` (forward kernels
    first, then the anti-causal ones) and, if causal, ``state_forward`` and
    ``discrete_recurrence``.  The D skip is folded into the kernel's lag-0 tap
    (``conv(u, k) + D u = conv(u, k + D delta)``), which saves a pass over the (B, C, H, L)
    output and its backward.  Without autograd ``kernel()`` is cached per length and rate
    (:meth:`SSMLayer.cached`).
    """

    skip_in_ssm_forward = True

    def ssm_kernel(self, L: int, rate: float = 1.0) -> Tensor:
        raise NotImplementedError

    def state_forward(self, u: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """Contribution of the incoming ``state`` to the outputs (B, C, H, L), and the state after ``u``."""
        raise NotImplementedError

    def kernel(self, L: int, rate: float = 1.0) -> Tensor:
        """The bare SSM kernel (n_kernels, H, L), in full precision even under autocast; without autograd,
        reused while the parameters are unchanged."""
        if L < 1:
            raise ValueError(f"kernel length must be positive, got {L}")
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        device_type = self.D.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self.cached(("kernel", int(L), float(rate)), lambda: self.ssm_kernel(L, rate))

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
