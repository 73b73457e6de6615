"""Initialisations of diagonal state matrices and step sizes.

S4D (Gu, Gupta, Goel, Re 2022, "On the Parameterization and Initialization of Diagonal
State Space Models"), Sec. 4: S4D-Lin, S4D-Inv, S4D-LegS, S4D-Real, random.

All functions return the ``M = N // 2`` modes kept from each conjugate pair (a real
state of size N), in complex128; layers cast them.  The perturb-then-diagonalise (PTD)
initialisation lives in :mod:`ssmcore.perturbation`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssmcore.hippo import nplr

__all__ = [
    "DIAGONAL_INITS",
    "REAL_TRANSFORMS",
    "diagonal_init",
    "inverse_real_transform",
    "log_dt_init",
    "real_transform",
]

DIAGONAL_INITS = ("lin", "inv", "legs", "real", "rand")
REAL_TRANSFORMS = ("exp", "softplus", "none")


def diagonal_init(name: str, N: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(A, B)`` of shape (N // 2,) complex128 for a diagonal SSM of real state size N.

    * ``lin``:  A_n = -1/2 + i pi n
    * ``inv``:  A_n = -1/2 + i (N / pi) (N / (2n + 1) - 1)
    * ``legs``: the eigenvalues of the normal part of HiPPO-LegS, B projected onto its eigenvectors
    * ``real``: A_n = -(n + 1)
    * ``rand``: Re A = -1/2, Im A ~ U[0, pi N)
    B is all ones except for ``legs``.
    """
    M = N // 2
    if M < 1:
        raise ValueError(f"d_state must be at least 2, got {N}")
    n = torch.arange(M, dtype=torch.float64)
    ones = torch.ones(M, dtype=torch.complex128)
    if name == "lin":
        return torch.complex(-0.5 * torch.ones(M, dtype=torch.float64), math.pi * n), ones
    if name == "inv":
        return torch.complex(-0.5 * torch.ones(M, dtype=torch.float64), N / math.pi * (N / (2 * n + 1) - 1)), ones
    if name == "legs":
        d = nplr("legs", N)
        return d["Lambda"], d["B"]
    if name == "real":
        return torch.complex(-(n + 1), torch.zeros(M, dtype=torch.float64)), ones
    if name == "rand":
        imag = torch.rand(M, dtype=torch.float64, generator=generator) * math.pi * N
        return torch.complex(-0.5 * torch.ones(M, dtype=torch.float64), imag), ones
    raise ValueError(f"unknown init {name!r}; choose one of {', '.join(DIAGONAL_INITS)}")


def log_dt_init(H: int, dt_min: float = 1e-3, dt_max: float = 1e-1, generator: torch.Generator | None = None) -> Tensor:
    """log(dt) of shape (H,), dt log-uniform in [dt_min, dt_max]."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(H, generator=generator, dtype=torch.float64)
    return u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def inverse_real_transform(re: Tensor, transform: str) -> Tensor:
    """The raw parameter whose transform gives ``Re A = re`` (negative)."""
    if transform == "exp":
        return torch.log(-re)
    if transform == "softplus":
        return torch.log(torch.expm1(-re))
    if transform == "none":
        return re.clone()
    raise ValueError(f"unknown real transform {transform!r}; choose one of {', '.join(REAL_TRANSFORMS)}")


def real_transform(raw: Tensor, transform: str) -> Tensor:
    """``Re A`` from its raw parameter; ``exp`` and ``softplus`` keep it strictly negative."""
    if transform == "exp":
        return -torch.exp(raw)
    if transform == "softplus":
        return -torch.nn.functional.softplus(raw)
    if transform == "none":
        return raw
    raise ValueError(f"unknown real transform {transform!r}; choose one of {', '.join(REAL_TRANSFORMS)}")
