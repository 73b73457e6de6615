"""Fast exact recurrent stepping of a whole SaShiMi model: ``FastStepper(model).start(state).step(token)``.

Every causal SSM that SaShiMi uses publishes its discrete recurrence
(:meth:`ssmcore.layers.base.SSMLayer.recurrence`).  Per feature it is a *diagonal plus low-rank*
linear recurrence on the kept half of a conjugate-symmetric complex state ``x`` (M modes):

    q_k = Re(a_k . x) + c_k u            (rank terms: S4's exact bilinear step; none for diagonal layers)
    x'  = Lambda1 * x + b u - sum_k G_k q_k
    y   = Re(C . x') + D u

or, for S5, one MIMO recurrence whose state is shared by the features (``x' = Lambda1 x + b @ u``).
Those terms are cached per parameter version by the layers (an optimiser step or
``load_state_dict`` recomputes them) and run here in plain tensor ops on preallocated state, with
layer norm, GLU, feed-forward and pooling inlined: a handful of ops per block and no module
dispatch.  The U-Net walk is :func:`ssmcore.blocks.unet_step`, the same as the model's ``step()``.
The ``compile`` backend hands each tier's block stack to ``torch.compile`` (fused C++ loops on CPU).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apps.sashimi import native
from apps.sashimi.model import SaShiMi
from apps.sashimi.recurrent import block_terms, kinds, pool_states, tier_states
from ssmcore.blocks import unet_step


class _ModuleRun:
    """Steps the model's own ``step()`` (every layer, exact; the fallback)."""

    def __init__(self, model: SaShiMi, state: Any) -> None:
        self.model, self.state = model, state

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        logits, self.state = self.model.step(token, self.state)
        return logits


def supported(model: SaShiMi) -> bool:
    """Whether every block of ``model`` fits the fused torch path (else it steps through the modules)."""
    return None not in kinds(model)


def gelu(x: Tensor) -> Tensor:
    """Exact (erf) GELU; spelled out because ``F.gelu`` on tiny CPU tensors costs ~5x three plain ops."""
    return x * (0.5 + 0.5 * torch.erf(x * 0.7071067811865476))


def _glu_residual(x: Tensor, y: Tensor, W: Tensor, bias: Tensor) -> Tensor:
    """``x + GLU(gelu(y) W + bias)``: the layer's activation, output projection and the residual."""
    H = x.shape[-1]
    h = torch.addmm(bias, gelu(y), W)  # (B, 2H)
    return torch.addcmul(x, h[:, :H], torch.sigmoid(h[:, H:]))


def run_blocks(kinds: list[str], params: list[list[Tensor]], x: Tensor, states: list[Tensor],
               eps: float = 1e-5) -> tuple[Tensor, list[Tensor]]:
    """A stack of prenorm residual blocks on ``x`` (B, H); ``states`` holds (xr, xi) per SSM block, flat
    (real arithmetic, for ``torch.compile``; per-feature SSM blocks only)."""
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
        x = _glu_residual(x, y, W, bias)
        new += [nr, ni]
        i += 2
    return x, new


def run_blocks_complex(kinds: list[str], params: list[list[Tensor]], x: Tensor, states: list[Tensor],
                       eps: float = 1e-5) -> tuple[Tensor, list[Tensor]]:
    """:func:`run_blocks` with one complex state per SSM block ((B, H, M), or (B, M) for MIMO): fewer,
    larger ops (eager mode)."""
    H = x.shape[-1]
    new: list[Tensor] = []
    i = 0
    for kind, p in zip(kinds, params, strict=True):
        u = F.layer_norm(x, (H,), p[0], p[1], eps)
        if kind == "ff":
            h = gelu(torch.addmm(p[3], u, p[2]))
            x = torch.addmm(x, h, p[4]).add_(p[5])
            continue
        if kind == "mimo":
            lam, b_t, C_t, D, W, bias = p[2:]  # (M,), (H, M), (M, H): transposed for the matmuls
            n = torch.addmm(lam * states[i], u.to(b_t.dtype), b_t)  # (B, M)
            y = torch.addcmul(torch.mm(n, C_t).real, D, u)  # (B, H)
        else:
            lam, b, a_ri, c, G, C_ri, D, W, bias = p[2:]
            x_state = states[i]
            n = torch.addcmul(lam * x_state, b, u.unsqueeze(-1))  # (B, H, M)
            if a_ri.shape[0]:
                x_ri = torch.view_as_real(x_state).flatten(-2)  # (B, H, 2M): Re(a . x) as one real product
                for k in range(a_ri.shape[0]):
                    q = torch.addcmul((x_ri * a_ri[k]).sum(-1), c[k], u).unsqueeze(-1)  # (B, H, 1)
                    n = n - G[k] * q
            y = torch.addcmul((torch.view_as_real(n).flatten(-2) * C_ri).sum(-1), D, u)  # (B, H)
        x = _glu_residual(x, y, W, bias)
        new.append(n)
        i += 1
    return x, new


def _complex_params(kind: str, params: list[Tensor]) -> list[Tensor]:
    """Block tensors of :func:`apps.sashimi.recurrent.block_terms` -> those of :func:`run_blocks_complex`."""
    if kind == "ff":
        return params
    if kind == "mimo":
        ln_w, ln_b, lam, b, C, D, W, bias = params
        return [ln_w, ln_b, lam, b.t().contiguous(), C.t().contiguous(), D, W, bias]
    ln_w, ln_b, lam_r, lam_i, b_r, b_i, a_r, a_i, c, G_r, G_i, C_r, C_i, D, W, bias = params

    def interleave(re: Tensor, im: Tensor) -> Tensor:  # Re(z . x) = sum(view_as_real(x) * [re, -im])
        return torch.stack([re, -im], dim=-1).flatten(-2).contiguous()

    return [ln_w, ln_b, torch.complex(lam_r, lam_i), torch.complex(b_r, b_i), interleave(a_r, a_i), c,
            torch.complex(G_r, G_i), interleave(C_r, C_i), D, W, bias]


class _Tier:
    """One stack of blocks, precomputed: ``tier(x, states) -> (x, states)``."""

    def __init__(self, blocks: nn.ModuleList, dtype: torch.dtype, compile: bool) -> None:
        built = [block_terms(b, dtype) for b in blocks]
        self.kinds, self.params = [k for k, _ in built], [p for _, p in built]
        self.eps = blocks[0].norm.affine()[2] if len(blocks) else 1e-5
        # eager: complex states (fewest ops); compiled: real pairs (inductor fuses them into C++ loops)
        self.real = compile
        if compile and len(blocks):
            self.fn = torch.compile(self._run, dynamic=False, fullgraph=True)
        else:
            self.params = [_complex_params(k, p) for k, p in zip(self.kinds, self.params, strict=True)]
            self.fn = self._run

    def _run(self, x: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        runner = run_blocks if self.real else run_blocks_complex
        return runner(self.kinds, self.params, x, states, self.eps)

    def __call__(self, x: Tensor, states: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        if not self.kinds:
            return x, states
        return self.fn(x, states)

    def import_states(self, module_states: list, dtype: torch.dtype) -> list[Tensor]:
        """The model's per-block states (complex, or None) -> flat list (complex, or (xr, xi) pairs)."""
        out: list[Tensor] = []
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        for kind, s in zip(self.kinds, module_states, strict=True):
            if kind == "ff":
                continue
            if self.real:
                out += [s.real.to(dtype).contiguous(), s.imag.to(dtype).contiguous()]
            else:
                out.append(s.to(complex_dtype).clone())
        return out


class _FusedRun:
    """The fused recurrent state of one batch: SSM states, pooling buffers and their phases."""

    def __init__(self, stepper: FastStepper, state: dict) -> None:
        self.s, dtype = stepper, stepper.dtype
        self.states = {key: tier.import_states(module_states, dtype) for (key, tier), module_states
                       in zip(stepper.tiers.items(), tier_states(stepper.model, state), strict=True)}
        self.down_buf, self.down_count, self.pending, self.next_out = [], [], [], []
        for p, (buffered, pend) in zip(stepper.pool, pool_states(stepper.model, state), strict=True):
            batch, k, H = buffered.shape  # (B, k, H) inputs since the last window
            buf = buffered.new_zeros(batch, p, H, dtype=dtype)
            buf[:, :k] = buffered
            self.down_buf.append(buf)
            self.down_count.append(k)
            full = pend.new_zeros(batch, p, pend.shape[-1], dtype=dtype)  # (B, j, H') pending outputs
            full[:, p - pend.shape[1]:] = pend
            self.pending.append(full)
            self.next_out.append(p - pend.shape[1])

    def _tier(self, key: tuple, x: Tensor) -> Tensor:
        x, self.states[key] = self.s.tiers[key](x, self.states[key])
        return x

    def _down(self, i: int, x: Tensor) -> Tensor | None:
        self.down_buf[i][:, self.down_count[i]] = x
        self.down_count[i] += 1
        if self.down_count[i] < self.s.pool[i]:
            return None
        self.down_count[i] = 0
        w, bias = self.s.down_linear[i]
        return torch.addmm(bias, self.down_buf[i].flatten(1), w)

    def _up(self, i: int, below: Tensor | None) -> Tensor:
        y = self.pending[i][:, self.next_out[i]]
        self.next_out[i] += 1
        if self.next_out[i] == self.s.pool[i]:
            if below is None:
                raise RuntimeError("pooling out of sync: an UpPool ran empty without a DownPool output")
            w, bias = self.s.up_linear[i]
            self.pending[i] = torch.addmm(bias, below, w).view(below.shape[0], self.s.pool[i], -1)
            self.next_out[i] = 0
        return y

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        """``token`` (B,) long -> logits (B, n_classes) of the next token."""
        s = self.s
        x = unet_step(len(s.pool), F.embedding(token, s.embedding), self._tier, self._down, self._up)
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
    picks native on CPU when it builds, torch otherwise.  S5 (MIMO) blocks run on the torch backend
    (native and compile fall back to it); layers outside the fused forms step through the modules.
    The precomputed terms follow the parameters (rebuilt by ``start`` after a change).
    ``weights="bf16"`` or ``"int8"`` (native backend only) stores the linears' matrices in bfloat16 or
    in int8 with a scale per column: opt-in approximations of the exact float32 step (see
    :func:`apps.sashimi.native.compile_program`).
    """

    def __init__(self, model: SaShiMi, backend: str = "auto", threads: int | None = None,
                 weights: str = "float32") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown stepping backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if weights not in native.WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(native.WEIGHTS)}, got {weights!r}")
        self.model, self.threads, self.weights = model, threads, weights
        found = kinds(model)
        cpu32 = model.embedding.weight.device.type == "cpu" and model.embedding.weight.dtype == torch.float32
        if None in found:
            backend = "module"
        elif "mimo" in found and backend in ("auto", "native", "compile"):
            backend = "torch"
        elif backend == "auto":
            backend = "native" if cpu32 and native.available() else "torch"
        if weights != "float32" and backend != "native":
            raise ValueError(f"{weights} weights are an option of the native step (float32 CPU model with S4/S4D-style "
                             f"blocks), not of the {backend} backend")
        self.backend, self.compile = backend, backend == "compile"
        self._signature: Any = None
        self._native: Any = None

    def _build(self) -> None:
        model = self.model
        signature = tuple((p.data_ptr(), p._version, p.dtype) for p in model.parameters())
        if signature == self._signature:
            return
        if self.backend == "native":
            self._native = native.NativeStepper(model, self.threads, self.weights)
            self._signature = signature
            return
        bb, dtype = model.backbone, model.embedding.weight.dtype
        self.dtype, self.pool = dtype, bb.pool
        with torch.no_grad():
            self.embedding = model.embedding.weight.detach()
            self.tiers = {key: _Tier(blocks, dtype, self.compile) for key, blocks in bb.tiers()}
            self.down_linear = [(d.linear.weight.detach().t().contiguous(), d.linear.bias.detach()) for d in bb.down]
            self.up_linear = [(s["pool"].linear.weight.detach().t().contiguous(), s["pool"].linear.bias.detach())
                              for s in bb.up]
            weight, bias, self.final_eps = bb.norm.affine()
            self.final_norm = (weight.detach(), bias.detach())
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
