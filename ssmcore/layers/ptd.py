"""S4-PTD and S5-PTD: diagonal SSMs initialised by perturb-then-diagonalise.

Yu, Nigmetov, Morozov, Mahoney, Erichson (2023), "Robustifying State-space Models for Long
Sequences via Approximate Diagonalization".  Instead of the eigenvalues of the normal part
of HiPPO-LegS (S4D-LegS, S5's HiPPO-N), the diagonal system is the eigendecomposition
``A + E = V Lambda V^-1`` of a slightly perturbed LegS matrix whose eigenvectors are well
conditioned, so its transfer function converges to HiPPO-LegS's as ``||E|| -> 0`` (strong
convergence, unlike the normal-part initialisation).  The decompositions are computed
offline by ``scripts/make_ptd.py`` and loaded from ``ssmcore/data/ptd_N{N}.npz``
(:func:`ssmcore.perturbation.load_ptd`); nothing is optimised at construction time.

``A + E`` is real, so its eigenvalues come in conjugate pairs plus a few real ones; one mode
of each pair is kept together with the real modes (whose input weights are halved so that
the ``2 Re`` output counts them once).  The number of complex modes kept is therefore
``M = (N + n_real) / 2``, slightly above ``N / 2`` (``n_real`` is stored with the data, usually
0-8); the recurrent state has M modes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ssmcore.hippo import transition
from ssmcore.init import inverse_real_transform
from ssmcore.layers.s4d import S4D
from ssmcore.layers.s5 import S5
from ssmcore.perturbation import load_ptd, ptd_half


class S4PTD(S4D):
    """S4-PTD: S4D whose ``Lambda`` and ``B~ = V^-1 B`` come from the PTD of HiPPO-LegS.

    ``d_state`` is the real state size N (a shipped size: 8, 16, ..., 256); the state has
    ``M = (N + n_real) / 2`` complex modes (see the module docstring) and the output is 2 Re(C x).
    ``C`` is ``dt * C~`` with ``C~ = C V`` for a random complex ``C`` (H x N per output channel): the
    factor ``dt`` gives the paper's initial kernel scale (see :class:`~ssmcore.layers.s4d.S4D`).

    Args as :class:`ssmcore.layers.s4d.S4D`, without ``init`` and ``B_init``; ``d_state`` is listed
    here because it selects the shipped decomposition.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        real_transform: str = "exp",
        **kwargs: Any,
    ) -> None:
        Lambda, V, W = ptd_half(d_state)  # (M,), (N, M), (M, N); raises if N is not shipped
        super().__init__(
            d_model, d_state=d_state, init="legs", disc=disc, dt_min=dt_min, dt_max=dt_max,
            real_transform=real_transform, **kwargs,
        )
        H, M = d_model, Lambda.shape[0]
        _, B = transition("legs", d_state)
        B_tilde = W @ torch.as_tensor(B, dtype=torch.complex128)  # (M,)
        self.A_real = nn.Parameter(inverse_real_transform(Lambda.real, real_transform).float().repeat(H, 1))
        self.A_imag = nn.Parameter(Lambda.imag.float().repeat(H, 1))
        self.B = nn.Parameter(torch.view_as_real(B_tilde.to(torch.complex64)).repeat(H, 1, 1))  # (H, M, 2)
        C = torch.randn(self.n_kernels, H, d_state, dtype=torch.complex128) / math.sqrt(2)
        C = (C @ V) * torch.exp(self.log_dt.detach()).double()[:, None]  # dt * C~: the paper's scale, see S4D
        self.C = nn.Parameter(torch.view_as_real(C.to(torch.complex64)))  # (n_kernels, H, M, 2)
        self._modes = M

    @property
    def state_modes(self) -> int:
        return self._modes


class S5PTD(S5):
    """S5-PTD: S5 whose ``Lambda``, ``V`` and ``V^-1`` come from the PTD of HiPPO-LegS, per block.

    ``d_state`` is P and ``d_state / blocks`` must be a shipped size (8, 16, ..., 256).  With
    ``conj_sym`` the state has ``blocks * (P / blocks + n_real) / 2`` complex modes (see the module
    docstring), otherwise P.  Args as :class:`ssmcore.layers.s5.S5`; ``d_state`` is listed here because
    it selects the shipped decomposition.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        blocks: int = 1,
        conj_sym: bool = True,
        clip_eigs: bool = True,
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        **kwargs: Any,
    ) -> None:
        if d_state % blocks:
            raise ValueError(f"d_state={d_state} must be divisible by blocks={blocks}")
        self._eigen = ptd_blocks(d_state // blocks, blocks, conj_sym)
        super().__init__(
            d_model, d_state=d_state, blocks=blocks, conj_sym=conj_sym, clip_eigs=clip_eigs, disc=disc,
            dt_min=dt_min, dt_max=dt_max, **kwargs,
        )

    def _init_from_eigen(self, Lambda: Tensor, V: Tensor, V_inv: Tensor, dt_min: float, dt_max: float) -> None:
        super()._init_from_eigen(*self._eigen, dt_min, dt_max)
        del self._eigen


def ptd_blocks(size: int, blocks: int, conj_sym: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Block-diagonal PTD eigendecomposition: ``(Lambda (M,), V (P, M), V_inv (M, P))`` complex128.

    With ``conj_sym`` each block keeps one mode per conjugate pair plus its real modes (rows of
    ``V_inv`` for real modes halved, see :func:`ssmcore.perturbation.ptd_half`).
    """
    if conj_sym:
        lam, V, W = ptd_half(size)
    else:
        data = load_ptd(size)
        lam, V, W = data["Lambda"], data["V"], data["Vinv"]
    return lam.repeat(blocks), torch.block_diag(*[V] * blocks), torch.block_diag(*[W] * blocks)
