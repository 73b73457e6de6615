"""Shared references for the sssd tests, built from the formulas (never from apps.sssd code)."""

import math

import torch


def gaussian_crps(mu: torch.Tensor, sigma: float, y: torch.Tensor) -> torch.Tensor:
    """Closed form (Gneiting & Raftery 2007): sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]."""
    z = (y - mu) / sigma
    phi = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return sigma * (z * (2 * Phi - 1) + 2 * phi - 1 / math.sqrt(math.pi))
