"""Perturb-then-diagonalise (PTD) initialisation of diagonal SSMs.

Yu, Nigmetov, Morozov, Mahoney, Erichson (2023), "Robustifying State-space Models for Long
Sequences via Approximate Diagonalization".  The HiPPO-LegS matrix ``A`` is diagonalisable
only in exact arithmetic: its eigenvector matrix has a condition number around 1e20 at
N = 64, so ``eig(A)`` in floating point is meaningless.  PTD looks for a small real
perturbation ``E`` that makes ``A + E`` well-conditioned to diagonalise,

    min_E  kappa(V(A + E))^2 + gamma ||E||_F   (+ a penalty keeping eig(A + E) in Re < -margin),

with ``torch.linalg.eig`` and Adam in float64, and uses ``A + E = V Lambda V^-1`` as the
diagonal system.  The optimisation runs offline (``scripts/make_ptd.py``); the layers load
the shipped ``ssmcore/data/ptd_N{N}.npz`` files through :func:`load_ptd`.

The stability penalty is our addition to the paper's objective: an unstructured
perturbation of the (highly non-normal) LegS matrix can push eigenvalues across the
imaginary axis, which would make the transfer function blow up; the penalty keeps every
mode decaying.  ``E`` is parameterised as ``E = (r r^T) * Z`` with ``r_n = sqrt(2n + 1)``,
LegS's own entry scale, so that the low-order block of ``A`` (which carries the
low-frequency response) is perturbed relatively as little as the high-order one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from ssmcore.hippo import low_rank_correction, transition

#: state sizes shipped as ssmcore/data/ptd_N{N}.npz
SHIPPED_SIZES = (8, 16, 32, 64, 128, 256)
#: eigenvalues with |Im| below this (relative to |lambda|) are treated as real
REAL_TOL = 1e-9


def condition_number(V: Tensor) -> Tensor:
    """2-norm condition number sigma_max / sigma_min of ``V`` (differentiable)."""
    s = torch.linalg.svdvals(V)
    return s[..., 0] / s[..., -1]


def perturb_then_diagonalize(
    N: int,
    gamma: float | None = None,
    steps: int = 1000,
    init: str = "normal",
    init_scale: float = 0.03,
    lr: float = 0.02,
    lr_final: float = 0.1,
    margin: float = 0.5,
    seed: int = 0,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Optimise a perturbation ``E`` of HiPPO-LegS (N x N) and diagonalise ``A + E``.

    Args:
        N: state size.
        gamma: weight of ``||E||_F`` against ``kappa(V)^2``; default ``1e4 / ||A||_F``, so that
            raising ``||E||_F / ||A||_F`` by 1% costs as much as raising ``kappa^2`` by 100.
        steps: Adam steps.
        init: starting perturbation.  ``normal``: ``E_0 = t P P^T``, a step from LegS towards its normal
            part ``A + P P^T`` (HiPPO-N); ``A + E_0 = A_N - (1 - t) P P^T`` has a negative definite
            symmetric part, so every eigenvalue has ``Re <= -1/2``, and its eigenvectors are already
            well conditioned (kappa ~ 40 at ``t`` giving 3.5%, for every N).  ``random``: Gaussian ``Z_0``
            (seeded), the paper's generic start, which is unstable and far worse conditioned.
        init_scale: ``||E_0||_F / ||A||_F`` of the starting perturbation.
        lr: Adam learning rate on ``Z`` (``E = (r r^T) * Z``), relative to the initial ``Z`` scale.
        lr_final: the learning rate decays to ``lr_final * lr`` along a cosine.
        margin: eigenvalues are pushed to ``Re lambda <= -margin``.
        seed: seed of the ``random`` start (every start is deterministic).
        progress: called as ``progress(step, stats)`` every ``steps // 20`` steps.
    Returns:
        float64 / complex128 numpy arrays: ``A`` (N, N), ``B`` (N,), ``E`` (N, N), ``Lambda`` (N,),
        ``V`` (N, N), ``Vinv`` (N, N), and scalars ``kappa``, ``rel_norm`` (``||E||_F / ||A||_F``), ``gamma``.
        The best iterate (lowest objective) is returned.
    """
    A_np, B_np = transition("legs", N)
    A = torch.as_tensor(A_np)
    if gamma is None:
        gamma = 1e4 / A.norm().item()
    r = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    scale = r[:, None] * r[None, :]  # (N, N) LegS entry scale
    if init == "normal":
        P = torch.as_tensor(low_rank_correction("legs", N))  # (1, N): A + P^T P is normal
        Z0 = (P.T @ P) / scale
    elif init == "random":
        Z0 = torch.randn(N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    else:
        raise ValueError(f"unknown init {init!r}; choose normal or random")
    Z0 = Z0 * (init_scale * A.norm() / (scale * Z0).norm())
    z_scale = Z0.abs().mean().item()
    Z = Z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([Z], lr=lr * z_scale)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(steps, 1)))
    )
    best: tuple[float, Tensor] | None = None
    every = max(1, steps // 20)
    for step in range(steps + 1):
        E = scale * Z
        lam, V = torch.linalg.eig(A + E)
        kappa = condition_number(V)
        unstable = torch.relu(lam.real + margin).square().sum()
        loss = kappa.square() + gamma * E.norm() + 1e4 * unstable
        value = loss.item()
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, Z.detach().clone())
        if progress is not None and (step % every == 0 or step == steps):
            stats = {"kappa": kappa.item(), "rel_norm": (E.norm() / A.norm()).item(), "max_re": lam.real.max().item()}
            progress(step, stats)
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert best is not None, "PTD optimisation produced no finite objective"
    E = (scale * best[1]).numpy()
    lam, V = np.linalg.eig(A_np + E)
    lam, V = _clean_real_modes(lam, V)
    order = np.lexsort((lam.real, -lam.imag))  # largest imaginary part first
    lam, V = lam[order], V[:, order]
    Vinv = np.linalg.inv(V)
    s = np.linalg.svd(V, compute_uv=False)
    return {
        "A": A_np,
        "B": B_np,
        "E": E,
        "Lambda": lam,
        "V": V,
        "Vinv": Vinv,
        "kappa": np.float64(s[0] / s[-1]),
        "rel_norm": np.float64(np.linalg.norm(E) / np.linalg.norm(A_np)),
        "gamma": np.float64(gamma),
    }


def _clean_real_modes(lam: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make numerically real eigenvalues exactly real (and their eigenvectors real)."""
    real = np.abs(lam.imag) <= REAL_TOL * np.abs(lam)
    lam = np.where(real, lam.real + 0j, lam)
    V = V.copy()
    for j in np.flatnonzero(real):
        v = V[:, j] * np.exp(-1j * np.angle(V[np.argmax(np.abs(V[:, j])), j]))
        V[:, j] = v.real / np.linalg.norm(v.real)
    return lam, V


def ptd_path(N: int) -> str:
    """File name of the shipped PTD data for state size ``N`` (inside the ssmcore package)."""
    return f"data/ptd_N{N}.npz"


def load_ptd(N: int) -> dict[str, Tensor]:
    """The shipped PTD diagonalisation of HiPPO-LegS of size ``N`` as tensors.

    Keys as :func:`perturb_then_diagonalize`; ``Lambda``, ``V``, ``Vinv`` complex128, the rest float64.
    """
    path = resources.files("ssmcore").joinpath(ptd_path(N))
    if not path.is_file():
        raise FileNotFoundError(
            f"no PTD data for d_state={N}: ssmcore/{ptd_path(N)} is missing; "
            f"create it with `python scripts/make_ptd.py --sizes {N}` (shipped sizes: {SHIPPED_SIZES})"
        )
    with path.open("rb") as f, np.load(f) as data:
        return {k: torch.as_tensor(np.array(data[k])) for k in data.files}


def ptd_half(N: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(Lambda (M,), V (N, M), W (M, N))`` keeping one mode of each conjugate pair.

    For a real input ``u`` and real ``c``, ``c^T V diag(f(Lambda)) V^-1 b = 2 Re(c^T V_M diag(f(Lambda_M)) W b)``
    where the kept modes are those with ``Im > 0`` and the real ones; ``W`` is the matching rows
    of ``V^-1`` with the rows of real modes halved (so that ``2 Re`` counts them once).
    ``M = (N + n_real) / 2`` where ``n_real`` is the number of real eigenvalues (even, usually 0-8).
    """
    d = load_ptd(N)
    lam, V, Vinv = d["Lambda"], d["V"], d["Vinv"]
    real = lam.imag == 0
    keep = (lam.imag > 0) | real
    weights = torch.where(real, 0.5, 1.0).to(torch.float64)
    return lam[keep], V[:, keep], Vinv[keep] * weights[keep, None]
