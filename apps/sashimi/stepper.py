"""Fast exact recurrent stepping of a whole SaShiMi model: ``FastStepper(model).start(state).step(token)``.

Every causal SSM that SaShiMi uses is, per feature, a *diagonal plus low-rank* linear recurrence
on the kept half of a conjugate-symmetric complex state ``x`` (M modes):

    q_k = Re(a_k . x) + c_k u            (rank terms; none for diagonal layers)
    x'  = Lambda1 * x + b u - sum_k G_k q_k
    y   = Re(Cy . x') + D u

* S4 (DPLR, bilinear): with ``E = (1 - dt/2 Lambda)^{-1}`` the bilinear step is
  ``x' = -x + (I - dt/2 A)^{-1} (2 x + dt B u)`` and Woodbury turns the inverse into
  ``Lambda1 = 2E - 1, b = E dt B, a_k = 4 P_k E, c_k = 2 Re(P_k . b), G = dt/2 E P^* S``
  (``S = (I + dt/2 P E P^*)^{-1}``, r x r): exact, O(N r) per feature, no diagonalisation of A.
* diagonal layers (S4D, DLR, DSS, S4-PTD): ``Lambda1 = dA, b = dB``, no rank terms.

All of it is precomputed once per parameter version (:meth:`ssmcore.layers.base.SSMLayer.cached`,
so an optimiser step or ``load_state_dict`` invalidates it) and run in real arithmetic on
preallocated state, with layer norm, GLU, feed-forward and pooling inlined: a handful of tensor
ops per block and no module dispatch.  The per-tier block stacks are plain functions of tensors,
so ``compile=True`` hands them to ``torch.compile`` (fused C++ loops on CPU).  Layers outside this
form (S5's state is shared across features) step through the model's own ``step()``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apps.sashimi.model import SaShiMi
from ssmcore.blocks import FeedForward, ResidualBlock
from ssmcore.layers.base import SSMLayer
from ssmcore.layers.s4 import S4
from ssmcore.layers.s4d import DiagonalConvLayer


class _ModuleRun:
    """Steps the model's own ``step()`` (every layer, exact; the fallback)."""

    def __init__(self, model: SaShiMi, state: Any) -> None:
        self.model, self.state = model, state

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        logits, self.state = self.model.step(token, self.state)
        return logits


def _real_pair(z: Tensor) -> tuple[Tensor, Tensor]:
    return z.real.contiguous(), z.imag.contiguous()


def recurrence_terms(layer: SSMLayer, dtype: torch.dtype) -> dict[str, Tensor]:
    """The diagonal-plus-low-rank terms of ``layer`` at rate 1 (its public ``recurrence()``), real tensors."""
    rec = layer.recurrence(1.0)
    lam = rec.lam
    if rec.rank:
        a, c, G = rec.a, rec.c, rec.G
    else:
        a = G = lam.new_zeros((0, *lam.shape))
        c = lam.real.new_zeros((0, lam.shape[0]))
    out = {}
    for name, z in (("lam", lam), ("b", rec.b), ("a", a), ("G", G), ("C", rec.C[0])):
        out[name + "_r"], out[name + "_i"] = (v.to(dtype) for v in _real_pair(z))
    out["c"], out["D"] = c.to(dtype), rec.D[0].detach().to(dtype)
    return out


def supported(model: SaShiMi) -> bool:
    """Whether every block of ``model`` fits the fused path (else it steps through the modules)."""
    for block in model.modules():
        if isinstance(block, ResidualBlock):
            if not block.prenorm or block.norm.kind != "layer":
                return False
            layer = block.layer
            if isinstance(layer, FeedForward):
                continue
            if not isinstance(layer, (S4, DiagonalConvLayer)) or layer.channels != 1 or layer.bidirectional:
                return False
            if not isinstance(layer.activation, nn.GELU) or layer.activation.approximate != "none":
                return False
            if not (isinstance(layer.output, nn.Sequential) and isinstance(layer.output[-1], nn.GLU)):
                return False
    return True


def _block_params(block: ResidualBlock, dtype: torch.dtype) -> tuple[str, list[Tensor]]:
    norm = block.norm.norm
    head = [norm.weight.detach().to(dtype), norm.bias.detach().to(dtype)]
    layer = block.layer
    if isinstance(layer, FeedForward):
        first, last = layer.net[0], layer.net[-1]
        return "ff", head + [first.weight.detach().t().contiguous().to(dtype), first.bias.detach().to(dtype),
                             last.weight.detach().t().contiguous().to(dtype), last.bias.detach().to(dtype)]
    t = layer.cached(("fused-step", dtype), lambda: recurrence_terms(layer, dtype))
    linear = layer.output[0]
    return "ssm", head + [t[k] for k in ("lam_r", "lam_i", "b_r", "b_i", "a_r", "a_i", "c", "G_r", "G_i",
                                         "C_r", "C_i", "D")] + [
        linear.weight.detach().t().contiguous().to(dtype), linear.bias.detach().to(dtype)]


def gelu(x: Tensor) -> Tensor:
    """Exact (erf) GELU; spelled out because ``F.gelu`` on tiny CPU tensors costs ~5x three plain ops."""
    return x * (0.5 + 0.5 * torch.erf(x * 0.7071067811865476))


def run_blocks(kinds: list[str], params: list[list[Tensor]], x: Tensor, states: list[Tensor],
               eps: float = 1e-5) -> tuple[Tensor, list[Tensor]]:
    """A stack of prenorm residual blocks on ``x`` (B, H); ``states`` holds (xr, xi) per SSM block, flat."""
    H = x.shape[-1]
    new: list[Tensor] = []
    i = 0
    for kind, p in zip(kinds, params, strict=True):
        u = F.layer_norm(x, (H,), p[0], p[1], eps)
        if kind == "ff":
            h = gelu(torch.addmm(p[3], u, p[2]))
            x = torch.addmm(p[5], h, p[4]) + x
            continue
        lam_r, lam_i, b_r, b_i, a_r, a_i, c, G_r, G_i, C_r, C_i, D, W, bias = p[2:]
        xr, xi = states[i], states[i + 1]
        uu = u.unsqueeze(-1)  # (B, H, 1)
        nr = lam_r * xr - lam_i * xi + b_r * uu
        ni = lam_r * xi + lam_i * xr + b_i * uu
        for k in range(a_r.shape[0]):
            q = ((a_r[k] * xr - a_i[k] * xi).sum(-1) + c[k] * u).unsqueeze(-1)  # (B, H, 1)
            nr = nr - G_r[k] * q
            ni = ni - G_i[k] * q
        y = (C_r * nr - C_i * ni).sum(-1) + D * u  # (B, H)
        h = torch.addmm(bias, gelu(y), W)  # (B, 2H)
        x = x + h[:, :H] * torch.sigmoid(h[:, H:])
        new += [nr, ni]
        i += 2
    return x, new


def run_blocks_complex(kinds: list[str], params: list[list[Tensor]], x: Tensor, states: list[Tensor],
                       eps: float = 1e-5) -> tuple[Tensor, list[Tensor]]:
    """:func:`run_blocks` with one complex state (B, H, M) per SSM block: fewer, larger ops (eager mode)."""
    H = x.shape[-1]
    new: list[Tensor] = []
    i = 0
    for kind, p in zip(kinds, params, strict=True):
        u = F.layer_norm(x, (H,), p[0], p[1], eps)
        if kind == "ff":
            h = gelu(torch.addmm(p[3], u, p[2]))
            x = torch.addmm(x, h, p[4]).add_(p[5])
            continue
        lam, b, a_ri, c, G, C_ri, D, W, bias = p[2:]
        x_state = states[i]
        uu = u.unsqueeze(-1)  # (B, H, 1)
        n = torch.addcmul(lam * x_state, b, uu)
        if a_ri.shape[0]:
            x_ri = torch.view_as_real(x_state).flatten(-2)  # (B, H, 2M): Re(a . x) as one real product
            for k in range(a_ri.shape[0]):
                q = torch.addcmul((x_ri * a_ri[k]).sum(-1), c[k], u).unsqueeze(-1)  # (B, H, 1)
                n = n - G[k] * q
        y = torch.addcmul((torch.view_as_real(n).flatten(-2) * C_ri).sum(-1), D, u)  # (B, H)
        h = torch.addmm(bias, gelu(y), W)  # (B, 2H)
        x = torch.addcmul(x, h[:, :H], torch.sigmoid(h[:, H:]))
        new.append(n)
        i += 1
    return x, new


def _complex_params(params: list[Tensor]) -> list[Tensor]:
    """Real-pair block parameters (see :func:`_block_params`) -> those of :func:`run_blocks_complex`."""
    ln_w, ln_b, lam_r, lam_i, b_r, b_i, a_r, a_i, c, G_r, G_i, C_r, C_i, D, W, bias = params

    def interleave(re: Tensor, im: Tensor) -> Tensor:  # Re(z . x) = sum(view_as_real(x) * [re, -im])
        return torch.stack([re, -im], dim=-1).flatten(-2).contiguous()

    return [ln_w, ln_b, torch.complex(lam_r, lam_i), torch.complex(b_r, b_i), interleave(a_r, a_i), c,
            torch.complex(G_r, G_i), interleave(C_r, C_i), D, W, bias]


class _Tier:
    """One stack of blocks, precomputed: ``tier(x, states) -> (x, states)``."""

    def __init__(self, blocks: nn.ModuleList, dtype: torch.dtype, compile: bool) -> None:
        built = [_block_params(b, dtype) for b in blocks]
        self.kinds, self.params = [k for k, _ in built], [p for _, p in built]
        self.eps = blocks[0].norm.norm.eps if len(blocks) else 1e-5
        # eager: complex states (fewest ops); compiled: real pairs (inductor fuses them into C++ loops)
        self.real = compile
        if compile and len(blocks):
            self.fn = torch.compile(self._run, dynamic=False, fullgraph=True)
        else:
            self.params = [p if k == "ff" else _complex_params(p) for k, p in zip(self.kinds, self.params, strict=True)]
            self.fn = self._run

    def _run(self, x: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        runner = run_blocks if self.real else run_blocks_complex
        return runner(self.kinds, self.params, x, states, self.eps)

    def __call__(self, x: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        if not self.kinds:
            return x, states
        return self.fn(x, states)

    def import_states(self, module_states: list, dtype: torch.dtype) -> list[Tensor]:
        """The model's per-block states (complex (B, H, M) or None) -> flat list (complex, or (xr, xi) pairs)."""
        out: list[Tensor] = []
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        for kind, s in zip(self.kinds, module_states, strict=True):
            if kind == "ssm":
                if self.real:
                    out += [s.real.to(dtype).contiguous(), s.imag.to(dtype).contiguous()]
                else:
                    out.append(s.to(complex_dtype).clone())
        return out


class _FusedRun:
    """The fused recurrent state of one batch: SSM states, pooling buffers and their phases."""

    def __init__(self, stepper: FastStepper, state: dict) -> None:
        self.s, dtype = stepper, stepper.dtype
        bb = stepper.model.backbone
        self.center = stepper.center.import_states(state["center"], dtype)
        self.up = [t.import_states(state["up"][i][1], dtype) for i, t in enumerate(stepper.up)]
        self.down_blocks = [t.import_states(state["down_blocks"][i], dtype) for i, t in enumerate(stepper.down_blocks)]
        self.down_buf, self.down_count, self.pending, self.next_out = [], [], [], []
        for i, p in enumerate(bb.pool):
            buffered = state["down"][i]  # (B, k, H)
            batch, k, H = buffered.shape
            buf = buffered.new_zeros(batch, p, H, dtype=dtype)
            buf[:, :k] = buffered
            self.down_buf.append(buf)
            self.down_count.append(k)
            pend = state["up"][i][0].to(dtype)  # (B, j, H')
            full = pend.new_zeros(batch, p, pend.shape[-1])
            full[:, p - pend.shape[1]:] = pend
            self.pending.append(full)
            self.next_out.append(p - pend.shape[1])

    def _level(self, i: int, x: Tensor) -> Tensor:
        s = self.s
        if i == len(s.pool):
            y, self.center = s.center(x, self.center)
            return y + x if s.pool else y
        x, self.down_blocks[i] = s.down_blocks[i](x, self.down_blocks[i])
        p = s.pool[i]
        self.down_buf[i][:, self.down_count[i]] = x
        self.down_count[i] += 1
        below = None
        if self.down_count[i] == p:
            self.down_count[i] = 0
            w, bias = s.down_linear[i]
            below = self._level(i + 1, torch.addmm(bias, self.down_buf[i].flatten(1), w))
        skip = self.pending[i][:, self.next_out[i]] + x
        self.next_out[i] += 1
        if self.next_out[i] == p:
            if below is None:
                raise RuntimeError("pooling out of sync: an UpPool ran empty without a DownPool output")
            w, bias = s.up_linear[i]
            self.pending[i] = torch.addmm(bias, below, w).view(below.shape[0], p, -1)
            self.next_out[i] = 0
        y, self.up[i] = s.up[i](skip, self.up[i])
        return y + skip

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        """``token`` (B,) long -> logits (B, n_classes) of the next token."""
        s = self.s
        x = self._level(0, F.embedding(token, s.embedding))
        x = F.layer_norm(x, (x.shape[-1],), s.final_norm[0], s.final_norm[1], s.final_eps)
        return torch.addmm(s.decoder[1], x, s.decoder[0])


BACKENDS = ("auto", "native", "torch", "compile", "module")


class FastStepper:
    """Exact recurrent stepping of a :class:`SaShiMi` model.

    ``FastStepper(model).start(state)`` takes a state of ``model`` (``default_state`` or the one a
    prefix left in convolution mode) and returns a run whose ``step(token (B,)) -> logits (B, K)``.
    Backends: ``native`` (the C step of :mod:`apps.sashimi.native`, float32 CPU), ``torch`` (the
    fused tensor ops here, any device), ``compile`` (those, compiled per tier by ``torch.compile``;
    the first steps take minutes), ``module`` (the model's own ``step()``, any layer).  ``auto``
    picks native on CPU when it builds, torch otherwise, and module for layers outside the fused
    form (S5).  The precomputed terms follow the parameters (rebuilt by ``start`` after a change).
    """

    def __init__(self, model: SaShiMi, compile: bool = False, backend: str = "auto", threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown stepping backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.model, self.threads = model, threads
        fused = supported(model)
        if backend == "auto":
            backend = "compile" if compile else "torch"
            if fused and not compile and model.embedding.weight.device.type == "cpu" \
                    and model.embedding.weight.dtype == torch.float32:
                from apps.sashimi.native import available

                backend = "native" if available() else "torch"
        if backend in ("native", "torch", "compile") and not fused:
            backend = "module"
        self.backend, self.compile = backend, backend == "compile"
        self._signature: Any = None
        self._native: Any = None

    def _build(self) -> None:
        model = self.model
        signature = tuple((p.data_ptr(), p._version, p.dtype) for p in model.parameters())
        if signature == self._signature:
            return
        if self.backend == "native":
            from apps.sashimi.native import NativeStepper

            self._native = NativeStepper(model, self.threads)
            self._signature = signature
            return
        bb, dtype = model.backbone, model.embedding.weight.dtype
        self.dtype, self.pool = dtype, bb.pool
        with torch.no_grad():
            self.embedding = model.embedding.weight.detach()
            self.center = _Tier(bb.center, dtype, self.compile)
            self.up = [_Tier(stage["blocks"], dtype, self.compile) for stage in bb.up]
            self.down_blocks = [_Tier(blocks, dtype, self.compile) for blocks in bb.down_blocks]
            self.down_linear = [(d.linear.weight.detach().t().contiguous(), d.linear.bias.detach()) for d in bb.down]
            self.up_linear = [(s["pool"].linear.weight.detach().t().contiguous(), s["pool"].linear.bias.detach())
                              for s in bb.up]
            norm = bb.norm.norm
            self.final_norm, self.final_eps = (norm.weight.detach(), norm.bias.detach()), norm.eps
            self.decoder = (bb.decoder.weight.detach().t().contiguous(), bb.decoder.bias.detach())
        self._signature = signature

    def start(self, state: Any) -> Any:
        """A run continuing from ``state`` (the model's own state format)."""
        if self.backend == "module":
            return _ModuleRun(self.model, state)
        self._build()
        if self.backend == "native":
            return self._native.start(state)
        return _FusedRun(self, state)
