"""HiPPO transition matrices and their normal-plus-low-rank (NPLR) decompositions.

Gu, Dao, Ermon, Rudra, Re (2020), "HiPPO: Recurrent Memory with Optimal Polynomial
Projections", and Gu, Goel, Re (2021), "Efficiently Modeling Long Sequences with
Structured State Spaces" (S4), Sec. 3 / App. C.

Every measure here has the form ``A = S - P P^T`` where ``S`` is normal (a multiple
of the identity plus a skew-symmetric matrix).  Diagonalising ``S = V Lambda V^*``
with unitary ``V`` gives the NPLR form ``A = V (Lambda - P~ P~^*) V^*`` with
``P~ = V^* P``; the diagonal-plus-low-rank (DPLR) parameterisation of S4 starts there.
"""

from __future__ import annotations

import numpy as np
import torch

MEASURES = ("legs", "legt", "fout")


def transition(measure: str, N: int) -> tuple[np.ndarray, np.ndarray]:
    """The continuous-time HiPPO matrices ``(A, B)`` of shape (N, N) and (N,), float64."""
    n = np.arange(N, dtype=np.float64)
    if measure == "legs":
        r = np.sqrt(2 * n + 1)
        A = r[:, None] * r[None, :]
        A = np.tril(A) - np.diag(n)  # lower triangle sqrt(2n+1)sqrt(2k+1); diagonal n+1
        return -A, r.copy()
    if measure == "legt":
        r = np.sqrt(2 * n + 1)
        i, j = np.meshgrid(n, n, indexing="ij")
        A = r[:, None] * np.where(i < j, (-1.0) ** (i - j), 1.0) * r[None, :]
        # halved, as in S4, so that its time scale matches LegS
        return -0.5 * A, 0.5 * r
    if measure == "fout":
        freqs = np.arange(N // 2, dtype=np.float64)
        d = np.stack([np.zeros(N // 2), freqs], axis=-1).reshape(-1)[1:]
        A = np.pi * (-np.diag(d, 1) + np.diag(d, -1))
        B = np.zeros(N)
        B[0::2] = np.sqrt(2.0)
        B[0] = 1.0
        A = A - B[:, None] * B[None, :]  # rank-one correction: the other endpoint u(t - 1)
        return A, B
    raise ValueError(f"unknown HiPPO measure {measure!r}; choose one of {', '.join(MEASURES)}")


def low_rank_correction(measure: str, N: int) -> np.ndarray:
    """``P`` of shape (rank, N) such that ``A + P^T P`` is normal."""
    n = np.arange(N, dtype=np.float64)
    if measure == "legs":
        return np.sqrt(n + 0.5)[None, :]
    if measure == "legt":
        p = np.sqrt(1 + 2 * n)
        p0, p1 = p.copy(), p.copy()
        p0[0::2] = 0.0
        p1[1::2] = 0.0
        return np.stack([p0, p1]) * 2 ** -0.5
    if measure == "fout":
        p = np.zeros(N)
        p[0::2] = np.sqrt(2.0)
        p[0] = 1.0
        return p[None, :]
    raise ValueError(f"unknown HiPPO measure {measure!r}; choose one of {', '.join(MEASURES)}")


def _pair_real_modes(w: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give the zero-frequency eigenvectors of a real skew matrix the conjugate-pair structure.

    ``w, V`` are the eigenpairs of ``i * skew`` (from ``eigh``).  Eigenvectors of a nonzero
    ``w`` come in conjugate pairs automatically; the kernel of ``skew`` (FouT has a
    two-dimensional one) gets an arbitrary basis.  It is replaced by ``(r_1 +- i r_2) / sqrt 2``
    from a real orthonormal basis ``r``, ordered so that keeping the first of each ``+``/``-``
    pair (``keep_half``) keeps exactly one vector of each conjugate pair.
    """
    tol = 1e-9 * max(1.0, float(np.abs(w).max(initial=0.0)))
    zero = np.flatnonzero(np.abs(w) < tol)
    if zero.size == 0:
        return w, V
    if zero.size % 2:
        raise ValueError("the normal part has an odd number of real modes; no conjugate-pair form exists")
    Z = V[:, zero]
    U, _, _ = np.linalg.svd(np.concatenate([Z.real, Z.imag], axis=1), full_matrices=False)
    real_basis = U[:, : zero.size]  # real orthonormal basis of the kernel
    plus = (real_basis[:, 0::2] + 1j * real_basis[:, 1::2]) / np.sqrt(2.0)
    w, V = w.copy(), V.copy()
    w[zero] = 0.0
    V[:, zero] = np.concatenate([plus, plus.conj()], axis=1)
    return w, V


def nplr(measure: str, N: int, keep_half: bool = True) -> dict[str, torch.Tensor]:
    """Normal-plus-low-rank form of a HiPPO matrix, in complex128.

    Returns a dict with
      ``Lambda`` (M,), ``P`` (rank, M), ``B`` (M,), ``V`` (N, M)
    where ``M = N // 2`` when ``keep_half`` (one of each conjugate pair, largest
    imaginary part first) and ``M = N`` otherwise.  With ``keep_half=False``,
    ``A == V @ (diag(Lambda) - P^* P) @ V^*`` holds to round-off (P as rows: ``P^T P`` -> ``P^* P``).
    """
    if N % 2:
        raise ValueError(f"d_state must be even for the NPLR form, got {N}")
    A, B = transition(measure, N)
    P = low_rank_correction(measure, N)
    S = A + P.T @ P  # normal: c I + skew
    diag_mean = np.mean(np.diag(S))
    skew = S - diag_mean * np.eye(N)
    # i * skew is Hermitian: eigh gives a unitary V and real eigenvalues w, skew = V (-i w) V^*
    w, V = np.linalg.eigh(skew * 1j)
    w, V = _pair_real_modes(w, V)
    lam = diag_mean - 1j * w
    order = np.argsort(-lam.imag, kind="stable")
    lam, V = lam[order], V[:, order]
    if keep_half:
        lam, V = lam[: N // 2], V[:, : N // 2]
    Vh = V.conj().T
    # rows of P~ are conj(V^* p)^T, so that V^* (p p^T) V = P~^* P~ (p real)
    P_t = (Vh @ P.T.astype(np.complex128)).T.conj()
    B_t = Vh @ B.astype(np.complex128)
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.complex128)  # noqa: E731
    return {"Lambda": as_t(lam), "P": as_t(P_t), "B": as_t(B_t), "V": as_t(V)}
