import math

import numpy as np
import pytest
import torch

from ssmcore.hippo import MEASURES, low_rank_correction, nplr, transition


def test_legs_known_entries():
    A, B = transition("legs", 4)
    assert np.allclose(np.diag(A), [-1, -2, -3, -4])
    assert A[1, 0] == pytest.approx(-math.sqrt(3)) and A[2, 0] == pytest.approx(-math.sqrt(5))
    assert A[3, 1] == pytest.approx(-math.sqrt(7 * 3))
    assert np.all(np.triu(A, 1) == 0)
    assert np.allclose(B, np.sqrt(2 * np.arange(4) + 1))


def test_legt_known_entries():
    A, B = transition("legt", 4)
    r = np.sqrt(2 * np.arange(4) + 1)
    # A_nk = -(1/2) r_n r_k for n >= k, -(1/2) (-1)^(n-k) r_n r_k above the diagonal
    assert np.allclose(np.diag(A), -0.5 * r**2)
    assert A[1, 0] == pytest.approx(-0.5 * math.sqrt(3)) and A[0, 1] == pytest.approx(0.5 * math.sqrt(3))
    assert A[0, 2] == pytest.approx(-0.5 * math.sqrt(5)) and A[2, 0] == pytest.approx(-0.5 * math.sqrt(5))
    assert np.allclose(B, 0.5 * r)


def test_fout_known_entries():
    A, B = transition("fout", 6)
    assert np.allclose(B, [1, 0, math.sqrt(2), 0, math.sqrt(2), 0])
    assert A[0, 0] == pytest.approx(-1.0) and A[0, 2] == pytest.approx(-math.sqrt(2))
    # pairs (2k, 2k+1) rotate at frequency pi k, plus the rank-one endpoint term -B B^T
    assert A[2, 3] == pytest.approx(-math.pi) and A[3, 2] == pytest.approx(math.pi)
    assert A[4, 5] == pytest.approx(-2 * math.pi) and A[5, 4] == pytest.approx(2 * math.pi)
    assert A[2, 2] == pytest.approx(-2.0) and A[1, 1] == 0


@pytest.mark.parametrize("measure", MEASURES)
def test_low_rank_correction_makes_normal(measure):
    A, _ = transition(measure, 16)
    P = low_rank_correction(measure, 16)
    assert P.shape[0] == (2 if measure == "legt" else 1)
    S = A + P.T @ P
    assert np.allclose(S @ S.T, S.T @ S, atol=1e-10)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [8, 64])
def test_nplr_reconstructs_full(measure, N):
    A, B = transition(measure, N)
    d = nplr(measure, N, keep_half=False)
    V, lam, P = d["V"].numpy(), d["Lambda"].numpy(), d["P"].numpy()
    assert np.allclose(V.conj().T @ V, np.eye(N), atol=1e-12)
    rebuilt = V @ (np.diag(lam) - P.conj().T @ P) @ V.conj().T
    assert np.abs(rebuilt - A).max() < 1e-11 * max(1.0, np.abs(A).max())
    assert np.allclose(V @ d["B"].numpy(), B, atol=1e-11)


@pytest.mark.parametrize("measure", MEASURES)
def test_nplr_half_is_one_of_each_conjugate_pair(measure):
    """[V, conj V] must be unitary and rebuild A: FouT's zero-frequency pair included."""
    N = 16
    A, B = transition(measure, N)
    d = nplr(measure, N)
    assert d["Lambda"].shape == (N // 2,) and d["V"].shape == (N, N // 2)
    assert torch.all(d["Lambda"].imag >= 0)
    full = lambda x: np.concatenate([x, x.conj()], axis=-1)  # noqa: E731
    V, lam, P, Bt = full(d["V"].numpy()), full(d["Lambda"].numpy()), full(d["P"].numpy()), full(d["B"].numpy())
    assert np.allclose(V.conj().T @ V, np.eye(N), atol=1e-12)
    rebuilt = V @ (np.diag(lam) - P.conj().T @ P) @ V.conj().T
    assert np.abs(rebuilt - A).max() < 1e-11 * max(1.0, np.abs(A).max())
    assert np.allclose(V @ Bt, B, atol=1e-11)


def test_nplr_rejects_odd_and_unknown():
    with pytest.raises(ValueError, match="even"):
        nplr("legs", 7)
    with pytest.raises(ValueError, match="unknown HiPPO measure"):
        transition("nope", 4)
