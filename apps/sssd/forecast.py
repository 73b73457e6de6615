"""``ssm sssd forecast``: the next ``--horizon`` steps of series, imputed after the last window of each (or, with
``--holdout``, its last H steps hidden, forecast and scored against the hidden values).

The point answer (``--point``) is the one ``ssm sssd impute`` writes, with what forecasting has to start from:

- ``shrunk`` (default): ``last + lambda (mean - last)``, where ``last`` is each channel's last observed value
  (what :func:`apps.sssd.point.interpolation` gives past the end: the nearest observation) and ``mean`` the
  samples' mean; ``lambda`` is the James-Stein factor of the samples' Monte Carlo noise capped by a blend in
  [0, 1] fitted on the H observed steps just before the horizon, forecast from what precedes them like the
  horizon itself (one more sampling pass; ``--no-calibrate``: blend 1).  There is no interpolation to start
  from past the end; the last value is the forecast a model that knows nothing should fall back to (a random
  walk's best guess), and the fitted blend moves toward the samples' mean exactly as far as the model earned on
  held-out steps of the same series: a well trained model keeps its mean (blend ~1), an untrained one the last
  value (blend ~0).  The samples' mean, not their median, is what is shrunk: for squared error the mean of S
  samples has the lower Monte Carlo noise (pi / 2 times less variance for Gaussian samples).
- ``mean`` and ``median``: the samples' mean and median, unchanged (``median``: the point answer before).

With ``--holdout`` the scores of all three are printed, the chosen one first.

Only the last window of each series (the model's training length) is sampled: gaps in the history before it
stay missing in the output (``ssm sssd impute`` fills those).

Time stamps (``--time-column``, by default the training's ``data.time_column``): the future rows' stamps are
unknown; they are taken one nominal step apart (the training series' median step, or the input's own for a
model trained without stamps) after the last row.  With ``--holdout`` the hidden rows' own stamps are used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from apps.common.errors import UserError
from apps.sssd.data import median_step
from apps.sssd.evaluate import MetricSums
from apps.sssd.infer import (
    _load_input,
    _parser,
    check_options,
    load_model,
    point_of,
    sample_series,
    series_positions,
    write_outputs,
)
from apps.sssd.module import SSSDModule
from apps.sssd.point import POINTS, held_out_blend


def future_times(times: np.ndarray, horizon: int, unit: float) -> np.ndarray:
    """``times`` (N, T) extended by ``horizon`` stamps ``unit`` apart after each series' last one: (N, T + horizon)."""
    steps = times[:, -1:] + unit * np.arange(1, horizon + 1, dtype=np.float64)[None]
    return np.concatenate([times, steps], axis=1)


def forecast_blend(model: SSSDModule, before: np.ndarray, horizon: int, n_samples: int, sampler: str,
                   steps: int | None, seed: int, times: np.ndarray | None = None) -> float:
    """The blend of the ``shrunk`` forecast, fitted on the last ``horizon`` observed steps of ``before`` (N, T', C),
    the series up to the horizon: they are hidden and forecast from the window that precedes them.  1.0 when
    ``before`` is too short to hold ``horizon`` steps out of it or they hold no observed value."""
    W = int(model.train_length) or before.shape[1]
    if before.shape[1] <= horizon:
        return 1.0
    context = before[:, -W:]
    observed = ~np.isnan(context)
    held = np.zeros_like(observed)
    held[:, -horizon:] = observed[:, -horizon:]
    cond = observed & ~held
    if not held.any() or not cond.any(axis=(1, 2)).all():
        return 1.0
    hidden = np.where(cond, context, np.nan).astype(np.float32)
    ctx_times = None if times is None else times[:, -context.shape[1]:]
    samples, _ = sample_series(model, hidden, cond, n_samples, sampler, steps, seed + 31, ctx_times)
    return held_out_blend(torch.from_numpy(samples), torch.from_numpy(context), torch.from_numpy(cond),
                          torch.from_numpy(held), model.data_mean, model.data_std, series_positions(model, ctx_times))


def forecast(argv: list[str]) -> None:
    """``ssm sssd forecast --ckpt CKPT --input ... --out forecast.csv --horizon H [--holdout] [--point shrunk|mean|median]
    [--no-calibrate] [--time-column NAME|none]``."""
    p = _parser("ssm sssd forecast", "Forecast the next H steps of series (or their last H with --holdout).",
                "the point forecast written: shrunk (default: the samples' mean, shrunk toward the last observed "
                "value as far as held-out steps say), mean or median of the samples",
                "shrunk: skip fitting its blend on the H steps before the horizon (one sampling pass less)")
    p.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    p.add_argument("--holdout", action="store_true", help="hide and forecast the last H steps, and score them")
    a = p.parse_args(argv)
    check_options(a)
    model = load_model(a.ckpt)
    data, values, times = _load_input(a, model)
    N, T, C = values.shape
    W = int(model.train_length) or T
    if not 1 <= a.horizon < T:
        raise UserError(f"--horizon {a.horizon} must be in [1, {T}): the series in {a.input} has {T} steps")
    if a.horizon >= W:
        raise UserError(f"--horizon {a.horizon} must be shorter than the model's window of {W} steps")
    if a.holdout:
        truth, series = values, values.copy()
        series[:, T - a.horizon:] = np.nan
    else:
        truth, series = None, np.concatenate([values, np.full((N, a.horizon, C), np.nan, np.float32)], axis=1)
        if data.index is not None:
            data.index = [*data.index, *[f"+{k}" for k in range(1, a.horizon + 1)]]
        if times is not None:  # the future's stamps: one nominal step apart
            times = future_times(times, a.horizon, float(model.time_unit) or median_step(times))
    sampler = a.sampler or model.hparams.sampler
    blend = 1.0
    if a.point == "shrunk" and not a.no_calibrate:
        blend = forecast_blend(model, series[:, :-a.horizon], a.horizon, a.samples, sampler, a.steps, a.seed,
                               None if times is None else times[:, :-a.horizon])
        print(f"point forecast: blend {blend:.3g} from the last observed value toward the samples' mean, fitted on "
              f"the {a.horizon} steps before the horizon")
    context = series[:, -W:]  # only the last window matters for the future
    observed = ~np.isnan(context)
    samples, rate = sample_series(model, context, observed, a.samples, sampler, a.steps, a.seed,
                                  None if times is None else times[:, -context.shape[1]:])
    full = np.repeat(series[None], a.samples, axis=0)
    full[:, :, -W:] = samples
    print(f"{rate:.1f} samples/s (series x samples per second)")
    known = ~np.isnan(series)
    sampled = ~known
    sampled[:, :-W] = False  # history gaps before the last window are not sampled (ssm sssd impute fills them)
    points = {kind: point_of(full, series, known, model, kind, blend, times, sampled)
              for kind in (a.point, *POINTS) if kind}
    if truth is not None:
        hidden = np.zeros(truth.shape, dtype=bool)
        hidden[:, T - a.horizon:] = True
        hidden &= ~np.isnan(truth)
        t_samples, t_truth, t_hidden = torch.from_numpy(full), torch.from_numpy(truth), torch.from_numpy(hidden)
        for kind, point in points.items():
            sums = MetricSums()
            sums.add(torch.from_numpy(point), t_truth, t_hidden, t_samples)
            r = sums.result()
            if kind == a.point:
                print(f"held-out last {a.horizon} steps: MSE {r['MSE']:.4g} MAE {r['MAE']:.4g} CRPS {r['CRPS']:.4g} "
                      f"NCRPS {r['NCRPS']:.4g} CRPS-sum {r['CRPS-sum']:.4g} (point: {kind}; NCRPS and CRPS-sum as CSDI)")
            else:
                print(f"  point {kind}: MSE {r['MSE']:.4g} MAE {r['MAE']:.4g}")
    for path in write_outputs(Path(a.out), data, series, known, full, a.max_plots,
                              f"forecast of {a.horizon} steps: {a.input}", points[a.point]):
        print(f"wrote {path}")
