"""Vandermonde and Cauchy kernels for diagonal and DPLR state-space models.

Both are computed without ever building an (H, N, L) tensor.

* :func:`vandermonde_kernel` evaluates ``K[l] = Re sum_n W_n z_n^l`` with a two-level
  split ``l = q T + p`` (``T ~ sqrt(L)``): ``K[q, p] = Re sum_n (W_n z_n^{qT}) z_n^p``.
  That is one real matrix product of a (Q, 2N) and a (2N, T) matrix per channel, so the
  work runs in BLAS and the memory is O(block N sqrt(L)).  A custom autograd function gives the
  gradients of ``W`` and ``log z`` with one more GEMM of the same structure (no (H, L, N) tensor in
  either pass).  The powers are products of at most ~log2(L) exact ``exp(e log z)`` factors, so no
  error accumulates along L (float32 keeps ~1e-6 relative accuracy at L = 65536).
* :func:`vandermonde_transpose` is its adjoint, ``x_n = sum_l u_l z_n^l`` -- the state that a
  diagonal recurrence reaches after consuming a sequence.
* :func:`cauchy_conj_bilinear` evaluates S4's conjugate-pair Cauchy sums at the bilinear
  frequencies in (feature, frequency) blocks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _split(L: int) -> tuple[int, int]:
    """(Q, T) with Q * T >= L and T ~ sqrt(L)."""
    T = max(1, math.ceil(math.sqrt(L)))
    return math.ceil(L / T), T


def _powers(log_z: Tensor, exponents: Tensor) -> tuple[Tensor, Tensor]:
    """``exp(e * log_z)`` for every exponent as (real, imag), each (..., E, N) from (..., N) x (E,).

    Real exp / cos / sin only (the complex exp is slow scalar code on CPU), with the angle
    ``e * Im(log_z)`` formed and reduced modulo 2 pi in float64, so long lags keep their phase
    in float32.
    """
    real = log_z.real.dtype
    e = exponents.to(torch.float64)
    magnitude = torch.exp(e.to(real)[:, None] * log_z.real[..., None, :])
    angle = torch.remainder(e[:, None] * log_z.imag.double()[..., None, :], 2 * math.pi).to(real)
    return magnitude * torch.cos(angle), magnitude * torch.sin(angle)


def _factor(n: int) -> tuple[int, int]:
    """(a, b) with a * b >= n as small as possible, a and b near sqrt(n)."""
    root = math.isqrt(max(n - 1, 0)) + 1  # ceil(sqrt(n))
    best = (root, math.ceil(n / root))
    for a in range(root, max(1, root // 2) - 1, -1):
        b = math.ceil(n / a)
        if a * b < best[0] * best[1]:
            best = (a, b)
    return best


def _layout(L: int) -> tuple[int, int, int, int]:
    """``(q1, q2, t1, t2)``: lag ``l = q T + p`` with ``q = i q2 + k < Q = q1 q2`` and ``p = i t2 + k < T = t1 t2``."""
    t1, t2 = _factor(math.isqrt(max(L - 1, 0)) + 1)
    q1, q2 = _factor(math.ceil(L / (t1 * t2)))
    return q1, q2, t1, t2


def _doubling(first: Tensor, powers: list[Tensor], count: int) -> Tensor:
    """``out[:, j] = first * s^j`` (H, count, N) for ``j < count`` from the exact ``powers = [s, s^2, s^4, ...]``.

    Rows ``[k, 2k)`` are rows ``[0, k)`` times ``s^k``: ``log2(count)`` operations, and every entry is a
    product of at most ``log2(count)`` exact factors (relative error ~ log2(count) ulp).
    """
    out = torch.empty(first.shape[0], count, first.shape[-1], dtype=first.dtype, device=first.device)
    out[:, :1] = first
    k = 1
    for s in powers:
        m = min(k, count - k)
        out[:, k : k + m] = out[:, :m] * s
        k *= 2
    return out


def _factor_tables(log_z: Tensor, L: int, conj_coarse: bool) -> list[Tensor]:
    """The four factor tables of :func:`_layout`, (H, ., N) complex each.

    ``[conj(z)^(i t2) (t1 rows), conj(z)^k (t2), z^(i q2 T) (q1), z^(k T) (q2)]``, the coarse two conjugated
    too when ``conj_coarse``.  Built by doubling from ``log2(L)`` exact powers (one :func:`_powers` call);
    a handful of operations over all channels at once.
    """
    q1, q2, t1, t2 = _layout(L)
    T = t1 * t2
    tables = ((t1, t2), (t2, 1), (q1, q2 * T), (q2, T))  # (rows, step)
    levels = [max(rows - 1, 0).bit_length() for rows, _ in tables]
    exps = [step * 2**i for (_, step), n in zip(tables, levels) for i in range(n)]
    re, im = _powers(log_z, torch.tensor(exps, dtype=torch.float64, device=log_z.device))  # (H, E, N)
    sign = torch.full((len(exps), 1), -1.0 if conj_coarse else 1.0, dtype=re.dtype, device=re.device)
    sign[: levels[0] + levels[1]] = -1
    powers = torch.complex(re, im * sign).split(1, dim=1)
    one = torch.ones(log_z.shape[0], 1, log_z.shape[1], dtype=log_z.dtype, device=log_z.device)
    out, start = [], 0
    for (rows, _), n in zip(tables, levels):
        out.append(_doubling(one, list(powers[start : start + n]), rows))
        start += n
    return out


def _slot(workspace: Tensor | None, n: int) -> Tensor | None:
    """The first ``n`` rows of a workspace for an ``out=`` argument; None (a fresh result) without one."""
    return None if workspace is None else workspace[:n]


class _Vandermonde(torch.autograd.Function):
    """``K[b, h, l] = Re sum_n W[b, h, n] z[h, n]^l`` as one real GEMM per block of channels.

    With ``l = q T + p`` (``T ~ sqrt(L)``) the kernel is ``Re (W z^{qT}) . z^p``: the (Q, N) complex coarse
    matrix ``W z^{qT}`` and the (T, N) fine one, viewed as (Q, 2N) and (T, 2N) real (interleaved real and
    imaginary parts; the fine one conjugated, so the real dot product is the real part).  Each is the
    outer product of two small factor tables (``q = i q2 + k``, ``p = i t2 + k``; :func:`_factor_tables`),
    one complex multiply per entry.  Backward has the same structure: with ``G = dL/dK`` laid out (Q, T),

        dL/dW    = conj(sum_l G_l z^l)             = sum_q conj(z^{qT}) [G conj(F)]_q
        dL/dlogz = conj(sum_b W_b sum_l l G_l z^l) = sum_b conj(W_b) sum_q conj(z^{qT}) [(l G) conj(F)]_q

    so ``[G ; l G] @ conj(F)`` is one GEMM of twice the forward's rows, followed by a weighted sum over
    ``q`` (inner factor, then outer).  No (H, L, N) tensor is built and nothing but the inputs is saved.
    Few and large operations: on a busy machine every multithreaded operation has a fixed cost.
    """

    @staticmethod
    def forward(ctx, weights: Tensor, log_z: Tensor, L: int, block: int) -> Tensor:
        Bw, H, N = weights.shape
        q1, q2, t1, t2 = _layout(L)
        Q, T = q1 * q2, t1 * t2
        f_out, f_in, c_out, c_in = _factor_tables(log_z, L, conj_coarse=False)
        w_out = torch.mul(weights.transpose(0, 1).unsqueeze(2), c_out.unsqueeze(1))  # (H, Bw, q1, N)
        out = torch.empty(H, Bw, Q * T, dtype=log_z.real.dtype, device=log_z.device)
        # one workspace for every block: fresh large allocations cost page faults on each block
        # (none while torch.compile / torch.export trace, which take no out= into workspaces)
        n_b, traced = min(block, H), torch.compiler.is_compiling()
        fine_ws = None if traced else torch.empty(n_b, t1, t2, N, dtype=log_z.dtype, device=log_z.device)
        coarse_ws = None if traced else torch.empty(n_b, Bw, q1, q2, N, dtype=log_z.dtype, device=log_z.device)
        for h in range(0, H, block):
            hs = slice(h, min(H, h + block))
            n_h = hs.stop - h
            fine = torch.mul(f_out[hs].unsqueeze(2), f_in[hs].unsqueeze(1), out=_slot(fine_ws, n_h))  # conj(z^p)
            coarse = torch.mul(w_out[hs].unsqueeze(3), c_in[hs, None, None], out=_slot(coarse_ws, n_h))  # W z^{qT}
            A = torch.view_as_real(coarse).reshape(n_h, Bw * Q, 2 * N)  # a view (a copy only where tracing)
            F = torch.view_as_real(fine).reshape(n_h, T, 2 * N)
            if traced:
                out[hs] = torch.bmm(A, F.transpose(1, 2)).view(n_h, Bw, Q * T)
            else:
                torch.bmm(A, F.transpose(1, 2), out=out[hs].view(n_h, Bw * Q, T))  # Re(W z^{qT} z^p)
        ctx.save_for_backward(weights, log_z)
        ctx.L, ctx.block = L, block
        return out[..., :L].transpose(0, 1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weights, log_z = ctx.saved_tensors
        L, block = ctx.L, ctx.block
        need_w, need_z = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        Bw, H, N = weights.shape
        q1, q2, t1, t2 = _layout(L)
        Q, T = q1 * q2, t1 * t2
        real = log_z.real.dtype
        rows = 1 + need_z
        f_out, f_in, c_out, c_in = _factor_tables(log_z, L, conj_coarse=True)
        G = torch.zeros(H, rows, Bw, Q * T, dtype=real, device=grad.device)
        G[:, 0, :, :L] = grad.transpose(0, 1)
        if need_z:
            G[:, 1] = G[:, 0] * torch.arange(Q * T, dtype=real, device=grad.device)  # l G_l
        S = torch.empty(H, rows * Bw, N, dtype=log_z.dtype, device=log_z.device)
        n_b, traced = min(block, H), torch.compiler.is_compiling()

        def workspace(*shape: int, dtype: torch.dtype = log_z.dtype) -> Tensor | None:
            return None if traced else torch.empty(n_b, *shape, dtype=dtype, device=log_z.device)

        fine_ws = workspace(t1, t2, N)
        gemm_ws = workspace(rows * Bw * Q, 2 * N, dtype=real)
        prod_ws = workspace(rows * Bw, q1, q2, N)
        part_ws = workspace(rows * Bw, q1, N)
        for h in range(0, H, block):
            hs = slice(h, min(H, h + block))
            n_h = hs.stop - h
            fine = torch.mul(f_out[hs].unsqueeze(2), f_in[hs].unsqueeze(1), out=_slot(fine_ws, n_h))  # conj(z^p)
            F = torch.view_as_real(fine).reshape(n_h, T, 2 * N)
            M = torch.bmm(G[hs].view(n_h, rows * Bw * Q, T), F, out=_slot(gemm_ws, n_h))  # sum_p G conj(z^p)
            M = torch.view_as_complex(M.view(n_h, rows * Bw, q1, q2, N, 2))
            prod = torch.mul(M, c_in[hs, None, None], out=_slot(prod_ws, n_h))
            part = torch.sum(prod, dim=3, out=_slot(part_ws, n_h))  # (h, rows Bw, q1, N)
            if traced:
                S[hs] = torch.sum(part * c_out[hs, None], dim=2)
            else:
                torch.sum(part.mul_(c_out[hs, None]), dim=2, out=S[hs])
        S = S.view(H, rows, Bw, N)
        grad_w = S[:, 0].transpose(0, 1) if need_w else None
        grad_z = (weights.conj().transpose(0, 1) * S[:, 1]).sum(1) if need_z else None
        return grad_w, grad_z, None, None


def vandermonde_kernel(weights: Tensor, log_z: Tensor, L: int, block: int | None = None) -> Tensor:
    """``K[..., h, l] = Re sum_n weights[..., h, n] * exp(l * log_z[h, n])`` for ``l < L``.

    Computed by :class:`_Vandermonde` (one real GEMM per block of channels, forward and backward,
    O(block N sqrt(L)) working memory); the powers come from exact ``exp(l log z)`` factors, so no
    error accumulates along L.

    Args:
        weights: (..., H, N) complex (a real tensor is taken as complex with zero imaginary part).
        log_z: (H, N) complex, the log of the discrete poles (``dt * A`` for ZOH).
        L: kernel length.
        block: channels per block (default: about 2^26 working floats per block).
    Returns:
        (..., H, L) real, in the real dtype of ``log_z``.
    """
    H, N = log_z.shape
    batch = weights.shape[:-2]
    if not weights.is_complex():
        weights = torch.complex(weights, torch.zeros_like(weights))
    weights = weights.to(log_z.dtype).reshape(-1, H, N)
    if block is None:
        q1, q2, t1, t2 = _layout(L)
        Bw, Q, T = weights.shape[0], q1 * q2, t1 * t2
        per_channel = 2 * N * (2 * Bw * Q + Bw * q1 + T)  # floats of backward's GEMM output, M c and F
        block = max(1, min(H, (1 << 26) // per_channel))
    return _Vandermonde.apply(weights, log_z, L, block).reshape(*batch, H, L)


def vandermonde_transpose(u: Tensor, log_z: Tensor) -> Tensor:
    """``x[..., h, n] = sum_l u[..., h, l] * exp(l * log_z[h, n])``.

    Args:
        u: (..., H, L) real.
        log_z: (H, N) complex.
    Returns:
        (..., H, N) complex.
    """
    H, N = log_z.shape
    L = u.shape[-1]
    batch = u.shape[:-2]
    Q, T = _split(L)
    u = torch.nn.functional.pad(u, (0, Q * T - L)).reshape(-1, H, Q, T)  # (B, H, Q, T)
    u = u.transpose(0, 1).reshape(H, -1, T)  # (H, B*Q, T)
    fine_r, fine_i = _powers(log_z, torch.arange(T, device=u.device))  # (H, T, N)
    F = torch.cat([fine_r, fine_i], dim=-1)  # (H, T, 2N)
    partial = torch.bmm(u.to(F.dtype), F)  # (H, B*Q, 2N)
    partial = torch.complex(partial[..., :N], partial[..., N:]).reshape(H, -1, Q, N)
    coarse = torch.complex(*_powers(log_z, torch.arange(Q, device=u.device) * T))  # (H, Q, N)
    x = (partial * coarse[:, None]).sum(dim=2)  # (H, B, N)
    return x.transpose(0, 1).reshape(*batch, H, N)


def _blocks(H: int, M: int, K: int, chunk: int | None, device: torch.device | None = None) -> list[tuple[slice, slice]]:
    """(features, frequencies) blocks with about ``budget`` elements of (h, m, k) each.

    On the CPU, blocks of ~2^19 elements (up to 64 features, >= 256 frequencies) stay in cache
    and keep the batched GEMMs wide.  On a GPU, where each block costs a dozen kernel launches,
    blocks of ~2^25 elements (a few hundred MB of workspace) make one or two blocks of a whole
    layer.  A given ``chunk`` fixes the frequencies per block (all features at once).
    """
    budget = 1 << 25 if device is not None and device.type == "cuda" else 1 << 19
    if chunk is None:
        h_block = max(1, min(H, budget // (M * 256)))
        chunk = max(1, budget // (h_block * M))
    else:
        h_block = H
    return [
        (slice(h, min(H, h + h_block)), slice(k, min(K, k + chunk)))
        for h in range(0, H, h_block)
        for k in range(0, K, chunk)
    ]


def _reciprocals(G1: Tensor, G2: Tensor, sigma: Tensor) -> Tensor:
    """``[Xs | Ys]`` (h, M, 2k) with ``1 / d = Xs - i Ys`` for the frequencies ``sigma`` (k,) (see :class:`_BilinearCauchy`)."""
    H, M = G1.shape
    k = sigma.shape[0]
    if torch.compiler.is_compiling():  # torch.compile / export trace no strided out=
        XY = torch.cat([G2[..., None] - sigma * sigma, G1[..., None] * sigma], dim=-1)
    else:
        XY = torch.empty(H, M, 2 * k, dtype=G1.dtype, device=G1.device)
        torch.sub(G2[..., None], sigma * sigma, out=XY[..., :k])
        torch.mul(G1[..., None], sigma, out=XY[..., k:])
    X, Y = XY[..., :k], XY[..., k:]
    scale = torch.mul(X, X).addcmul_(Y, Y).reciprocal_()  # 1 / |d|^2, (H, M, k)
    XY.view(H, M, 2, k).mul_(scale.unsqueeze(2))
    return XY


def _cauchy_block(G1: Tensor, G2: Tensor, coef: Tensor, sig: Tensor, winv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One (features, frequencies) block of :class:`_BilinearCauchy`'s sums.

    Returns the real and imaginary parts of ``(s A - B) / gamma`` (h, T, k) each, and the reciprocals
    ``XY`` (h, M, 2k) that the backward of the block needs.
    """
    T, k = coef.shape[1] // 2, sig.shape[0]
    XY = _reciprocals(G1, G2, sig)
    S = torch.bmm(coef, XY)  # (h, 2T, 2k)
    A0, B0, A1, B1 = S[:, :T, :k], S[:, T:, :k], S[:, :T, k:], S[:, T:, k:]  # A = A0 - i A1
    P = sig * A1 - B0  # Re(s A - B), (h, T, k)
    Q = sig * A0 + B1  # Im(s A - B)
    wr, wi = winv[:, 0], winv[:, 1]
    return P * wr - Q * wi, P * wi + Q * wr, XY


def _cauchy_block_backward(
    g0: Tensor, g1: Tensor, coef: Tensor, XY: Tensor, sig: Tensor, winv: Tensor, need_G: bool
) -> tuple[Tensor, Tensor | None]:
    """Backward of :func:`_cauchy_block` for the output gradients ``g0``, ``g1`` (h, T, k).

    Returns the block's gradient of ``coef`` (h, 2T, M) and, with ``need_G``, the coef-weighted partial
    sums (h, 4T, M) from which the gradients of ``G2`` (first 2T rows) and ``G1`` (last 2T) follow
    (see :meth:`_BilinearCauchy.backward`).
    """
    k = sig.shape[0]
    wr, wi = winv[:, 0], winv[:, 1]
    gP = g0 * wr + g1 * wi
    gQ = g1 * wr - g0 * wi
    # P = sigma A1 - B0, Q = sigma A0 + B1  ->  gradient of S = [A0 | A1 ; B0 | B1]
    gS0 = torch.cat([sig * gQ, -gP], 1)  # (h, 2T, k), multiplies Xs
    gS1 = torch.cat([sig * gP, gQ], 1)  # multiplies Ys
    grad_coef = torch.bmm(torch.cat([gS0, gS1], 2), XY.transpose(1, 2))
    if not need_G:
        return grad_coef, None
    # With dXs = coef^T gS0, dYs = coef^T gS1 and U = Xs^2 - Ys^2, V = Xs Ys:
    #   -dL/dX = dXs U + 2 dYs V,   dL/dY = dYs U - 2 dXs V
    # so their sums over k are coef-weighted sums of [gS0 | 2 gS1] U^T and [sigma gS1 | -2 sigma gS0] V^T.
    Xs, Ys = XY[..., :k], XY[..., k:]
    if torch.compiler.is_compiling():
        UV = torch.cat([torch.addcmul(Xs * Xs, Ys, Ys, value=-1), Xs * Ys], dim=-1)
    else:
        UV = torch.empty_like(XY)  # (h, M, 2k)
        torch.mul(Xs, Xs, out=UV[..., :k]).addcmul_(Ys, Ys, value=-1)
        torch.mul(Xs, Ys, out=UV[..., k:])
    left = torch.cat([torch.cat([gS0, 2 * gS1], 2), torch.cat([sig * gS1, -2 * sig * gS0], 2)], 1)
    return grad_coef, torch.bmm(left, UV.transpose(1, 2))  # (h, 4T, M)


def _pole_gradients(coef: Tensor, acc: Tensor) -> tuple[Tensor, Tensor]:
    """``(dL/dG1, dL/dG2)`` (H, M) from the partial sums ``acc`` (H, 4T, M) of :func:`_cauchy_block_backward`."""
    T2 = coef.shape[1]
    grad_G2 = -(coef * acc[:, :T2]).sum(1)  # X = G2 - sigma^2
    grad_G1 = (coef * acc[:, T2:]).sum(1)  # Y = sigma G1
    return grad_G1, grad_G2


class _BilinearCauchy(torch.autograd.Function):
    """Real-arithmetic core of :func:`cauchy_conj_bilinear` for the frequencies below Nyquist.

    With ``mu = dt lam`` and ``s_k = i sigma_k``, ``sigma_k = 2 tan(pi k / L)``, each conjugate pair
    shares one denominator ``d = (s - mu)(s - conj(mu)) = X + i Y``, ``X = |mu|^2 - sigma^2``,
    ``Y = -2 sigma Re mu``, and its numerator is ``s a - b`` with real ``a = 2 Re v``,
    ``b = 2 Re(v conj(mu))``.  Inputs: ``G1 = -2 Re mu`` and ``G2 = |mu|^2`` (H, M),
    ``coef = [a ; b]`` (H, 2T, M), the constants ``sigma`` (K,) and ``winv`` (K, 2) (real and
    imaginary part of ``1 / gamma_k``, ``gamma_k = (1 + omega_k) / 2``).  Output (H, T, K, 2):
    real and imaginary part of ``(s A - B) / gamma`` with ``A = sum_m a / d``, ``B = sum_m b / d``;
    with ``nyquist`` one more frequency, ``omega = -1``, where the pair sum is ``a / 2``.

    The reciprocals ``1 / d`` of one block of features and frequencies are computed once
    (``Xs - i Ys``) and contracted with every numerator in one matrix product.  Backward
    recomputes them block by block instead of saving them, so memory stays O(block) in both passes.
    """

    @staticmethod
    def forward(
        ctx, G1: Tensor, G2: Tensor, coef: Tensor, sigma: Tensor, winv: Tensor, chunk: int | None, nyquist: bool
    ) -> Tensor:
        H, T2, M = coef.shape
        T, K = T2 // 2, sigma.shape[0]
        out = torch.empty(H, T, K + nyquist, 2, dtype=coef.dtype, device=coef.device)
        if nyquist:  # omega = -1: each pair gives (v + conj v) / 2 = a / 2
            out[:, :, K, 0] = coef[:, :T].sum(-1) / 2
            out[:, :, K, 1] = 0
        blocks = _blocks(H, M, K, chunk, coef.device)
        for hs, ks in blocks:
            re, im, _ = _cauchy_block(G1[hs], G2[hs], coef[hs], sigma[ks], winv[ks])
            out[hs, :, ks, 0] = re
            out[hs, :, ks, 1] = im
        ctx.save_for_backward(G1, G2, coef, sigma, winv)
        ctx.blocks, ctx.nyquist = blocks, nyquist
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        G1, G2, coef, sigma, winv = ctx.saved_tensors
        H, T2, M = coef.shape
        K = sigma.shape[0]
        need_G = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_coef = torch.zeros_like(coef)
        if ctx.nyquist:
            grad_coef[:, : T2 // 2] = grad_out[:, :, K, 0, None] / 2
        # sum_k of -dL/dX and of sigma dL/dY, still weighted per numerator column: (H, 2T, M) each
        acc = torch.zeros(H, 2 * T2, M, dtype=coef.dtype, device=coef.device)
        for hs, ks in ctx.blocks:
            sig, w = sigma[ks], winv[ks]
            XY = _reciprocals(G1[hs], G2[hs], sig)  # (h, M, 2k)
            g_coef, g_acc = _cauchy_block_backward(grad_out[hs, :, ks, 0], grad_out[hs, :, ks, 1], coef[hs], XY, sig, w,
                                                   need_G)
            grad_coef[hs] += g_coef
            if need_G:
                acc[hs] += g_acc
        grad_G1, grad_G2 = _pole_gradients(coef, acc)
        return grad_G1, grad_G2, grad_coef, None, None, None, None


def _woodbury(S: Tensor, beta: Tensor, nc: int, nb: int) -> Tensor:
    """``S_Cb - beta S_CP (I + beta S_PP)^{-1} S_Pb`` per feature and frequency.

    ``S`` (h, nc + r, nb + r, k) complex holds the Cauchy sums of the rows ``[C ; P]`` against the columns
    ``[b ; P^*]``; ``beta`` (h, k).  Returns (h, nc, nb, k).
    """
    Cb, CP, Pb, PP = S[:, :nc, :nb], S[:, :nc, nb:], S[:, nc:, :nb], S[:, nc:, nb:]
    r = PP.shape[1]
    b = beta[:, None, None]
    if r == 1:
        X = Pb / (1 + beta * PP[:, 0, 0])[:, None, None]  # (h, 1, nb, k)
        return Cb - b * CP * X
    eye = torch.eye(r, dtype=S.dtype, device=S.device)
    Z = eye + beta[..., None, None] * PP.permute(0, 3, 1, 2)  # (h, k, r, r)
    X = torch.linalg.solve(Z, Pb.permute(0, 3, 1, 2))  # (h, k, r, nb)
    return Cb - b * torch.einsum("hcjk,hkjn->hcnk", CP, X)


def _woodbury_backward(S: Tensor, beta: Tensor, G: Tensor, nc: int, nb: int) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`_woodbury` for the output gradient ``G`` (h, nc, nb, k): ``(dL/dS, dL/dbeta)``.

    Complex gradients in torch's convention (``conj`` of the holomorphic derivative times ``G``).  With
    ``Z = I + beta S_PP``, ``X = Z^{-1} S_Pb`` and ``out = S_Cb - beta S_CP X``:
    ``dS_Cb = G``, ``dS_CP = -conj(beta) G X^H``, ``dX = -conj(beta) S_CP^H G``, ``dS_Pb = Z^{-H} dX``,
    ``dZ = -dS_Pb X^H``, ``dS_PP = conj(beta) dZ``, ``dbeta = <S_PP, dZ> - <S_CP X, G>``.
    """
    CP, Pb, PP = S[:, :nc, nb:], S[:, nc:, :nb], S[:, nc:, nb:]
    r = PP.shape[1]
    bc = beta.conj()
    if r == 1:
        den = 1 + beta * PP[:, 0, 0]  # (h, k)
        X = Pb / den[:, None, None]  # (h, 1, nb, k)
        g_CP = -bc[:, None, None] * (G * X.conj()).sum(2, keepdim=True)  # (h, nc, 1, k)
        g_Pb = -(bc / den.conj())[:, None, None] * (CP.conj() * G).sum(1, keepdim=True)  # (h, 1, nb, k)
        g_den = -(g_Pb * X.conj()).sum((1, 2))  # (h, k)
        g_PP = (bc * g_den)[:, None, None]
        g_beta = PP[:, 0, 0].conj() * g_den - (G * (CP * X).conj()).sum((1, 2))
    else:
        eye = torch.eye(r, dtype=S.dtype, device=S.device)
        PPk = PP.permute(0, 3, 1, 2)  # (h, k, r, r)
        CPk = CP.permute(0, 3, 1, 2)  # (h, k, nc, r)
        Gk = G.permute(0, 3, 1, 2)  # (h, k, nc, nb)
        Z = eye + beta[..., None, None] * PPk
        X = torch.linalg.solve(Z, Pb.permute(0, 3, 1, 2))  # (h, k, r, nb)
        bk = bc[..., None, None]
        g_CP = (-bk * (Gk @ X.mH)).permute(0, 2, 3, 1)  # (h, nc, r, k)
        g_Pbk = torch.linalg.solve(Z.mH, -bk * (CPk.mH @ Gk))  # (h, k, r, nb)
        g_Z = -(g_Pbk @ X.mH)  # (h, k, r, r)
        g_beta = (PPk.conj() * g_Z).sum((-1, -2)) - (Gk * (CPk @ X).conj()).sum((-1, -2))
        g_Pb, g_PP = g_Pbk.permute(0, 2, 3, 1), (bk * g_Z).permute(0, 2, 3, 1)
    return torch.cat([torch.cat([G, g_CP], 2), torch.cat([g_Pb, g_PP], 2)], 1), g_beta


class _CauchyWoodbury(torch.autograd.Function):
    """S4's resolvent at the bilinear frequencies: :class:`_BilinearCauchy`'s sums and the Woodbury
    correction of :func:`_woodbury` in one pass over (features, frequencies) blocks.

    Inputs as :class:`_BilinearCauchy` (``coef`` holds the numerators of the rows ``[C ; P]`` against
    the columns ``[b ; P^*]``, row-major), plus ``dt`` (H,) and ``gamma`` (K, 2) (``beta = dt gamma``,
    ``gamma = (1 + omega) / 2``, Nyquist included where ``nyquist``).  Output (H, nc nb, K, 2): the
    real and imaginary parts of the resolvent.  Only the inputs (O(H M (nc + r)(nb + r))) are saved:
    backward recomputes each block's Cauchy sums, so neither pass keeps an (H, (nc + r)(nb + r), L)
    tensor, let alone an (H, N, L) one.
    """

    @staticmethod
    def forward(
        ctx, G1: Tensor, G2: Tensor, coef: Tensor, dt: Tensor, sigma: Tensor, winv: Tensor, gamma: Tensor,
        sizes: tuple[int, int, int], chunk: int | None, nyquist: bool,
    ) -> Tensor:
        H, T2, M = coef.shape
        nc, nb, r = sizes
        T, K = T2 // 2, sigma.shape[0]
        out = torch.empty(H, nc * nb, K + nyquist, 2, dtype=coef.dtype, device=coef.device)
        if nyquist:  # omega = -1: beta = 0, so the resolvent is S_Cb = a / 2 there
            a = coef[:, :T].sum(-1).view(H, nc + r, nb + r)[:, :nc, :nb] / 2
            out[:, :, K, 0] = a.reshape(H, nc * nb)
            out[:, :, K, 1] = 0
        blocks = _blocks(H, M, K, chunk, coef.device)
        for hs, ks in blocks:
            re, im, _ = _cauchy_block(G1[hs], G2[hs], coef[hs], sigma[ks], winv[ks])
            n_h, k = re.shape[0], re.shape[-1]
            S = torch.complex(re, im).view(n_h, nc + r, nb + r, k)
            beta = dt[hs, None] * torch.complex(gamma[ks, 0], gamma[ks, 1])  # (h, k)
            out[hs, :, ks] = torch.view_as_real(_woodbury(S, beta, nc, nb).reshape(n_h, nc * nb, k))
        ctx.save_for_backward(G1, G2, coef, dt, sigma, winv, gamma)
        ctx.blocks, ctx.nyquist, ctx.sizes = blocks, nyquist, sizes
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        G1, G2, coef, dt, sigma, winv, gamma = ctx.saved_tensors
        nc, nb, r = ctx.sizes
        H, T2, M = coef.shape
        T, K = T2 // 2, sigma.shape[0]
        need_G = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_coef = torch.zeros_like(coef)
        if ctx.nyquist:
            g = grad_out[:, :, K, 0].reshape(H, nc, nb, 1) / 2
            grad_coef[:, :T].view(H, nc + r, nb + r, M)[:, :nc, :nb] += g
        acc = torch.zeros(H, 2 * T2, M, dtype=coef.dtype, device=coef.device)
        grad_dt = torch.zeros_like(dt)
        for hs, ks in ctx.blocks:
            sig, w = sigma[ks], winv[ks]
            re, im, XY = _cauchy_block(G1[hs], G2[hs], coef[hs], sig, w)
            n_h, k = re.shape[0], re.shape[-1]
            S = torch.complex(re, im).view(n_h, nc + r, nb + r, k)
            gam = torch.complex(gamma[ks, 0], gamma[ks, 1])
            G = torch.view_as_complex(grad_out[hs, :, ks].contiguous()).view(n_h, nc, nb, k)
            g_S, g_beta = _woodbury_backward(S, dt[hs, None] * gam, G, nc, nb)
            grad_dt[hs] += (g_beta * gam.conj()).real.sum(-1)
            g_S = torch.view_as_real(g_S.reshape(n_h, T, k))
            g_coef, g_acc = _cauchy_block_backward(g_S[..., 0], g_S[..., 1], coef[hs], XY, sig, w, need_G)
            grad_coef[hs] += g_coef
            if need_G:
                acc[hs] += g_acc
        grad_G1, grad_G2 = _pole_gradients(coef, acc)
        return grad_G1, grad_G2, grad_coef, grad_dt, None, None, None, None, None, None


def cauchy_conj_bilinear(v: Tensor, lam: Tensor, dt: Tensor, L: int, chunk: int | None = None) -> Tensor:
    """Cauchy sums of a conjugate-symmetric system at the bilinear images of the roots of unity.

    ``out[t, h, k] = sum_m v_m / (a_k - b_hk lam_m) + conj(v_m) / (a_k - b_hk conj(lam_m))``
    with ``a_k = 1 - omega_k``, ``b_hk = dt_h (1 + omega_k) / 2``, ``omega_k = exp(-2 pi i k / L)``,
    for ``k = 0 .. L // 2``: the resolvent sums of S4's kernel (Gu, Goel, Re 2021, Alg. 1 / Lemma C.3),
    with the two modes of each conjugate pair summed together.  Only the ``L // 2 + 1``
    frequencies of a real kernel are evaluated; the Nyquist one (``omega = -1``) in closed form.

    One real reciprocal per (h, k, m) serves every numerator (see :class:`_BilinearCauchy`);
    chunked over ``k`` and recomputed in backward, so no (H, K, M) tensor is built or saved.

    Args:
        v: (T, H, M) complex numerators.
        lam: (H, M) complex poles (``Re lam < 0``).
        dt: (H,) real step sizes.
        L: the length whose roots of unity are used.
        chunk: frequencies per chunk, all features at once (default: blocks of up to 64 features and
            about 2^19 / (64 M) frequencies).
    Returns:
        (T, H, L // 2 + 1) complex.
    """
    G1, G2, coef, sigma, winv, gamma, nyquist = _bilinear_terms(v, lam, dt, L)
    out = _BilinearCauchy.apply(G1, G2, coef, sigma, winv, chunk, nyquist)  # (H, T, K, 2)
    return torch.view_as_complex(out).transpose(0, 1)  # (T, H, K)


def _bilinear_terms(v: Tensor, lam: Tensor, dt: Tensor, L: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, bool]:
    """``(G1, G2, coef, sigma, winv, gamma, nyquist)``: the inputs of :class:`_BilinearCauchy` for numerators
    ``v`` (T, H, M), and ``gamma = (1 + omega) / 2`` (K', 2) of the frequencies below Nyquist."""
    real = lam.real.dtype
    K = L // 2 + 1
    below = L // 2 if L % 2 == 0 else K  # frequencies with omega != -1
    theta = math.pi * torch.arange(below, dtype=torch.float64, device=lam.device) / L  # half-angles
    sigma = 2 * torch.tan(theta)
    gamma = torch.polar(torch.cos(theta), -theta)  # (1 + omega) / 2
    winv = torch.view_as_real(1 / gamma)  # (K', 2)
    mu = dt.to(real)[:, None] * lam  # (H, M)
    coef = torch.cat([2 * v.real, 2 * (v * mu.conj()).real], dim=0)  # (2T, H, M)
    coef = coef.transpose(0, 1).contiguous()  # (H, 2T, M)
    G1, G2 = -2 * mu.real, mu.real.square() + mu.imag.square()
    return G1, G2, coef, sigma.to(real), winv.to(real), torch.view_as_real(gamma).to(real), below < K


def dplr_resolvent_bilinear(
    C: Tensor, b: Tensor, P: Tensor, lam: Tensor, dt: Tensor, L: int, chunk: int | None = None
) -> Tensor:
    """``C [(1 - omega) I - dt (1 + omega)/2 A]^{-1} b`` for ``A = Lambda - P^* P`` at ``omega_k = exp(-2 pi i k / L)``.

    The system is conjugate-symmetric (kept halves: the full state is ``[x, conj x]``), as in S4
    (Gu, Goel, Re 2021, Lemma C.2-C.3).  With ``D = diag(1 - omega - beta Lambda)``,
    ``beta = dt (1 + omega) / 2``, Woodbury gives
    ``(D + beta P^* P)^{-1} = D^{-1} - beta D^{-1} P^* (I + beta P D^{-1} P^*)^{-1} P D^{-1}``: four
    Cauchy sums (:func:`cauchy_conj_bilinear`'s) and an r x r solve per feature and frequency.
    Computed by :class:`_CauchyWoodbury` in (feature, frequency) blocks, both passes: nothing of
    size H x L x (c + r)(n + r) is kept for the backward pass.

    Args:
        C: (c, H, M) complex output vectors.
        b: (n, H, M) complex input vectors.
        P: (r, H, M) complex low-rank factor.
        lam: (H, M) complex poles (``Re lam < 0``).
        dt: (H,) real step sizes.
        L: the length whose roots of unity are used.
        chunk: frequencies per block, as in :func:`cauchy_conj_bilinear`.
    Returns:
        (c, n, H, L // 2 + 1) complex.
    """
    nc, nb, r = C.shape[0], b.shape[0], P.shape[0]
    H, K = lam.shape[0], L // 2 + 1
    left = torch.cat([C, P])  # (c + r, H, M)
    right = torch.cat([b, P.conj()])  # (n + r, H, M)
    v = (left[:, None] * right[None]).flatten(0, 1)  # ((c + r) (n + r), H, M)
    G1, G2, coef, sigma, winv, gamma, nyquist = _bilinear_terms(v, lam, dt, L)
    out = _CauchyWoodbury.apply(G1, G2, coef, dt.to(G1.dtype), sigma, winv, gamma, (nc, nb, r), chunk, nyquist)
    return torch.view_as_complex(out).view(H, nc, nb, K).permute(1, 2, 0, 3)  # (c, n, H, K)
