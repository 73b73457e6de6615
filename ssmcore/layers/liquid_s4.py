"""Liquid-S4: S4's DPLR kernel plus the liquid kernel of input correlations (Hasani et al. 2022).

"Liquid Structural State-Space Models" (ICLR 2023), Sec. 3.  The linearised liquid time-constant
system ``x' = (A + B u) x + B u``, ``y = C x`` is discretised by the bilinear transform,

    x_k = (Abar + Bbar u_k) x_{k-1} + Bbar u_k,

and unrolled.  Its terms of order q in the input (q input samples multiplied together) are, with the
paper's unrolled form (its expansion of ``y_2``: ``C Abar Bbar^2 u_0 u_1``, ``C Bbar^2 u_1 u_2``, ...),
where the modulation ``Bbar u_k`` is collected as the elementwise power ``Bbar^q`` of the input vector
in the eigenbasis of A's normal part (exact when A is diagonal, the paper's definition for DPLR),

    y^(q)_k = sum_{i_1 < ... < i_q <= k} C Abar^(k - i_1 - (q - 1)) Bbar^q u_{i_1} ... u_{i_q}.

The model is truncated at order p (``liquid_degree``): ``y = sum_{q <= p} y^(q) + D u``.  Order 1 is S4.

Convolution (KB, "kernel-based"): with the liquid kernel ``K_q[m] = C Abar^m Bbar^q`` (S4's Cauchy /
Woodbury machinery with ``B`` replaced by ``Bbar^q``), the inner sum over ``i_2 .. i_q`` is the elementary
symmetric polynomial ``e_(q-1)`` of the window ``u_(i_1, k]``, which Newton's identities write through
prefix power sums ``S^r_k - S^r_i``; expanding gives a few FFT convolutions of ``u`` times prefix sums
with ``K_q`` (p = 2: ``y^(2)_k = S_k (K_2 * u)_(k-1) - (K_2 * (u S))_(k-1)``, S the prefix sum of u).
PB ("B-powered", the paper's simplification): ``Abar`` is replaced by the identity in the liquid terms,
so ``y^(q)_k = C Bbar^q e_q(u_0 .. u_k)`` -- no liquid convolution at all, only prefix power sums
(these terms do not decay: they sum over the whole past).

Recurrent step (exact for the truncated model): order q keeps a chain of q states,
``w^1_k = Abar w^1_(k-1) + Bbar^q u_k``, ``w^r_k = Abar w^r_(k-1) + u_k w^(r-1)_(k-1)`` (Abar -> I for PB),
and ``y^(q)_k = 2 Re(C w^q_k)``.  A forward pass given a ``state`` runs that recurrence over the chunk
(exact, O(L) sequential); the stateless forward is the convolution.

``rate`` scales the step: every term is the bilinear discretisation of the same continuous system at
step ``dt * rate`` (``Bbar`` and so ``Bbar^q`` change with it), as for S4.  The order-1 (S4) part is
second-order accurate in the step; the liquid terms of the paper's discrete model converge to the
continuous ones only to first order in ``dt |A|`` (``Bbar^q`` and the strict ordering of the sum), so
resampled outputs agree to O(dt |A|) (tests/ssmcore/test_liquid_s4.py uses a small step).

Numerics: the prefix sums are centred per sequence (the window sums are invariant to that), but the
order-q terms still cancel large numbers at long L in float32; p = 2 is the paper's default and well
conditioned, higher orders lose accuracy as L grows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmcore.fftconv import fftconv
from ssmcore.layers.s4 import S4

LIQUID_KERNELS = ("kb", "pb")


def elementary_symmetric_terms(n: int, count: int) -> dict[tuple[tuple[int, ...], tuple[int, ...]], float]:
    """``e_n`` of a window whose power sums are ``P_r = a_r - b_r`` (r = 1 .. count), as a polynomial.

    Newton's identities ``n e_n = sum_{r=1}^n (-1)^(r-1) e_(n-r) P_r``.  Returns ``{(a_exponents, b_exponents):
    coefficient}`` with exponent tuples of length ``count``.
    """
    zero = (0,) * count
    e: list[dict] = [{(zero, zero): 1.0}]
    for m in range(1, n + 1):
        acc: dict = defaultdict(float)
        for r in range(1, m + 1):
            sign = 1.0 if r % 2 == 1 else -1.0
            for (ea, eb), coeff in e[m - r].items():
                ea_plus = tuple(x + (i == r - 1) for i, x in enumerate(ea))
                eb_plus = tuple(x + (i == r - 1) for i, x in enumerate(eb))
                acc[(ea_plus, eb)] += sign * coeff / m
                acc[(ea, eb_plus)] -= sign * coeff / m
        e.append({k: v for k, v in acc.items() if v != 0.0})
    return e[n]


def _monomial(sums: list[Tensor], exponents: tuple[int, ...]) -> Tensor | None:
    """``prod_r sums[r] ** exponents[r]`` (None for the empty product)."""
    out = None
    for s, k in zip(sums, exponents):
        for _ in range(k):
            out = s if out is None else out * s
    return out


class _LiquidOrder2(torch.autograd.Function):
    """``y = K_1 * u - K_2' * (u S) + S (K_2' * u)`` (K_2' the order-2 kernel shifted by one lag) in one pass.

    Forward: rfft of u and u S, one irfft of ``U K_1 - V K_2`` and one of ``U K_2``; backward: rfft of the
    gradient g and of g S, then the correlations with the spectra recomputed from the saved real inputs (real FFTs only, like
    :class:`ssmcore.fftconv._FFTConv`).  u, S (B, H, L) real; k1, k2 (C, H, L) -> (B, C, H, L).
    Ten FFTs of (B, H, 2L) in all (two of them recompute U and V in the backward); around them the products are fused
    (``addcmul``), the kernels' conjugate spectra are formed once at their small size, and with one
    output channel (C = 1) every (B, H, .) product runs without a size-1 axis to sum over.
    """

    @staticmethod
    def forward(ctx, u: Tensor, S: Tensor, k1: Tensor, k2: Tensor) -> Tensor:
        L = u.shape[-1]
        n = 2 * L
        C = k1.shape[0]
        dtype = torch.promote_types(torch.promote_types(u.dtype, k1.dtype), torch.float32)
        u, S = u.to(dtype), S.to(dtype)
        U = torch.fft.rfft(u, n=n)  # (B, H, n/2+1)
        V = torch.fft.rfft(u * S, n=n)
        K1, K2 = torch.fft.rfft(k1.to(dtype), n=n), torch.fft.rfft(k2.to(dtype), n=n)  # (C, H, n/2+1)
        if C == 1:
            Ub, Vb, K1b, K2b = U, V, K1[0], K2[0]  # (B, H, n/2+1) products; the channel axis added at the end
        else:
            Ub, Vb, K1b, K2b = U.unsqueeze(1), V.unsqueeze(1), K1, K2  # (B, C, H, n/2+1)
        a = torch.fft.irfft(torch.addcmul(Ub * K1b, Vb, K2b, value=-1), n=n)[..., :L]
        z = torch.fft.irfft(Ub * K2b, n=n)[..., :L].contiguous()  # kept: not a view of the 2L buffer
        y = torch.addcmul(a, S if C == 1 else S.unsqueeze(1), z)
        # the real inputs are kept, not the spectra U, V at 2L (complex: twice u's bytes each); the
        # backward recomputes them (two FFTs of (B, H, 2L) more)
        ctx.save_for_backward(u, S, z, k1, k2)
        ctx.dtypes = (k1.dtype, k2.dtype)
        return y.unsqueeze(1) if C == 1 else y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        u, S, z, k1, k2 = ctx.saved_tensors
        L = u.shape[-1]
        n = 2 * L
        C = k1.shape[0]
        U, V = torch.fft.rfft(u, n=n), torch.fft.rfft(u * S, n=n)  # (B, H, n/2+1)
        K1, K2 = torch.fft.rfft(k1.to(u.dtype), n=n), torch.fft.rfft(k2.to(u.dtype), n=n)  # (C, H, n/2+1)
        g = g.to(u.dtype)
        if C == 1:
            g, Sx, K1c, K2c, Ux, Vx = g[:, 0], S, K1[0].conj(), K2[0].conj(), U, V  # (B, H, .)
        else:
            Sx, K1c, K2c, Ux, Vx = S.unsqueeze(1), K1.conj(), K2.conj(), U.unsqueeze(1), V.unsqueeze(1)
        K1c, K2c = K1c.resolve_conj(), K2c.resolve_conj()  # small (C, H, n/2+1): conjugated once
        G, GS = torch.fft.rfft(g, n=n), torch.fft.rfft(Sx * g, n=n)  # (B, [C,] H, n/2+1)
        spec_u = torch.addcmul(G * K1c, GS, K2c)
        spec_uS = G * K2c  # minus the spectrum of the gradient wrt u S
        if C != 1:
            spec_u, spec_uS = spec_u.sum(1), spec_uS.sum(1)
        du = torch.fft.irfft(spec_u, n=n)[..., :L]
        neg_duS = torch.fft.irfft(spec_uS, n=n)[..., :L]  # -(gradient wrt u S)
        gz = g * z if C == 1 else (g * z).sum(1)
        dS = torch.addcmul(gz, neg_duS, u, value=-1)
        du = torch.addcmul(du, neg_duS, S, value=-1)
        # the kernels' gradients are correlations summed over the batch: einsum contracts without
        # building the (B, ..) products (about 1.6x faster than multiply-then-sum on the CPU)
        eq = "bhf,bhf->hf" if C == 1 else "bchf,bchf->chf"
        GU = torch.einsum(eq, G, Ux.conj())
        dk1 = torch.fft.irfft(GU, n=n)[..., :L]
        dk2 = torch.fft.irfft(torch.einsum(eq, GS, Ux.conj()) - torch.einsum(eq, G, Vx.conj()), n=n)[..., :L]
        if C == 1:
            dk1, dk2 = dk1.unsqueeze(0), dk2.unsqueeze(0)
        return du, dS, dk1.to(ctx.dtypes[0]), dk2.to(ctx.dtypes[1])


class LiquidS4(S4):
    """Liquid-S4 layer: S4 (DPLR) + liquid kernels of input correlations up to ``liquid_degree``.

    ``d_state`` is S4's real state size N (M = N // 2 complex modes kept per feature).  The recurrent
    state holds ``1 + sum_{q=2}^p q`` such states (the S4 state, then each order's chain, KB or PB):
    (B, S, H, N // 2) complex.  ``kernel(L, rate)`` is the order-1 (S4) kernel; :meth:`liquid_kernels`
    gives every order's.  ``can_step`` is True (a causal layer: :meth:`step` is exact for the truncated
    model) and ``has_recurrence`` False: the step is not a linear :class:`Recurrence`, so there is no
    :meth:`recurrence` and the fused steppers treat the layer as an opaque module.

    Args:
        liquid_degree: p, the highest order of input correlations (1 is plain S4; default 2).
        liquid_kernel: ``kb`` (kernel-based: ``C Abar^m Bbar^q``) or ``pb`` (B-powered: Abar -> I).
        **kwargs: S4's options (``measure``, ``dt_min``, ``dt_max``, ``real_transform``, ``l_max``) and the
            shared layer arguments.
    """

    def __init__(self, d_model: int, *, liquid_degree: int = 2, liquid_kernel: str = "kb", **kwargs: Any) -> None:
        super().__init__(d_model, **kwargs)
        if liquid_degree < 1:
            raise ValueError(f"liquid_degree must be at least 1, got {liquid_degree}")
        if liquid_kernel not in LIQUID_KERNELS:
            raise ValueError(f"unknown liquid_kernel {liquid_kernel!r}; choose one of {', '.join(LIQUID_KERNELS)}")
        self.liquid_degree, self.liquid_kernel = liquid_degree, liquid_kernel
        self.n_states = 1 + sum(range(2, liquid_degree + 1))

    can_step = True  # exact step() of the truncated model ...
    has_recurrence = False  # ... but not a linear Recurrence (the fused steppers cannot run it)

    def recurrence(self, rate: float = 1.0):
        raise RuntimeError("LiquidS4 has no recurrence(): its exact step() is its own (a chain of states per order)")

    # ----------------------------------------------------------------- discrete terms
    def bbar_powers(self, rate: float = 1.0) -> Tensor:
        """``Bbar^q`` (elementwise, kept halves) for q = 1 .. p at ``rate``: (p, H, M).

        ``Bbar = (I - dt/2 A)^{-1} dt B`` by Woodbury: ``E v - dt/2 E P^* S (P E v)`` with ``v = dt B``.
        """
        dt, lam, P, B, _ = self.continuous()
        half = (dt * rate / 2)[:, None]  # (H, 1)
        E = 1 / (1 - half * lam)  # (1 - dt/2 Lambda)^{-1}, (H, M)
        PEP = 2 * torch.einsum("ihm,hm,jhm->hij", P, E, P.conj()).real  # (H, r, r)
        eye = torch.eye(P.shape[0], dtype=PEP.dtype, device=PEP.device)
        S = torch.linalg.inv(eye + half[..., None] * PEP)  # (H, r, r)
        v = 2 * half * B  # dt B
        Pv = 2 * torch.einsum("rhm,hm->rh", P, E * v).real  # (r, H)
        SPv = torch.einsum("hij,jh->ih", S, Pv).to(P.dtype)  # (r, H)
        Bbar = E * v - half * E * torch.einsum("rhm,rh->hm", P.conj(), SPv)
        return torch.stack([Bbar ** q for q in range(1, self.liquid_degree + 1)])

    def liquid_kernels(self, L: int, rate: float = 1.0) -> Tensor:
        """``K_q[m] = C Abar^m Bbar^q`` (times 2 Re, conjugate pairs) for q = 1 .. p: (p, n_kernels, H, L).

        Order 1 is S4's kernel.  Cached without autograd like ``kernel()``.
        """
        if L < 1 or rate <= 0:
            raise ValueError(f"need L >= 1 and rate > 0, got L={L}, rate={rate}")
        self.reference_length(L)
        with torch.autocast(device_type=self.D.device.type, enabled=False):
            return self.cached(("liquid_kernel", int(L), float(rate)), lambda: self._liquid_kernels(L, rate))

    def _liquid_kernels(self, L: int, rate: float) -> Tensor:
        L0 = self.reference_length(L)
        dt, lam, P, B, C = self.continuous()
        if rate == 1.0 and L <= L0:
            length = L0
        else:
            C, length = self.converted_C(L, rate), L
        dt = dt * rate
        half = (dt / 2)[:, None]  # (H, 1)
        inputs = [dt[:, None] * B]  # order 1: the continuous input dt B
        if self.liquid_degree > 1 and self.liquid_kernel == "kb":
            # (I - dt/2 A) b maps a discrete input vector b to the resolvent's continuous form
            b = self.bbar_powers(rate)[1:]  # (p - 1, H, M)
            Pb = 2 * torch.einsum("rhm,qhm->qrh", P, b).real.to(P.dtype)  # (p - 1, r, H)
            inputs.append((1 - half * lam) * b + half * torch.einsum("rhm,qrh->qhm", P.conj(), Pb))
        b_all = torch.cat([inputs[0][None], *inputs[1:]])  # (p or 1, H, M)
        k = torch.fft.irfft(self.resolvent(C, b_all, dt, length), n=length)[..., :L]  # (c, q, H, L)
        return k.transpose(0, 1)

    def liquid_readout(self, rate: float = 1.0) -> Tensor:
        """PB's per-order gains ``2 Re(C . Bbar^q)`` with the true C, q = 2 .. p: (p - 1, n_kernels, H)."""
        self.reference_length()
        C = self.true_C()[..., : self.d_state // 2].to(self.continuous()[1].dtype)  # (c, H, M)
        return 2 * torch.einsum("chm,qhm->qch", C, self.bbar_powers(rate)[1:]).real

    # ----------------------------------------------------------------- forward
    def _liquid_causal(self, u: Tensor, kernels: Tensor, D: Tensor | None, gains: Tensor | None) -> Tensor:
        """The causal truncated liquid output of ``u`` (B, H, L): (B, C, H, L).

        ``kernels`` (p, C, H, L); ``D`` (C, H) folded into the order-1 kernel; ``gains`` (p - 1, C, H) for PB.
        """
        p, C = self.liquid_degree, kernels.shape[1]
        L = u.shape[-1]
        k1 = kernels[0]
        if D is not None:
            k1 = torch.cat([k1[..., :1] + D[:, :, None].to(k1.dtype), k1[..., 1:]], dim=-1)
        if p == 1:
            return fftconv(u, k1)
        work = torch.promote_types(u.dtype, torch.float32)
        uw = u.to(work).contiguous()  # u arrives as a transposed view; the prefix sums and FFTs run faster on a copy
        powers = [uw]
        for _ in range(2, p + (self.liquid_kernel == "pb")):
            powers.append(powers[-1] * uw)
        sums = [s.cumsum(-1) for s in powers]  # prefix power sums S^r_k (B, H, L)
        if self.liquid_kernel == "pb":
            # e_q of the whole prefix from its power sums (Newton), times the gain of order q
            e = [torch.ones_like(uw)]
            y = fftconv(u, k1)
            for q in range(1, p + 1):
                e.append(sum((1 if r % 2 else -1) * e[q - r] * sums[r - 1] for r in range(1, q + 1)) / q)
                if q >= 2:
                    y = y + gains[q - 2][None, :, :, None].to(work) * e[q].unsqueeze(1)
            return y
        sums = [s - s.mean(-1, keepdim=True) for s in sums]  # window sums are shift-invariant
        if p == 2:
            k2 = F.pad(kernels[1], (1, 0))[..., :L]  # K_2 shifted by one lag
            return _LiquidOrder2.apply(uw, sums[0], k1, k2)
        # group the terms by their input signal u_i * b-monomial(i); each group is one FFT convolution
        groups: dict[tuple[int, ...], list[tuple[int, tuple[int, ...], float]]] = defaultdict(list)
        for q in range(2, p + 1):
            for (ea, eb), coeff in elementary_symmetric_terms(q - 1, p - 1).items():
                groups[eb].append((q, ea, coeff))
        zero = (0,) * (p - 1)
        shifted = [None] + [F.pad(kernels[q - 1], (q - 1, 0))[..., :L] for q in range(2, p + 1)]
        y = None
        for eb in sorted(groups, key=lambda k: k != zero):
            terms = groups[eb]
            orders = sorted({q for q, _, _ in terms})
            ks = ([k1] if eb == zero else []) + [shifted[q - 1] for q in orders]
            mono = _monomial(sums, eb)
            signal = uw if mono is None else uw * mono
            out = fftconv(signal, torch.cat(ks))  # (B, n C, H, L)
            if eb == zero:
                y, out = out[:, :C], out[:, C:]
            by_order = dict(zip(orders, out.split(C, dim=1)))
            for q, ea, coeff in terms:
                a = _monomial(sums, ea)
                term = by_order[q] if a is None else by_order[q] * a.unsqueeze(1)
                y = y + coeff * term
        return y

    def ssm_forward(self, u: Tensor, state: Any = None, rate: float = 1.0) -> tuple[Tensor, Any]:
        if state is not None:
            return self._scan(u, state, rate)
        L = u.shape[-1]
        kernels = self.liquid_kernels(L, rate)  # (p, n_kernels, H, L)
        gains = None
        if self.liquid_kernel == "pb" and self.liquid_degree > 1:
            with torch.autocast(device_type=self.D.device.type, enabled=False):
                gains = self.liquid_readout(rate)
        C = self.channels
        y = self._liquid_causal(u, kernels[:, :C], self.D, None if gains is None else gains[:, :C])
        if self.bidirectional:
            back = self._liquid_causal(u.flip(-1), kernels[:, C:], None, None if gains is None else gains[:, C:])
            y = y + F.pad(back.flip(-1)[..., 1:], (0, 1))  # strictly future inputs
        return y, None

    # ----------------------------------------------------------------- step
    def default_state(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        single = super().default_state(batch_size, device)  # (B, H, M)
        return single.unsqueeze(1).repeat(1, self.n_states, 1, 1)  # (B, S, H, M)

    def step_recurrence(self, rate: float = 1.0) -> tuple:
        """``(S4 Recurrence, Bbar^q (p, H, M))`` at ``rate``, cached per parameter version."""
        if self.bidirectional:
            raise RuntimeError("step() needs a causal layer: this one was built with bidirectional=True")
        self.reference_length()
        return self.cached(("liquid_step", float(rate)), lambda: (self.discrete_recurrence(rate), self.bbar_powers(rate)))

    def _advance(self, state: Tensor, u: Tensor, rate: float) -> tuple[Tensor, Tensor]:
        """One step of the truncated model: ``u`` (B, H) -> ``(y (B, C, H) with D skip, next state)``."""
        rec, bq = self.step_recurrence(rate)
        batch, S, H, M = state.shape
        uc = u.to(bq.dtype).unsqueeze(-1)  # (B, H, 1)
        _, Ax = rec.advance(state.reshape(batch * S, H, M), torch.zeros(batch * S, H, dtype=u.dtype, device=u.device))
        Ax = Ax.reshape(batch, S, H, M)
        new = [Ax[:, 0] + bq[0] * uc]
        top = new[0]
        index = 1
        for q in range(2, self.liquid_degree + 1):
            prop = Ax[:, index : index + q] if self.liquid_kernel == "kb" else state[:, index : index + q]
            chain = [prop[:, 0] + bq[q - 1] * uc]
            for r in range(1, q):
                chain.append(prop[:, r] + uc * state[:, index + r - 1])
            new.extend(chain)
            top = top + chain[-1]
            index += q
        y = torch.einsum("chm,bhm->bch", rec.C, top).real.to(u.dtype)
        return y + rec.D.to(y.dtype) * u.unsqueeze(1), torch.stack(new, dim=1)

    def _scan(self, u: Tensor, state: Tensor, rate: float) -> tuple[Tensor, Tensor]:
        ys = []
        for t in range(u.shape[-1]):
            y_t, state = self._advance(state, u[..., t], rate)
            ys.append(y_t)
        return torch.stack(ys, dim=-1), state

    def step(self, x_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """One exact step of the truncated liquid recurrence: ``x_t`` (B, H) -> ``(y_t (B, H), next_state)``."""
        y, state = self._advance(state, x_t, rate)
        return self._post(y.flatten(1)), state

    def ssm_step(self, u_t: Tensor, state: Any, rate: float = 1.0) -> tuple[Tensor, Any]:
        """The bare step (no D skip): ``u_t`` (B, H) -> ``(y_t (B, C, H), next_state)``."""
        y, state = self._advance(state, u_t, rate)
        return y - self.D.to(y.dtype) * u_t.unsqueeze(1), state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", liquid_degree={self.liquid_degree}, liquid_kernel={self.liquid_kernel}"
