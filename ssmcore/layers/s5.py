"""S5: simplified state space layers (Smith, Warrington, Linderman 2022).

One multi-input multi-output diagonal SSM shared by all H features,

    x_k = Lambda_bar_k * x_{k-1} + B_bar_k u_k,    y_k = Re(C~ x_k) (2 Re with conjugate symmetry),

with ``Lambda`` (P,) complex, ``B~`` (P, H), ``C~`` (H, P), run with a parallel scan
(:func:`ssmcore.scan.linear_scan`).  ``Lambda`` and the eigenvectors ``V`` come from the
normal part of HiPPO-LegS ("HiPPO-N"), block-diagonal over ``blocks`` blocks; ``B~ = V^-1 B``
and ``C~ = C V`` for random ``B`` and ``C``.  Each state has its own step size, and a
per-step multiplier ``dt`` (B, L) discretises irregularly sampled sequences (paper Sec. 6.3).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ssmcore.hippo import nplr
from ssmcore.init import log_dt_init
from ssmcore.layers.base import Recurrence, SSMLayer, accumulate_grads
from ssmcore.scan import complex_exp, complex_expm1, linear_scan

DISCRETIZATIONS = ("zoh", "bilinear")
#: steps per chunk of the chunked scan: about this many (batch x step x mode) elements per chunk ...
SCAN_BLOCK_ELEMENTS = 1 << 20
#: ... and at least this many steps
SCAN_BLOCK_MIN_STEPS = 64


def hippo_n_blocks(P: int, blocks: int, conj_sym: bool) -> tuple[Tensor, Tensor, Tensor]:
    """HiPPO-N initialisation in ``blocks`` diagonal blocks.

    Returns ``(Lambda (M,), V (P, M), V_inv (M, P))`` complex128 with ``M = P // 2`` when
    ``conj_sym`` (one of each conjugate pair) else ``P``; ``V`` is block-diagonal with unitary
    blocks, so ``V_inv = V^*`` (the pseudo-inverse when only half the modes are kept).
    """
    if P % blocks:
        raise ValueError(f"d_state={P} must be divisible by blocks={blocks}")
    size = P // blocks
    if size % 2:
        raise ValueError(f"block size d_state / blocks = {size} must be even (HiPPO-N pairs conjugate modes)")
    block = nplr("legs", size, keep_half=conj_sym)
    lam, V = block["Lambda"], block["V"]  # (m,), (size, m)
    Lambda = lam.repeat(blocks)  # (M,)
    V_full = torch.block_diag(*[V] * blocks)  # (P, M)
    return Lambda, V_full, V_full.conj().T


class S5(SSMLayer):
    """S5 layer: MIMO diagonal SSM (parallel scan) + D skip + activation + dropout + output projection.

    ``d_state`` is the latent size P.  With ``conj_sym`` (default) only P // 2 complex modes
    are kept, one of each conjugate pair, and the output is 2 Re(C~ x); the recurrent state is
    (B, P // 2) complex (``(B, P)`` without ``conj_sym``).

    ``channels`` counts output heads: there are ``channels`` matrices C~ (H x M), each giving an
    (H,)-vector per step, so the SSM output is (B, channels, H, L) like every other layer.  With
    ``bidirectional`` a second scan runs over the reversed sequence with its own ``channels``
    C~ matrices and is added to the first; as in :func:`ssmcore.fftconv.two_sided`, the
    anti-causal part sees the inputs strictly after step k (the current input is counted once).

    Args:
        blocks: J, number of HiPPO-N diagonal blocks (``d_state / blocks`` even).
        conj_sym: keep one mode of each conjugate pair (output 2 Re).
        clip_eigs: clamp ``Re Lambda <= -1e-4`` (always stable); otherwise ``Re Lambda`` is free.
        disc: ``zoh`` or ``bilinear``.
        dt_min, dt_max: range of the log-uniform per-state step-size init.
        **kwargs: the shared layer arguments of :class:`ssmcore.layers.base.SSMLayer` (``d_state``,
            ``channels``, ``bidirectional``, ``dropout``, ``activation``, ``postact``).

    ``forward(x, state=None, rate=1.0, dt=None)``: ``dt`` (B, L) multiplies every state's step at
    each position (irregular sampling: the time since the previous sample, in units of the
    nominal step); ``rate`` multiplies all steps.

    Recurrent mode: :meth:`recurrence` is MIMO (:class:`ssmcore.layers.base.Recurrence` with ``lam``
    (M,), ``b = B_bar`` (M, H), ``C`` = scale * C~ (channels, H, M)).
    """

    ssm_parameter_names = ("Lambda_re", "Lambda_im", "B", "log_step")
    can_step = True
    has_dt = True

    def __init__(
        self,
        d_model: int,
        *,
        blocks: int = 1,
        conj_sym: bool = True,
        clip_eigs: bool = True,
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        **kwargs: Any,
    ) -> None:
        super().__init__(d_model, **kwargs)
        d_state = self.d_state
        if disc not in DISCRETIZATIONS:
            raise ValueError(f"unknown disc {disc!r}; choose one of {', '.join(DISCRETIZATIONS)}")
        self.disc, self.conj_sym, self.clip_eigs, self.blocks = disc, conj_sym, clip_eigs, blocks
        Lambda, V, V_inv = hippo_n_blocks(d_state, blocks, conj_sym)
        self._init_from_eigen(Lambda, V, V_inv, dt_min, dt_max)

    def _init_from_eigen(self, Lambda: Tensor, V: Tensor, V_inv: Tensor, dt_min: float, dt_max: float) -> None:
        """Parameters from an eigendecomposition ``(Lambda (M,), V (P, M), V_inv (M, P))``."""
        H, P, M = self.d_model, self.d_state, Lambda.shape[0]
        self.Lambda_re = nn.Parameter(Lambda.real.float())
        self.Lambda_im = nn.Parameter(Lambda.imag.float())
        B = torch.randn(P, H, dtype=torch.float64) / math.sqrt(H)  # lecun normal
        B_tilde = V_inv @ B.to(torch.complex128)  # (M, H)
        self.B = nn.Parameter(torch.view_as_real(B_tilde.to(torch.complex64)))  # (M, H, 2)
        C = torch.randn(self.n_kernels, H, P, dtype=torch.complex128) / math.sqrt(2 * P)
        C_tilde = C @ V  # (n_kernels, H, M)
        self.C = nn.Parameter(torch.view_as_real(C_tilde.to(torch.complex64)))  # (n_kernels, H, M, 2)
        self.log_step = nn.Parameter(log_dt_init(M, dt_min, dt_max).float())
        self.state_modes = M

    # ----------------------------------------------------------------- the SSM
    def eigenvalues(self, Lambda_re: Tensor | None = None, Lambda_im: Tensor | None = None) -> Tensor:
        """``Lambda`` (M,) complex, with ``Re Lambda <= -1e-4`` when ``clip_eigs`` (from the given real and
        imaginary parts, by default the layer's)."""
        re = self.Lambda_re if Lambda_re is None else Lambda_re
        im = self.Lambda_im if Lambda_im is None else Lambda_im
        return torch.complex(re.clamp(max=-1e-4) if self.clip_eigs else re, im)

    def discretize(self, step: Tensor, Lambda: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(log Lambda_bar, B_bar / B~)`` for per-state steps ``step`` (..., M) (and eigenvalues ``Lambda``,
        by default the layer's)."""
        Lambda = self.eigenvalues() if Lambda is None else Lambda
        dtA = step * Lambda
        if self.disc == "zoh":
            return dtA, complex_expm1(dtA) / Lambda
        denom = 1 - dtA / 2
        return torch.log((1 + dtA / 2) / denom), step / denom

    def ssm_forward(self, u: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        y, next_state = self._scan(rearrange(u, "b h l -> b l h"), state, rate, None)  # (B, L, C, H)
        return rearrange(y, "b l c h -> b c h l"), next_state

    def forward(self, x: Tensor, state: Any = None, rate: float = 1.0, dt: Tensor | None = None) -> tuple[Tensor, Any]:
        """``x`` (B, L, H) -> ``(y (B, L, H), next_state)``; ``dt`` (B, L) optional per-step multiplier."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"S5 expects (batch, length, {self.d_model}), got {tuple(x.shape)}")
        if state is not None and self.bidirectional:
            raise ValueError("state passing needs a causal layer: this one was built with bidirectional=True")
        if dt is not None and dt.shape != x.shape[:2]:
            raise ValueError(f"dt must be (batch, length) = {tuple(x.shape[:2])}, got {tuple(dt.shape)}")
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        y, next_state = self._scan(x, state, rate, dt)  # (B, L, C, H)
        y = y + self.D.to(y.dtype) * x.unsqueeze(2).to(y.dtype)
        return self.post(rearrange(y, "b l c h -> b l (c h)")), next_state

    def _scan(self, x: Tensor, state: Tensor | None, rate: float, dt: Tensor | None) -> tuple[Tensor, Any]:
        """The bare SSM on ``x`` (B, L, H) -> ``(y (B, L, C, H), next_state)``.

        Under autograd (outside tracing) each direction runs as a :class:`_ChunkedScan`: only ``x``,
        ``dt`` and the states at chunk boundaries are kept for the backward, which recomputes one
        chunk of ``B~ u`` and states at a time (the plain composition keeps ``B~ u`` and all the states,
        two (B, L, M) complex tensors).  Values and gradients are those of the plain composition.
        """
        fused = torch.is_grad_enabled() and not torch.compiler.is_compiling()
        y, last = self._direction(x, dt, None, state, rate, 0, fused)
        if self.bidirectional:
            # the anti-causal scan runs over the reversed sequence; the decay from step k + 1 back to k
            # spans the gap before k + 1, so its per-step decays use dt shifted by one (its inputs do not)
            dt_a = None if dt is None else torch.cat([dt[:, 1:], dt[:, -1:]], dim=1).flip(1)
            dt_b = None if dt is None else dt.flip(1)
            y_rev, _ = self._direction(x.flip(1), dt_a, dt_b, None, rate, 1, fused)
            # the state after u_{L-1} .. u_{k+1} (only the inputs after k) is read out at step k
            y = y + torch.nn.functional.pad(y_rev[:, :-1].flip(1), (0, 0, 0, 0, 0, 1))
        next_state = last if state is not None else None
        return y.to(x.dtype) if x.is_floating_point() else y, next_state

    def _direction(self, x: Tensor, dt_a: Tensor | None, dt_b: Tensor | None, state: Tensor | None, rate: float,
                   direction: int, fused: bool) -> tuple[Tensor, Tensor]:
        """One scan over ``x`` (B, L, H) -> ``(y (B, L, C, H) real, last state (B, M))``, read out with the C~
        of ``direction`` (0 causal, 1 anti-causal); ``dt_a`` (B, L) scales the decays' steps and ``dt_b``
        the inputs' (None: ``dt_a``'s)."""
        params = (self.Lambda_re, self.Lambda_im, self.log_step, self.B)
        heads = slice(0, self.channels) if direction == 0 else slice(self.channels, None)
        C_tilde = torch.view_as_complex(self.C)[heads]  # (C, H, M)
        scale = 2.0 if self.conj_sym else 1.0
        # Re(C~ x) as a real matmul: (B, L, 2M) real view of x against (C H, 2M) [Re C~, -Im C~]
        readout = scale * torch.stack([C_tilde.real, -C_tilde.imag], dim=-1).flatten(2).flatten(0, 1)
        states = lambda x, dt_a, dt_b, s, *ps: self._states(x, dt_a, dt_b, s, rate, *ps)  # noqa: E731
        if fused:
            T = max(SCAN_BLOCK_MIN_STEPS, SCAN_BLOCK_ELEMENTS // max(1, x.shape[0] * self.state_modes))
            y, last = _ChunkedScan.apply(states, T, x, dt_a, dt_b, state, readout, *params)
        else:
            xs = states(x, dt_a, dt_b, state, *params)  # (B, L, M)
            y, last = torch.view_as_real(xs).flatten(2) @ readout.t(), xs[:, -1]
        return y.unflatten(-1, (-1, C_tilde.shape[1])), last

    def _states(self, x: Tensor, dt_a: Tensor | None, dt_b: Tensor | None, state: Tensor | None, rate: float,
                Lambda_re: Tensor, Lambda_im: Tensor, log_step: Tensor, B: Tensor) -> Tensor:
        """The states (B, L, M) of one scan (discretisation, ``B~ u``, scan) from the parameters given (the
        layer's, passed explicitly so that a recomputation uses the same tensors)."""
        Lambda = self.eigenvalues(Lambda_re, Lambda_im)
        step = torch.exp(log_step) * rate  # (M,)
        step_a = step if dt_a is None else step * dt_a.to(step.dtype)[..., None]  # (M,) or (B, L, M)
        log_a, b_scale = self.discretize(step_a, Lambda)
        if dt_b is not None:
            b_scale = self.discretize(step * dt_b.to(step.dtype)[..., None], Lambda)[1]
        # B~ u as one real matmul: (B, L, H) @ (H, 2M) -> (B, L, M) complex
        Bu = torch.view_as_complex(torch.einsum("blh,mhr->blmr", x.to(B.dtype), B).contiguous())
        a = complex_exp(log_a)  # (M,) or (B, L, M)
        return linear_scan(a, b_scale * Bu, state, dim=1, log_a=log_a)  # (B, L, M); the scan needs no log of its own

    # ----------------------------------------------------------------- recurrent mode
    def discrete_recurrence(self, rate: float = 1.0) -> Recurrence:
        log_a, b_scale = self.discretize(torch.exp(self.log_step) * rate)
        B_bar = b_scale[:, None] * torch.view_as_complex(self.B)  # (M, H)
        scale = 2.0 if self.conj_sym else 1.0
        C = scale * torch.view_as_complex(self.C)[: self.channels]  # (channels, H, M)
        return Recurrence(lam=torch.exp(log_a), b=B_bar, C=C, D=self.D.clone())

    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        ref = self.log_step
        dtype = torch.complex128 if ref.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.state_modes, dtype=dtype, device=device or ref.device)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", blocks={self.blocks}, conj_sym={self.conj_sym}, disc={self.disc}"


class _ChunkedScan(torch.autograd.Function):
    """``y = Re-view(states(x, dt_a, dt_b, state, *params)) @ readout^T`` over chunks of ``T`` steps, and the
    last state; only the inputs and the state entering each chunk (B, L / T, M) are kept for the backward.

    ``states`` is S5's plain composition on one chunk (its discretisation, ``B~ u``, the scan from the
    incoming state) and ``readout`` (K, 2M) the real read-out matrix, so the forward gives the plain
    values.  The backward walks the chunks from the last: it reruns ``states`` on the chunk under
    autograd from the kept incoming state, forms the states' gradient from the chunk's output gradient
    (the read-out's adjoint, a matmul, plus the gradient reaching the chunk's last state from the later
    chunks) and back-propagates it; the gradient of the incoming state is what the earlier chunk's last
    state receives.  The same operators (under the forward's autocast state), so the same gradient
    formulas; transients are one chunk's.  The price is ``B~ u`` and the scan once more in the backward.
    The backward is not itself differentiable (``once_differentiable``), like the fused output block's
    that follows it: no double backward through the layer (it had none before either).
    """

    @staticmethod
    def forward(ctx, states, T: int, x: Tensor, dt_a: Tensor | None, dt_b: Tensor | None, state: Tensor | None,
                readout: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        B, L = x.shape[:2]
        device_type = x.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        bounds = [(t, min(L, t + T)) for t in range(0, L, T)]
        cut = lambda t, a, b: None if t is None else t[:, a:b]  # noqa: E731
        out = torch.empty(B, L, readout.shape[0], dtype=readout.dtype, device=x.device)
        carries, s = [], state
        for t0, t1 in bounds:
            if t0:
                carries.append(s)
            xs = states(x[:, t0:t1], cut(dt_a, t0, t1), cut(dt_b, t0, t1), s, *params)
            out[:, t0:t1] = torch.view_as_real(xs).flatten(2) @ readout.t()
            s = xs[:, -1].clone()  # not a view: the chunk's states are freed
        ctx.states, ctx.bounds = states, bounds
        ctx.save_for_backward(x, dt_a, dt_b, state, torch.stack(carries, 1) if carries else None, readout, *params)
        return out, s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor, grad_last: Tensor):
        x, dt_a, dt_b, state, carries, readout, *params = ctx.saved_tensors
        device_type, enabled, dtype = ctx.autocast
        need = ctx.needs_input_grad
        wanted = [i for i in range(len(params)) if need[7 + i]]
        d_params: list[Tensor | None] = [None] * len(params)
        dx = torch.empty_like(x) if need[2] else None
        d_dt = [torch.zeros_like(t) if t is not None and need[3 + j] else None for j, t in enumerate((dt_a, dt_b))]
        d_readout = torch.zeros_like(readout) if need[6] else None
        g = grad_last
        for k in range(len(ctx.bounds) - 1, -1, -1):
            t0, t1 = ctx.bounds[k]
            s_in = state if k == 0 else carries[:, k - 1]
            if s_in is not None:
                s_in = s_in.detach().requires_grad_(k > 0 or need[5])
            xc = x[:, t0:t1].detach().requires_grad_(dx is not None)
            dts = [None if t is None else t[:, t0:t1].detach().requires_grad_(d is not None)
                   for t, d in zip((dt_a, dt_b), d_dt)]
            with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
                xs = ctx.states(xc, dts[0], dts[1], s_in, *params)
            gy = grad_y[:, t0:t1]
            if d_readout is not None:  # sum over (b, l) of dy^T [Re x, Im x]
                d_readout.addmm_(gy.flatten(0, 1).t(), torch.view_as_real(xs.detach()).flatten(2).flatten(0, 1))
            g_xs = torch.view_as_complex((gy @ readout).unflatten(-1, (-1, 2)))  # (B, t, M)
            if g is not None:
                g_xs[:, -1] += g
            leaves = [t for t in (xc, *dts, s_in) if t is not None and t.requires_grad]
            inputs = leaves + [params[i] for i in wanted]
            if not inputs:
                continue
            res = torch.autograd.grad(xs, inputs, g_xs, allow_unused=True)
            got = {id(t): r for t, r in zip(leaves, res)}
            if dx is not None:
                dx[:, t0:t1] = got[id(xc)]
            for d, t in zip(d_dt, dts):
                if d is not None and got.get(id(t)) is not None:
                    d[:, t0:t1] = got[id(t)]
            g = got.get(id(s_in)) if s_in is not None else None
            accumulate_grads(d_params, wanted, res[len(leaves):])
        d_state = g if need[5] else None
        return (None, None, dx, d_dt[0], d_dt[1], d_state, d_readout, *d_params)
