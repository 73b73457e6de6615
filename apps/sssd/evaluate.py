"""Imputation metrics and baselines for ``ssm sssd test`` (SSSD, Lopez Alcaraz & Strodthoff 2022, Sec. 4).

Metrics are computed on the held-out entries (hidden by the mask, present in the data), in the
data's own units: MAE, MSE, RMSE of the median of the samples, MRE = sum |error| / sum |target|
(as CSDI), and CRPS estimated from the samples,

    CRPS(F, y) = E|X - y| - 1/2 E|X - X'|,   X, X' ~ F independent,

with the unbiased pairwise term from sorted samples.  Beside it, the scores of the CSDI and SSSD papers'
tables (:mod:`apps.sssd.metrics`): CSDI's normalised quantile CRPS (``NCRPS``) and its CRPS-sum over
channels (``CRPS-sum``).  The baselines are the per-channel mean of
each series' observed entries, last observation carried forward, and linear interpolation; their
CRPS is their MAE (a point forecast's CRPS is its absolute error), their NCRPS their MRE.  With time stamps
(``data.time_column``, irregular steps) the linear interpolation is in time, between the observations' stamps
(``times`` of :func:`linear_fill`); without them, in row index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from apps.common.report import markdown_table, write_csv, write_markdown
from apps.common.runs import next_free
from apps.sssd.metrics import channel_sums, quantile_crps_terms

METRICS = ("MAE", "RMSE", "MSE", "MRE", "CRPS", "NCRPS", "CRPS-sum")
BASELINES = ("mean", "locf", "linear")


def crps_from_samples(samples: Tensor, target: Tensor) -> Tensor:
    """Elementwise CRPS of the empirical distribution of ``samples`` (S, ...) at ``target`` (...)."""
    S = samples.shape[0]
    abs_err = (samples - target.unsqueeze(0)).abs().mean(0)
    if S < 2:
        return abs_err
    ordered = samples.sort(dim=0).values
    rank = torch.arange(1, S + 1, dtype=samples.dtype, device=samples.device).reshape(S, *[1] * target.dim())
    pair_sum = (ordered * (2 * rank - S - 1)).sum(0)  # sum over i<j of |x_i - x_j|
    return abs_err - pair_sum / (S * (S - 1))


def mean_fill(x: Tensor, observed: Tensor, fallback: Tensor, times: Tensor | None = None) -> Tensor:
    """Each channel's missing entries set to the mean of that series' observed entries: (B, L, C) -> (B, L, C).

    ``fallback`` (C,) is used where a series channel has no observed entry; ``times`` is ignored (the same
    signature as :func:`linear_fill`)."""
    w = observed.to(x.dtype)
    count = w.sum(1, keepdim=True)
    mean = (torch.where(observed, x, 0.0).sum(1, keepdim=True) / count.clamp_min(1.0))
    mean = torch.where(count > 0, mean, fallback.to(x).reshape(1, 1, -1))
    return torch.where(observed, x, mean.expand_as(x))


def _last_index(observed: Tensor) -> Tensor:
    """For each (B, L, C) position, the index of the last observed step at or before it (-1 if none)."""
    L = observed.shape[1]
    steps = torch.arange(L, device=observed.device).reshape(1, L, 1)
    return torch.where(observed, steps, torch.full_like(steps, -1)).cummax(dim=1).values


def _next_index(observed: Tensor) -> Tensor:
    """The index of the next observed step at or after each position (L if none)."""
    L = observed.shape[1]
    return (L - 1) - _last_index(observed.flip(1)).flip(1)


def locf_fill(x: Tensor, observed: Tensor, fallback: Tensor, times: Tensor | None = None) -> Tensor:
    """Last observation carried forward (the first observation carried backward before it): (B, L, C).

    ``times`` is ignored (the same signature as :func:`linear_fill`)."""
    last, nxt = _last_index(observed), _next_index(observed)
    L = x.shape[1]
    source = torch.where(last >= 0, last, nxt).clamp(0, L - 1)
    filled = x.gather(1, source)
    filled = torch.where((last < 0) & (nxt >= L), fallback.to(x).reshape(1, 1, -1).expand_as(x), filled)
    return torch.where(observed, x, filled)


def linear_fill(x: Tensor, observed: Tensor, fallback: Tensor, times: Tensor | None = None) -> Tensor:
    """Linear interpolation between the neighbouring observations (nearest one at the ends): (B, L, C).

    ``times`` (B, L) or (L,): the rows' time stamps (any origin and unit, increasing), to interpolate in time
    between the observations' stamps; None (default): in row index, as if the rows were evenly spaced.
    ``fallback`` (C,) where a series channel has no observed entry."""
    last, nxt = _last_index(observed), _next_index(observed)
    B, L, C = x.shape
    lo, hi = last.clamp(0, L - 1), nxt.clamp(0, L - 1)
    x_lo, x_hi = x.gather(1, lo), x.gather(1, hi)
    if times is None:
        steps = torch.arange(L, device=x.device).reshape(1, L, 1).to(x.dtype)
        span = (hi - lo).to(x.dtype).clamp_min(1.0)
        interp = x_lo + (x_hi - x_lo) * (steps - lo.to(x.dtype)) / span
    else:
        t = times.to(device=x.device, dtype=torch.float64).reshape(-1, L, 1).expand(B, L, C)
        t_lo, t_hi = t.gather(1, lo), t.gather(1, hi)
        frac = torch.where(hi > lo, (t - t_lo) / torch.where(hi > lo, t_hi - t_lo, 1.0), 0.0)
        interp = x_lo + (x_hi - x_lo) * frac.to(x.dtype)
    interp = torch.where(last < 0, x_hi, interp)
    interp = torch.where(nxt >= L, x_lo, interp)
    interp = torch.where((last < 0) & (nxt >= L), fallback.to(x).reshape(1, 1, -1).expand_as(x), interp)
    return torch.where(observed, x, interp)


BASELINE_FILLS = {"mean": mean_fill, "locf": locf_fill, "linear": linear_fill}


class MetricSums:
    """Running sums over evaluated entries, so metrics can be accumulated batch by batch.

    ``abs``, ``sq``, ``target_abs``, ``crps``, ``count``: sums of |error|, error^2, |target| and sample CRPS
    over the entries, and their count; ``ql``: the sum of CSDI's quantile-loss terms
    (:func:`apps.sssd.metrics.quantile_crps_terms`); ``ql_sum`` and ``sum_abs``: the same terms and |target|
    of the sums over channels at each step (CRPS-sum)."""

    #: the running sums, in the order other code stores them (``apps.sssd.module``'s test rows)
    FIELDS = ("abs", "sq", "target_abs", "crps", "count", "ql", "ql_sum", "sum_abs")

    def __init__(self) -> None:
        self.abs = self.sq = self.target_abs = self.crps = 0.0
        self.ql = self.ql_sum = self.sum_abs = 0.0
        self.count = 0

    def add(self, point: Tensor, target: Tensor, where: Tensor, samples: Tensor | None = None) -> None:
        """Add the entries of ``where`` (bool, same shape as ``target``, channels last); ``samples`` (S, ...)
        for the CRPS scores (a point estimate is scored as ``samples = point[None]``)."""
        err = torch.where(where, point.double() - target.double(), 0.0)
        tgt = torch.where(where, target.double(), 0.0)
        self.abs += float(err.abs().sum())
        self.sq += float((err**2).sum())
        self.target_abs += float(tgt.abs().sum())
        self.count += int(where.sum())
        clean = torch.nan_to_num(target.double())
        draws = point.double().unsqueeze(0) if samples is None else samples.double()
        if samples is None:
            self.crps += float(err.abs().sum())
            self.ql += float(err.abs().sum())  # every quantile is the point: the mean pinball term is |error|
        else:
            crps = crps_from_samples(draws, clean)
            self.crps += float(torch.where(where, crps, 0.0).sum())
            self.ql += float(torch.where(where, quantile_crps_terms(draws, clean), 0.0).sum())
        summed, summed_target, steps = channel_sums(draws, clean, where)
        terms = quantile_crps_terms(summed, summed_target)
        self.ql_sum += float(torch.where(steps, terms, 0.0).sum())
        self.sum_abs += float(torch.where(steps, summed_target, 0.0).abs().sum())

    def result(self) -> dict[str, float]:
        n = max(self.count, 1)
        mse = self.sq / n
        return {"MAE": self.abs / n, "RMSE": mse**0.5, "MSE": mse,
                "MRE": self.abs / max(self.target_abs, 1e-12), "CRPS": self.crps / n,
                "NCRPS": self.ql / max(self.target_abs, 1e-12), "CRPS-sum": self.ql_sum / max(self.sum_abs, 1e-12),
                "entries": self.count}


def add_baselines(sums: dict[str, MetricSums], x: Tensor, observed: Tensor, target_where: Tensor,
                  fallback: Tensor, times: Tensor | None = None) -> None:
    """Fill ``x`` (B, L, C; NaN-free where observed) with every baseline and add it to ``sums[name]``;
    ``times`` (B, L): the rows' time stamps, for ``linear`` to interpolate in time (None: in row index)."""
    x_obs = torch.where(observed, torch.nan_to_num(x), 0.0)
    for name, fill in BASELINE_FILLS.items():
        sums.setdefault(name, MetricSums()).add(fill(x_obs, observed, fallback, times=times), x, target_where)


def time_positions(dt: Tensor | None) -> Tensor | None:
    """The rows' positions in time (B, L) float64 from their time steps ``dt`` (B, L; the first row's is any
    value): the running sum, which differs from the time stamps only by an origin and a unit, all that
    :func:`linear_fill` needs.  None for None (evenly spaced rows: interpolate in row index)."""
    return None if dt is None else dt.double().cumsum(-1)


def metrics_rows(results: dict[tuple[str, float], dict[str, dict[str, float]]]) -> tuple[list[str], list[list]]:
    """One row per (mask, ratio): SSSD's metrics then each baseline's.  ``results[(mask, ratio)][method]``."""
    methods = list(next(iter(results.values())).keys()) if results else []
    header = ["mask", "ratio", "entries"] + [f"{m} {k}" for m in methods for k in METRICS]
    rows = []
    for (mask, ratio), by_method in results.items():
        first = next(iter(by_method.values()))
        rows.append([mask, f"{ratio:g}", first["entries"]]
                    + [f"{by_method[m][k]:.4g}" for m in methods for k in METRICS])
    return header, rows


def write_metrics(results: dict[tuple[str, float], dict[str, dict[str, float]]], out_dir: str | Path,
                  stem: str = "test_metrics", title: str = "SSSD imputation") -> list[Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` (one row per mask ratio) under ``out_dir``; return the paths.

    An earlier test's tables are kept: the next free ``<stem>-vN`` (N >= 2) is used instead."""
    header, rows = metrics_rows(results)
    out_dir = Path(out_dir)
    stem = next_free(out_dir / stem, lambda p: any(p.with_name(p.name + ext).exists() for ext in (".md", ".csv"))).name
    lines = [f"# {title}", "", "Metrics on held-out entries in data units; SSSD's point estimate: the samples' mean shrunk toward "
             "linear interpolation (apps.sssd.point), SSSD median: the samples' median; NCRPS and CRPS-sum as CSDI.", ""]
    lines += markdown_table(header, rows, left=2)
    return [write_markdown(out_dir / f"{stem}.md", lines), write_csv(out_dir / f"{stem}.csv", header, rows)]


def summary_lines(results: dict[tuple[str, float], dict[str, dict[str, float]]],
                  methods: Sequence[str] | None = None) -> list[str]:
    """A compact MSE / MAE / CRPS table for the terminal."""
    lines = []
    for (mask, ratio), by_method in results.items():
        parts = [f"{m}: MSE {v['MSE']:.4g} MAE {v['MAE']:.4g} CRPS {v['CRPS']:.4g} NCRPS {v['NCRPS']:.4g} "
                 f"CRPS-sum {v['CRPS-sum']:.4g}"
                 for m, v in by_method.items() if methods is None or m in methods]
        lines.append(f"{mask} {ratio:g}  " + " | ".join(parts))
    return lines

