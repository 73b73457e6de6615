"""Mega: moving-average equipped gated attention (Ma et al. 2022, "Mega: Moving Average Equipped Gated
Attention", Sec. 3).

The block, per token (x: (H,), d = H features, z = ``qk_dim``, v = ``expand`` H)::

    x' = act(EMA(x) + omega x)                         Mega's damped EMA (ssmcore.layers.ema), omega its D skip
    Z  = act(W_z x' + b_z)                             (z,)  shared representation
    Q  = kappa_q Z + mu_q,  K = kappa_k Z + mu_k       (z,)  per-dimension scale and offset
    V  = act(W_v x + b_v)                              (v,)
    O  = sum_j f(Q K_j, t - j) V_j                     single-head attention, Mega-chunk: j in t's chunk
    gamma = act(W_g x' + b_g)                          (v,)  reset gate
    phi   = sigmoid(W_p x' + b_p)                      (d,)  update gate
    h  = act(W_h x' + U_h (gamma * O) + b_h)           (d,)
    y  = phi * h + (1 - phi) * x

Attention functions: ``laplace`` (the paper's), ``f = laplace(Q.K / n + b_rel(t - j))`` with
``laplace(s) = (1 + erf((s - mu) / (sigma sqrt 2))) / 2``, ``mu = sqrt(1/2)``, ``sigma = sqrt(1/(4 pi))``;
``softmax``: ``softmax_j(Q.K / sqrt(z) + b_rel(t - j))``.  ``b_rel`` is a learned bias per relative offset.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ssmcore.layers.base import SSMLayer, accumulate_grads, with_parameters
from ssmcore.layers.ema import EMA

ATTENTIONS = ("laplace", "softmax")
_LAPLACE_MU = math.sqrt(0.5)
_LAPLACE_SIGMA = math.sqrt(0.25 / math.pi)
#: tokens per block of the blocked attention: about this many (batch x token x width) elements, where the
#: width counts a token's scores (the chunk's length) and its projections; whole chunks, at least one
ATTENTION_BLOCK_ELEMENTS = 1 << 21
#: causal full attention: queries per block, at least
ATTENTION_BLOCK_MIN_ROWS = 64


def laplace_attention(scores: Tensor) -> Tensor:
    """Mega's Laplace attention function, elementwise: ``(1 + erf((s - mu) / (sigma sqrt 2))) / 2``."""
    return 0.5 * (1 + torch.erf((scores - _LAPLACE_MU) / (_LAPLACE_SIGMA * math.sqrt(2.0))))


class Mega(SSMLayer):
    """The Mega block: Mega's EMA feeding single-head gated attention, causal or bidirectional.

    Shapes: ``x`` (B, L, H) -> ``y`` (B, L, H).  ``d_state`` is the EMA's expansion dimension N (real
    states per feature, default 16).

    Mega-chunk: with ``chunk_size`` c > 0 the sequence is split into chunks of c tokens at multiples of
    c (counted from the first token after ``default_state``) and each token attends within its chunk
    (causal: to itself and the tokens before it in the chunk); ``chunk_size=0`` is full attention.

    The Laplace scores are divided by n, the number of keys a query attends to (Mega divides by the
    chunk's length; causally we count only the visible keys, so that step() needs no knowledge of
    the sequence's length and unchunked causal attention stays exact token by token).

    State (causal): ``(ema_state (B, H, N) complex, keys (B, m, z), values (B, m, v))`` with the keys and
    values of the m tokens of the current chunk seen so far (of the whole past when unchunked).
    ``step()`` is exact but Mega's own (not a :class:`~ssmcore.layers.base.Recurrence`: ``can_step``
    is True, ``has_recurrence`` False): the EMA steps through its ``recurrence()``, the new token's key and value join the cache,
    the token attends over the cache, and the cache is cleared when a chunk is complete.  Cost per
    step: O(c (z + v)) chunked, O(t (z + v)) unchunked.

    ``rate`` rescales the EMA's step (its continuous-time reading, see :class:`~ssmcore.layers.ema.EMA`);
    the attention works on token positions and does not depend on it.

    Args:
        chunk_size: Mega-chunk length c; 0 for full attention.
        qk_dim: z, the width of the shared representation, queries and keys (Mega: 64 to 128).
        expand: v = expand * d_model, the width of values and of the reset gate (Mega: 2).
        attention: ``laplace`` (default) or ``softmax``.
        max_positions: relative offsets beyond +-(max_positions - 1) share the last bias (unchunked
            attention; chunked uses c).
        ema_init, ema_init_std: the EMA's ``init`` (default ``mega``, the paper's; ``multiscale`` for
            longer initial memories) and ``init_std`` (see :class:`~ssmcore.layers.ema.EMA`).
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer`: ``d_state``
            (the EMA's N, default 16), ``bidirectional``, ``dropout`` (on the attention weights and on
            h), ``activation`` (Mega's ``act``, default ``silu``), ``postact`` (after y; default
            ``none``), ``channels`` (must be 1).
    """

    can_step = True  # an exact step() of its own ...
    has_recurrence = False  # ... not a diagonal recurrence

    def __init__(
        self,
        d_model: int,
        *,
        chunk_size: int = 128,
        qk_dim: int = 64,
        expand: int = 2,
        attention: str = "laplace",
        max_positions: int = 1024,
        ema_init: str = "mega",
        ema_init_std: float = 0.2,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("d_state", 16)
        kwargs.setdefault("activation", "silu")
        kwargs.setdefault("postact", "none")
        super().__init__(d_model, **kwargs)
        if self.channels != 1:
            raise ValueError(f"Mega has one output channel; got channels={self.channels}")
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; choose one of {', '.join(ATTENTIONS)}")
        if chunk_size < 0 or qk_dim < 1 or expand < 1 or max_positions < 1:
            raise ValueError("chunk_size must be >= 0 and qk_dim, expand, max_positions positive")
        del self.D  # the EMA has its own skip (omega)
        H = d_model
        self.chunk_size, self.qk_dim, self.v_dim, self.attention = chunk_size, qk_dim, expand * H, attention
        self.max_positions = chunk_size if chunk_size > 0 else max_positions
        activation = kwargs.get("activation", "silu")
        self.ema = EMA(H, d_state=self.d_state, bidirectional=self.bidirectional, activation=activation,
                       postact="none", init=ema_init, init_std=ema_init_std)
        self.value = nn.Linear(H, self.v_dim)
        # from x': update gate phi (H), shared representation Z (z), reset gate gamma (v), W_h x' (H)
        self.mix = nn.Linear(H, 2 * H + qk_dim + self.v_dim)
        self.hidden = nn.Linear(self.v_dim, H, bias=False)  # U_h (b_h is the bias of W_h, in ``mix``)
        self.qk_scale = nn.Parameter(1.0 + 0.02 * torch.randn(2, qk_dim))  # kappa_q, kappa_k
        self.qk_offset = nn.Parameter(torch.zeros(2, qk_dim))  # mu_q, mu_k
        self.rel_bias = nn.Parameter(0.02 * torch.randn(2 * self.max_positions - 1))
        nn.init.normal_(self.mix.weight, std=0.02)
        nn.init.zeros_(self.mix.bias)

    # ----------------------------------------------------------------- contract
    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(EMA state (B, H, N), keys (B, 0, z), values (B, 0, v))``: no token of the chunk seen yet."""
        ref = self.rel_bias
        device = device or ref.device
        return (
            self.ema.default_state(batch_size, device=device),
            torch.zeros(batch_size, 0, self.qk_dim, dtype=ref.dtype, device=device),
            torch.zeros(batch_size, 0, self.v_dim, dtype=ref.dtype, device=device),
        )

    def forward(self, x: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        """``x`` (B, L, H) -> ``(y (B, L, H), next_state)``; ``next_state`` is None unless ``state`` was given."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"Mega expects (batch, length, {self.d_model}), got {tuple(x.shape)}")
        if state is not None and self.bidirectional:
            raise ValueError("state passing needs a causal layer: this one was built with bidirectional=True")
        ema_state, keys, values = (None, None, None) if state is None else state
        xe, ema_next = self.ema(x, state=ema_state, rate=rate)  # x' (B, L, H)
        if state is None and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return self._blocked_attention(x, xe), None
        y, cache = self._gated_attention(x, xe, keys, values)
        return y, (None if state is None else (ema_next, *cache))

    def step(self, x_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """One token: ``x_t`` (B, H) -> ``(y_t (B, H), next_state)``; exact (see the class docstring)."""
        if self.bidirectional:
            raise RuntimeError("step() needs a causal layer: this one was built with bidirectional=True")
        ema_state, keys, values = state
        xe, ema_next = self.ema.step(x_t, ema_state, rate=rate)  # (B, H)
        y, cache = self._gated_attention(x_t[:, None], xe[:, None], keys, values)
        return y[:, 0], (ema_next, *cache)

    # ----------------------------------------------------------------- the block
    def _attention_parameters(self) -> tuple[list[str], list[Tensor]]:
        """The names and the tensors of the gated attention's and the output projection's parameters
        (all but the EMA's)."""
        named = [(n, p) for n, p in self.named_parameters() if not n.startswith("ema.")]
        return [n for n, _ in named], [p for _, p in named]

    def _blocked_attention(self, x: Tensor, xe: Tensor) -> Tensor:
        """:meth:`_gated_attention` from the start of a sequence with only ``x`` and ``x'`` kept for the
        backward: a :class:`_BlockedAttention` over blocks of whole chunks (bidirectional full attention:
        one block), or for causal full attention a :class:`_PrefixAttention` over blocks of queries."""
        B, L, H = x.shape
        c = self.chunk_size
        width = 3 * H + self.qk_dim * 3 + 3 * self.v_dim  # projections, q, k, gates per token
        random = self.training and isinstance(self.dropout, nn.Dropout)  # dropout masks drawn per block
        names, params = self._attention_parameters()
        if c == 0 and not self.bidirectional:
            per = max(ATTENTION_BLOCK_MIN_ROWS, ATTENTION_BLOCK_ELEMENTS // (B * (L + width)))
            bounds = [(t, min(L, t + per)) for t in range(0, L, per)]
            return _PrefixAttention.apply(self, names, bounds, random, x, xe, *params)
        if c == 0 or L <= c:
            bounds = [(0, L)]
        else:
            per = max(1, ATTENTION_BLOCK_ELEMENTS // (B * (width + c) * c)) * c
            bounds = [(t, min(L, t + per)) for t in range(0, L, per)]
        return _BlockedAttention.apply(self, names, bounds, random, x, xe, *params)

    def _attention_from_start(self, x: Tensor, xe: Tensor) -> Tensor:
        """:meth:`_gated_attention` of a piece of sequence that starts at a chunk boundary, with no cache:
        its output alone."""
        return self._gated_attention(x, xe, None, None)[0]

    def _keys_values(self, x: Tensor, xe: Tensor) -> tuple[Tensor, Tensor]:
        """The keys (B, L, z) and values (B, L, v) that :meth:`_gated_attention` computes, alone."""
        H, z = self.d_model, self.qk_dim
        shared = self.activation(nn.functional.linear(xe, self.mix.weight[H:H + z], self.mix.bias[H:H + z]))
        return torch.addcmul(self.qk_offset[1], shared, self.qk_scale[1]), self.activation(self.value(x))

    def _gated_attention(self, x: Tensor, xe: Tensor, keys: Tensor | None, values: Tensor | None):
        """``x``, ``x'`` (B, L, H) and the cached keys / values of the current chunk -> ``(y (B, L, H),
        (keys, values) to cache)``."""
        H, z = self.d_model, self.qk_dim
        act = self.activation
        v = act(self.value(x))  # (B, L, v)
        phi, shared, gamma, hx = self.mix(xe).split([H, z, self.v_dim, H], dim=-1)
        shared = act(shared)
        q = torch.addcmul(self.qk_offset[0], shared, self.qk_scale[0])  # (B, L, z)
        k = torch.addcmul(self.qk_offset[1], shared, self.qk_scale[1])
        if keys is not None and keys.shape[1]:
            k = torch.cat([keys.to(k.dtype), k], dim=1)  # (B, m + L, z), from the start of the chunk
            v = torch.cat([values.to(v.dtype), v], dim=1)
        out = self._attend(q, k, v)  # (B, L, v)
        gated = out * act(gamma)  # (B, L, v)
        # W_h x' + b_h + U_h (gamma * O) as one GEMM accumulating into the W_h x' slice (no extra pass)
        h = torch.addmm(hx.reshape(-1, H), gated.reshape(-1, self.v_dim), self.hidden.weight.t())
        h = self.dropout(act(h.view_as(hx)))  # (B, L, H)
        y = torch.lerp(x, h.to(x.dtype), torch.sigmoid(phi).to(x.dtype))  # phi h + (1 - phi) x (one dtype under autocast)
        T = k.shape[1]
        start = (T // self.chunk_size) * self.chunk_size if self.chunk_size else 0
        return self.output(y), (k[:, start:], v[:, start:])

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Queries (B, L, z) of the last L of the T = m + L tokens whose keys / values (B, T, .) are given
        (the first at a chunk boundary) -> (B, L, v)."""
        L, T = q.shape[1], k.shape[1]
        m = T - L
        c = self.chunk_size
        device = q.device
        if c == 0 or T <= c:  # one chunk: the L queries against every key
            q_pos = torch.arange(m, T, device=device)
            k_pos = torch.arange(T, device=device)
            return self._block(q, k, v, q_pos, k_pos, None)
        n = -(-T // c)  # chunks
        pad = n * c - T
        if m or pad:  # (a no-op pad would still copy)
            q = nn.functional.pad(q, (0, 0, m, pad))  # queries aligned with the keys: (B, n c, z)
            k = nn.functional.pad(k, (0, 0, 0, pad))
            v = nn.functional.pad(v, (0, 0, 0, pad))
        B = q.shape[0]
        pos = torch.arange(c, device=device)
        valid = (torch.arange(n * c, device=device) < T).view(n, 1, c) if pad else None  # keys that exist
        out = self._block(q.view(B, n, c, -1), k.view(B, n, c, -1), v.view(B, n, c, -1), pos, pos, valid)
        return out.reshape(B, n * c, -1)[:, m:T]

    def _block(self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, valid: Tensor | None) -> Tensor:
        """Attention of queries (..., Lq, z) at chunk positions ``q_pos`` over keys (..., Lk, z) at ``k_pos``;
        ``valid`` (..., 1, Lk) masks padding keys."""
        offsets = q_pos[:, None] - k_pos[None, :]  # (Lq, Lk)
        P = self.max_positions
        bias = self.rel_bias[offsets.clamp(-(P - 1), P - 1) + P - 1]  # (Lq, Lk)
        allowed = (offsets >= 0) if not self.bidirectional else torch.ones_like(offsets, dtype=torch.bool)
        if valid is not None:
            allowed = allowed & valid  # (..., Lq, Lk)
        scores = q @ k.transpose(-1, -2)  # (..., Lq, Lk)
        if self.attention == "softmax":
            scores = (scores / math.sqrt(self.qk_dim) + bias).masked_fill(~allowed, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
        else:
            # laplace(s / n + b) = (1 + erf(s a + c)) / 2 with a = 1 / (n sigma sqrt 2), c = (b - mu) / (sigma sqrt 2):
            # three passes over the scores, the mask folded into the last
            width = _LAPLACE_SIGMA * math.sqrt(2.0)
            half = allowed.to(scores.dtype) / 2
            count = allowed.sum(-1, keepdim=True).clamp_min(1).to(scores.dtype)  # keys per query
            erf = torch.erf(torch.addcmul((bias - _LAPLACE_MU) / width, scores, 1 / (count * width)))
            weights = torch.addcmul(half, erf, half)
        return self.dropout(weights) @ v

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, chunk_size={self.chunk_size}, qk_dim={self.qk_dim}, "
            f"v_dim={self.v_dim}, attention={self.attention}, bidirectional={self.bidirectional}"
        )


class _BlockedAttention(torch.autograd.Function):
    """Mega's gated attention (with its output projection) over blocks of whole chunks; only ``x`` and
    ``x'`` are kept for the backward.

    The plain composition keeps, for every token, its projections (the mixed ``x'`` projection, values,
    queries, keys, gates) and its chunk's scores and attention weights (several (B, L, chunk) tensors);
    the chunks are independent (a token attends within its own chunk), so the backward reruns the block
    on one block of chunks at a time under autograd (the same operators, so the same gradient formulas)
    and writes the block's input gradients, summing the parameters' gradients over blocks.  The price is
    the block's forward once more in the backward.  ``layer._attention_from_start(x, x')`` is the block
    on a piece of the sequence that starts at a chunk boundary, run with ``params`` as the layer's
    parameters ``names`` (normally the layer's own), in the forward and in the recompute (under
    ``torch.func.functional_call`` the layer holds other tensors again by the backward: see
    :func:`ssmcore.layers.base.with_parameters`).  With ``random`` (dropout active) the
    random generator's state is kept before each block and restored for its recomputation, so the
    backward sees the forward's dropout masks.  The backward is not itself differentiable
    (``once_differentiable``), like the fused output block's: no double backward through the layer.
    """

    @staticmethod
    def forward(ctx, layer: Mega, names: list[str], bounds: list[tuple[int, int]], random: bool, x: Tensor,
                xe: Tensor, *params: Tensor) -> Tensor:
        return _forward_blocks(ctx, layer, names, bounds, random, x, xe, params, cache=False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, xe, params, wanted, d_params, dx, dxe = _backward_start(ctx)
        run = with_parameters(ctx.layer, "_attention_from_start", ctx.names, params)
        for j, (t0, t1) in enumerate(ctx.bounds):
            xs, xes, o = _rerun_block(ctx, j, run, x, xe, dx is not None, dxe is not None)
            leaves = [t for t in (xs, xes) if t.requires_grad]
            g = torch.autograd.grad(o, leaves + [params[i] for i in wanted], grad[:, t0:t1], allow_unused=True)
            if dx is not None:
                dx[:, t0:t1] = g[0]
            if dxe is not None:
                dxe[:, t0:t1] = g[len(leaves) - 1]
            accumulate_grads(d_params, wanted, g[len(leaves):])
        return (None, None, None, None, dx, dxe, *d_params)


class _PrefixAttention(torch.autograd.Function):
    """Mega's causal full attention (with its gating and output projection) over blocks of queries;
    only ``x`` and ``x'`` are kept for the backward.

    Block j's queries attend to every key before them: the forward runs ``run(x_j, x'_j, keys, values)``
    -- :meth:`Mega._gated_attention` with the keys and values of the earlier blocks as its cache, as
    state passing does -- and the cache grows block by block.  The backward recomputes all keys and
    values once (``keys_values``, without autograd), then walks the blocks from the last: it reruns
    block j under autograd with the earlier keys and values as leaves, back-propagates the block's
    output gradient together with the gradient that the later blocks sent to block j's own keys and
    values, and adds the gradient of the earlier keys and values to what their blocks will receive.
    Transients are one block's (its queries against all earlier keys), never (L, L).  ``names``,
    ``params``, ``random`` and the autocast state as in :class:`_BlockedAttention`.
    """

    @staticmethod
    def forward(ctx, layer: Mega, names: list[str], bounds: list[tuple[int, int]], random: bool, x: Tensor,
                xe: Tensor, *params: Tensor) -> Tensor:
        return _forward_blocks(ctx, layer, names, bounds, random, x, xe, params, cache=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, xe, params, wanted, d_params, dx, dxe = _backward_start(ctx)
        run = with_parameters(ctx.layer, "_gated_attention", ctx.names, params)
        device_type, enabled, dtype = ctx.autocast
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            keys, values = with_parameters(ctx.layer, "_keys_values", ctx.names, params)(x, xe)
        d_keys, d_values = torch.zeros_like(keys), torch.zeros_like(values)
        for j in range(len(ctx.bounds) - 1, -1, -1):
            t0, t1 = ctx.bounds[j]
            prefix = [t[:, :t0].detach().requires_grad_() if t0 else None for t in (keys, values)]
            xs, xes, (o, (k_all, v_all)) = _rerun_block(ctx, j, run, x, xe, dx is not None, dxe is not None, *prefix)
            # the block's own keys and values (the cache's last rows) get what the later blocks sent
            g_k = nn.functional.pad(d_keys[:, t0:t1], (0, 0, t0, 0)).to(k_all.dtype)
            g_v = nn.functional.pad(d_values[:, t0:t1], (0, 0, t0, 0)).to(v_all.dtype)
            leaves = [t for t in (xs, xes) if t.requires_grad] + [t for t in prefix if t is not None]
            g = torch.autograd.grad((o, k_all, v_all), leaves + [params[i] for i in wanted],
                                    (grad[:, t0:t1], g_k, g_v), allow_unused=True)
            n = 0
            if dx is not None:
                dx[:, t0:t1], n = g[n], n + 1
            if dxe is not None:
                dxe[:, t0:t1], n = g[n], n + 1
            if t0:
                d_keys[:, :t0] += g[n]
                d_values[:, :t0] += g[n + 1]
                n += 2
            accumulate_grads(d_params, wanted, g[n:])
        return (None, None, None, None, dx, dxe, *d_params)


def _forward_blocks(ctx, layer: Mega, names: list[str], bounds: list[tuple[int, int]], random: bool, x: Tensor,
                    xe: Tensor, params: tuple[Tensor, ...], cache: bool) -> Tensor:
    """The shared forward of both blocked functions: the block on each piece ``bounds`` of the sequence, with
    ``params`` as the layer's parameters ``names``; with ``cache`` each piece attends to the keys and values
    of the pieces before it (:meth:`Mega._gated_attention`), else it starts at a chunk boundary with none
    (:meth:`Mega._attention_from_start`).  Keeps what the backward needs on ``ctx``."""
    device_type = x.device.type
    ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
    run = with_parameters(layer, "_gated_attention" if cache else "_attention_from_start", names, list(params))
    out, keys_values, ctx.rng = None, (None, None), []
    for t0, t1 in bounds:
        if random:
            ctx.rng.append(_rng_state(x.device))
        if cache:
            o, keys_values = run(x[:, t0:t1], xe[:, t0:t1], *keys_values)
        else:
            o = run(x[:, t0:t1], xe[:, t0:t1])
        if out is None:
            out = o.new_empty((o.shape[0], x.shape[1], *o.shape[2:]))
        out[:, t0:t1] = o
    ctx.layer, ctx.names, ctx.bounds = layer, names, bounds
    ctx.save_for_backward(x, xe, *params)
    return out


def _rerun_block(ctx, j: int, run, x: Tensor, xe: Tensor, want_x: bool, want_xe: bool, *cache) -> tuple:
    """Block ``j`` of the forward run again under autograd for a blocked backward: ``(x_j, x'_j, run's output)``,
    the two pieces as fresh leaves (requiring grad as asked), with the forward's autocast state and, when
    dropout was active, its random state (restored only inside the rerun)."""
    t0, t1 = ctx.bounds[j]
    xs = x[:, t0:t1].detach().requires_grad_(want_x)
    xes = xe[:, t0:t1].detach().requires_grad_(want_xe)
    device_type, enabled, dtype = ctx.autocast
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=bool(ctx.rng)):
        if ctx.rng:
            _set_rng_state(x.device, ctx.rng[j])
        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            return xs, xes, run(xs, xes, *cache)


def _backward_start(ctx) -> tuple:
    """The shared start of both blocked backwards: ``(x, x', params, wanted, d_params, dx, dxe)``; the
    forward's inputs are (layer, names, bounds, random, x, x', *params)."""
    x, xe, *params = ctx.saved_tensors
    need = ctx.needs_input_grad[4:]
    wanted = [i for i in range(len(params)) if need[2 + i]]
    d_params: list[Tensor | None] = [None] * len(params)
    dx = torch.empty_like(x) if need[0] else None
    dxe = torch.empty_like(xe) if need[1] else None
    return x, xe, params, wanted, d_params, dx, dxe


def _rng_state(device: torch.device) -> Tensor:
    """The state of the random generator that draws dropout masks on ``device``."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
