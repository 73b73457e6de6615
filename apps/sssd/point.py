"""The point estimate of an imputation: what ``ssm sssd impute`` writes as the answer, and what ``ssm sssd test``
scores as SSSD's MSE / MAE.

The samples' median is the paper's point estimate.  After short training the samples' centre barely
moves away from where the sampler starts (linear interpolation, with ``model.interp_residual``) while
their spread is that of the residual: the median of S samples then adds Monte Carlo noise of variance
about pi/2 sigma^2 / S to the interpolation (with 10 samples, +16% of its MSE where sigma^2 is the
interpolation's error).  The estimates here shrink the samples' offset from the linear interpolation of
the observed entries toward zero:

- ``median`` and ``mean``: the samples' median and mean, unchanged;
- ``shrunk`` (the default): ``interp + lambda (mean - interp)`` with, for each series, the positive-part
  James-Stein factor ``lambda = max(0, 1 - sum v / sum d^2)`` over its entries to impute, where
  ``d = (mean - interp) / std`` and ``v = var / (S std^2)`` is the Monte Carlo variance of ``d`` (sample
  variance over S, standardised per channel).  An offset no larger than the samples' own noise is
  dropped (the interpolation is kept); one well above it is kept almost whole.  The factor, and an
  optional cap ``blend`` on it (chosen on held-out entries of the training series by
  :func:`fit_blend`), make the estimate fall back to the interpolation where the model knows no better.
"""

from __future__ import annotations

import torch
from torch import Tensor

from apps.sssd.evaluate import linear_fill, time_positions

POINTS = ("shrunk", "mean", "median")


def interpolation(raw: Tensor, cond_mask: Tensor, fallback: Tensor, times: Tensor | None = None) -> Tensor:
    """Linear interpolation of the conditioning entries of ``raw`` (B, L, C; NaN allowed elsewhere), data units;
    ``fallback`` (C,) where a channel has no observed entry; ``times`` (B, L): the rows' positions in time, to
    interpolate in time (irregular time stamps; :func:`apps.sssd.evaluate.linear_fill`), None: in row index."""
    return linear_fill(torch.where(cond_mask, torch.nan_to_num(raw), 0.0), cond_mask, fallback, times=times)


def shrink_factor(samples: Tensor, interp: Tensor, where: Tensor, scale: Tensor | None = None) -> Tensor:
    """Per series, the positive-part James-Stein factor (B,) of the samples' mean offset from ``interp``.

    Args:
        samples: (S, B, L, C) imputations; interp: (B, L, C) the interpolation; where: (B, L, C) bool, the
            entries to impute; scale: (C,) per-channel scale (the data's std), so that every channel counts alike.
    """
    S = samples.shape[0]
    if S < 2:
        return torch.zeros(samples.shape[1], dtype=samples.dtype, device=samples.device)
    scale = torch.ones(samples.shape[-1], dtype=samples.dtype, device=samples.device) if scale is None else scale.to(samples.dtype)
    d = (samples.mean(0) - interp) / scale
    v = samples.var(0) / (S * scale**2)  # Monte Carlo variance of the mean, standardised
    # selected, not multiplied by a 0/1 weight: entries outside ``where`` may be NaN (a forecast's history gaps)
    noise = torch.where(where, v, 0.0).sum((1, 2))
    signal = torch.where(where, d**2, 0.0).sum((1, 2))
    return (1 - noise / signal.clamp_min(1e-30)).clamp(0.0, 1.0)


def point_estimate(samples: Tensor, interp: Tensor, where: Tensor, kind: str = "shrunk", scale: Tensor | None = None,
                   blend: float = 1.0) -> Tensor:
    """The point estimate (B, L, C) of ``samples`` (S, B, L, C); observed entries are the samples' own (the data).

    ``kind``: ``shrunk`` (default), ``mean`` or ``median`` (see the module's docstring); ``blend`` in [0, 1]
    caps the shrinkage factor of ``shrunk`` (1: none).
    """
    if kind == "median":
        est = samples.median(0).values
    elif kind == "mean":
        est = samples.mean(0)
    elif kind == "shrunk":
        lam = (blend * shrink_factor(samples, interp, where, scale)).reshape(-1, 1, 1)
        est = interp + lam * (samples.mean(0) - interp)
    else:
        raise ValueError(f"unknown point estimate {kind!r}; choose one of {', '.join(POINTS)}")
    return torch.where(where, est, samples[0])


def fit_blend(offset: Tensor, error: Tensor, where: Tensor) -> float:
    """The least-squares factor in [0, 1] of ``offset`` (estimate - interp) to the interpolation's ``error``
    (target - interp) over the entries of ``where``: sum d e / sum d^2, clipped."""
    d = torch.where(where, offset.double(), 0.0)
    e = torch.where(where, torch.nan_to_num(error.double()), 0.0)
    denom = float((d**2).sum())
    return 0.0 if denom <= 0 else min(max(float((d * e).sum()) / denom, 0.0), 1.0)


def held_out_blend(samples: Tensor, raw: Tensor, cond: Tensor, held: Tensor, mean: Tensor, scale: Tensor,
                   times: Tensor | None = None) -> float:
    """:func:`fit_blend` of the ``shrunk`` estimate on the held-out entries ``held`` of ``raw`` (B, L, C), which
    ``samples`` (S, B, L, C) imputed from the entries of ``cond``; ``mean`` / ``scale``: the data's (C,);
    ``times`` (B, L): the rows' positions in time (irregular stamps), None: evenly spaced rows."""
    interp = interpolation(raw, cond, mean, times)
    shrunk = point_estimate(samples, interp, held, "shrunk", scale)
    return fit_blend(shrunk - interp, raw - interp, held)


#: the most validation series that :func:`calibrate_blend` imputes
BLEND_SERIES = 256


@torch.no_grad()
def calibrate_blend(model, raw: Tensor, n_samples: int, seed: int = 0, max_series: int = BLEND_SERIES,
                    kind: str | None = None, ratio=None, times: Tensor | None = None, on_step=None) -> float:
    """The blend of the ``shrunk`` estimate fitted on series ``raw`` (N, L, C) of the validation split: masks of
    ``kind`` and ``ratio`` (default: the model's training masks; give the ones the gaps follow) hide some of
    their entries, ``n_samples`` imputations of them are drawn, and the blend is :func:`fit_blend` of the
    shrunk offset to the true one (at most ``max_series`` series, evenly spaced).

    ``model`` is an :class:`apps.sssd.module.SSSDModule`; ``times`` (N, L): the series' time stamps (data.time_column),
    if any; ``on_step``: called after every denoising step (progress bars); returns 1.0 when nothing can be
    held out.  It costs one sampling pass over the series, as many as a test of that many series."""
    from apps.sssd.masks import batch_masks

    if len(raw) == 0:
        return 1.0
    keep = torch.linspace(0, len(raw) - 1, min(len(raw), max_series)).round().long().unique()
    raw = raw[keep]
    dt = None if times is None else model.time_steps(times[keep])
    h = model.hparams
    N, L, C = raw.shape
    available = ~torch.isnan(raw)
    cond = batch_masks(kind or h.mask, N, L, C, h.mask_ratio if ratio is None else ratio, h.mask_length,
                       torch.Generator().manual_seed(seed))
    cond = cond.to(raw.device) & available
    held = available & ~cond
    if not held.any():
        return 1.0
    samples = model.sample(raw, cond, n_samples, generator=torch.Generator().manual_seed(seed + 1), dt=dt,
                           on_step=on_step)
    return held_out_blend(samples, raw, cond, held, model.data_mean, model.data_std, time_positions(dt))
