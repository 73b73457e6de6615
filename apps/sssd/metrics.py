"""The probabilistic scores of the SSSD and CSDI papers' tables, computed from samples.

CSDI (Tashiro et al. 2021, Sec. 6.1 and App. E) and SSSD (Lopez Alcaraz & Strodthoff 2022) report CRPS
not as the exact sample CRPS but through quantiles: the CRPS of a distribution F at y is

    CRPS(F, y) = integral_0^1 2 rho_q(y - F^-1(q)) dq,   rho_q(u) = u (q - 1{u < 0})   (pinball loss),

approximated by the 19 levels q = 0.05, 0.10, ..., 0.95, with F^-1(q) the q-quantile of the samples
(linear interpolation between order statistics), and normalised by the targets' size:

    normalised CRPS = sum_entries (1/19) sum_q 2 rho_q(y - F^-1(q)) / sum_entries |y|,

over the entries to impute or forecast, in data units.  CRPS-sum is the same score of the sum over
channels at each time step: samples and target are summed over the target entries of a step (steps
with no target entry are left out), then scored as above with sum_steps |sum_channels y| as the
normaliser.  A point estimate p (every quantile equal to p) scores sum |y - p| / sum |y| (the MRE).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: the 19 quantile levels of CSDI's CRPS: 0.05, 0.10, ..., 0.95
QUANTILE_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def quantile_loss(pred: Tensor, target: Tensor, q: float) -> Tensor:
    """Twice the pinball loss of the q-quantile ``pred`` at ``target``, elementwise: 2 |(y - p) (1{y <= p} - q)|."""
    return 2 * ((target - pred) * ((target <= pred).to(pred.dtype) - q)).abs()


def quantile_crps_terms(samples: Tensor, target: Tensor, levels: tuple[float, ...] = QUANTILE_LEVELS) -> Tensor:
    """Per entry, the mean over ``levels`` of :func:`quantile_loss` of the samples' quantiles: (S, ...), (...) -> (...).

    Sum it over the target entries and divide by their sum of |y| for the normalised CRPS."""
    q = torch.tensor(levels, dtype=samples.dtype, device=samples.device)
    quantiles = torch.quantile(samples, q, dim=0)  # (Q, ...), linear interpolation between order statistics
    return sum(quantile_loss(quantiles[k], target, float(levels[k])) for k in range(len(levels))) / len(levels)


def channel_sums(samples: Tensor, target: Tensor, where: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The sums over channels of the target entries: samples (S, ..., L, C), target and ``where`` (..., L, C)
    -> (S, ..., L), (..., L), and (..., L) True where a step has at least one target entry."""
    w = where.to(samples.dtype)
    summed_samples = (torch.nan_to_num(samples) * w).sum(-1)
    summed_target = (torch.nan_to_num(target) * w).sum(-1)
    return summed_samples, summed_target, where.any(-1)


def normalised_crps(samples: Tensor, target: Tensor, where: Tensor) -> float:
    """CSDI's normalised quantile CRPS of ``samples`` (S, ...) at ``target`` (...) over the entries of ``where``."""
    terms = quantile_crps_terms(samples.double(), torch.nan_to_num(target.double()))
    denom = float(torch.where(where, target.double(), 0.0).abs().sum())
    return float(torch.where(where, terms, 0.0).sum()) / max(denom, 1e-12)


def crps_sum(samples: Tensor, target: Tensor, where: Tensor) -> float:
    """CSDI's CRPS-sum: the normalised quantile CRPS of the sums over channels (last axis) of the target entries."""
    s, y, steps = channel_sums(samples.double(), target.double(), where)
    return normalised_crps(s, y, steps)
