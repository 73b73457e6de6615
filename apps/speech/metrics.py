"""Generative-audio metrics from a classifier, as SaShiMi (Goel et al. 2022, Sec. 5.2) scores SC09 samples.

All take class probabilities ``probs`` (N, C) or features (N, D) and compute in float64.

* Inception score (Salimans et al. 2016): ``exp E_x KL(p(y|x) || p(y))`` -- between 1 and C;
  high when each sample is confidently one class and the classes are balanced.
* Modified inception score (Gurumurthy et al. 2017): ``exp E_{x,x'} KL(p(y|x) || p(y|x'))``,
  which also rewards diversity within a class.
* AM score (Zhou et al. 2018): ``KL(p_ref(y) || p(y)) + E_x H(p(y|x))`` with ``p_ref`` the class
  distribution of the real data (here: the classifier's mean prediction on the real test set);
  lower is better.
* Frechet distance (Heusel et al. 2017) between Gaussian fits of two feature sets.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

EPS = 1e-12


def _probs(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"class probabilities must be (N, C) with N > 0, got shape {p.shape}")
    return np.clip(p, EPS, 1.0)


def inception_score(probs: torch.Tensor | np.ndarray) -> float:
    """``exp(mean_x KL(p(y|x) || p(y)))`` of ``probs`` (N, C)."""
    p = _probs(probs)
    marginal = p.mean(axis=0, keepdims=True)  # (1, C)
    kl = (p * (np.log(p) - np.log(marginal))).sum(axis=1)  # (N,)
    return float(np.exp(kl.mean()))


def modified_inception_score(probs: torch.Tensor | np.ndarray) -> float:
    """``exp(mean_{x, x'} KL(p(y|x) || p(y|x')))`` over all ordered pairs of ``probs`` (N, C)."""
    p = _probs(probs)
    logp = np.log(p)
    # KL(p_i || p_j) = sum_c p_ic log p_ic - sum_c p_ic log p_jc, for all pairs at once: (N, N)
    kl = (p * logp).sum(axis=1, keepdims=True) - p @ logp.T
    return float(np.exp(kl.mean()))


def am_score(probs: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> float:
    """``KL(reference || mean p(y|x)) + mean_x H(p(y|x))``; ``reference`` (C,) is the real class distribution."""
    p = _probs(probs)
    ref = np.clip(np.asarray(reference, dtype=np.float64).reshape(-1), EPS, 1.0)
    if ref.shape[0] != p.shape[1]:
        raise ValueError(f"reference has {ref.shape[0]} classes but the probabilities have {p.shape[1]}")
    marginal = p.mean(axis=0)
    kl = float((ref * (np.log(ref) - np.log(marginal))).sum())
    entropy = float(-(p * np.log(p)).sum(axis=1).mean())
    return kl + entropy


def gaussian_fit(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of ``features`` (N, D), float64."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussian fits of (N, D) and (M, D)."""
    mu_a, cov_a = gaussian_fit(features_a)
    mu_b, cov_b = gaussian_fit(features_b)
    with warnings.catch_warnings(record=True) as caught:  # the matrix alone (SciPy 1.18 removed `disp`)
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
    if singular or not np.isfinite(covmean).all():  # singular product: regularise both covariances slightly
        offset = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(distance, 0.0)
