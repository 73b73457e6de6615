"""``ssm sssd impute`` and ``ssm sssd forecast``: probabilistic imputation / forecasting with a checkpoint.

Each series (a CSV file, or every row of an ``.npy`` (N, L, C)) is cut into windows of the training
length; each window is denoised ``--samples`` times; the median and the 5% / 95% quantiles of the
samples are written (observed entries unchanged), with a PNG per series showing the observed points,
the imputed median and the 90% band.  Forecasting imputes ``--horizon`` steps appended after the
series (or, with ``--holdout``, its last H steps, and scores them against the hidden values).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from apps.common.checkpoint import load_module
from apps.common.errors import UserError
from apps.common.io import atomic_write, check_writable
from apps.common.report import save_figure, write_csv
from apps.sssd.data import SeriesFile, read_series
from apps.sssd.diffusion import SAMPLERS
from apps.sssd.evaluate import MetricSums
from apps.sssd.module import SSSDModule, trained_unconditionally

QUANTILES = (0.05, 0.95)


def load_model(path: str | Path) -> SSSDModule:
    """The SSSD model of a fit checkpoint, in eval mode on the CPU."""
    if not Path(path).exists():  # a .ckpt file or a save_pretrained folder
        raise UserError(f"checkpoint not found: {path} (train one with `ssm sssd fit -c recipes/sssd/<recipe>.yaml`)")
    module, _ = load_module(path, SSSDModule, check=lambda blob: None if "data_mean" in blob["state_dict"]
                            else "no data statistics in its state", kind="an sssd")
    return module


def check_series(values: np.ndarray, channels: int, source: str, unconditional: bool = False) -> None:
    """Reject inputs the model cannot use: the wrong channel count or a series with no value at all (unless the
    model was trained with nothing observed, ``unconditional``)."""
    if values.shape[-1] != channels:
        raise UserError(f"{source} has {values.shape[-1]} channels but the checkpoint was trained on {channels}; "
                        f"pass a file with {channels} channels (time x channels for CSV)")
    empty = np.isnan(values).all(axis=(1, 2))
    if empty.any() and not unconditional:
        which = np.where(empty)[0][:5].tolist()
        raise UserError(f"{source}: series {which} are entirely NaN (nothing observed to condition on); remove them, "
                        "or use a model trained with --model.mask_ratio 1.0 (unconditional, see ssm sssd generate)")


def window_starts(T: int, W: int) -> list[int]:
    """Starts of windows of length W covering T steps (the last one flush with the end)."""
    if T <= W:
        return [0]
    starts = list(range(0, T - W + 1, W))
    return starts if starts[-1] == T - W else [*starts, T - W]


@torch.no_grad()
def sample_series(model: SSSDModule, series: np.ndarray, cond_mask: np.ndarray, n_samples: int, sampler: str,
                  steps: int | None, seed: int) -> tuple[np.ndarray, float]:
    """Samples of every series: (N, T, C) values (NaN = missing), (N, T, C) observed mask -> (S, N, T, C), samples/s."""
    N, T, C = series.shape
    W = int(model.train_length) or T
    pieces = [(i, s) for i in range(N) for s in window_starts(T, W)]
    width = min(W, T)
    x = torch.from_numpy(np.stack([series[i, s:s + width] for i, s in pieces])).float()
    m = torch.from_numpy(np.stack([cond_mask[i, s:s + width] for i, s in pieces]))
    sched_steps = steps or (model.hparams.diffusion_steps if sampler == "ddpm" else 50)
    batch = model.hparams.sample_batch_size
    total = -(-len(pieces) * n_samples // batch) * sched_steps
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task(f"{sampler}-{sched_steps}: {len(pieces)} windows x {n_samples} samples", total=total)
        samples = model.sample(x, m, n_samples, sampler, steps, generator, on_step=lambda: progress.advance(task))
    rate = len(pieces) * n_samples / (time.perf_counter() - start)
    out = np.repeat(series[None].copy(), n_samples, axis=0)
    for k, (i, s) in enumerate(pieces):  # later windows overwrite the overlap
        out[:, i, s:s + width] = samples[:, k].numpy()
    return out, rate


def _plot(path: Path, values: np.ndarray, observed: np.ndarray, median: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          names: list[str], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T, C = values.shape
    fig, axes = plt.subplots(C, 1, figsize=(9, 1.6 * C + 0.8), sharex=True, squeeze=False)
    steps = np.arange(T)
    for c, ax in enumerate(axes[:, 0]):
        ax.fill_between(steps, lo[:, c], hi[:, c], color="tab:orange", alpha=0.3, lw=0, label="90% band")
        ax.plot(steps, median[:, c], color="tab:orange", lw=1, label="imputed median")
        ax.plot(steps[observed[:, c]], values[observed[:, c], c], ".", color="tab:blue", ms=3, label="observed")
        ax.set_ylabel(names[c], fontsize=8)
    axes[0, 0].legend(loc="upper left", fontsize=7, ncol=3)
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    return save_figure(fig, path)


def write_outputs(out: Path, data: SeriesFile, values: np.ndarray, observed: np.ndarray, samples: np.ndarray,
                  max_plots: int, title: str) -> list[Path]:
    """Median + quantiles to ``out`` (.csv: one column per channel and quantile; .npy: (N, T, C, 3) =
    median, q05, q95) and a PNG per series under ``<out stem>_plots/``."""
    median = np.where(observed, values, np.median(samples, axis=0))
    lo, hi = (np.where(observed, values, np.quantile(samples, q, axis=0)) for q in QUANTILES)
    paths = []
    if out.suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, np.stack([median, lo, hi], axis=-1).astype(np.float32))
        paths.append(atomic_write(out, lambda f: f.write(buffer.getvalue())))
    elif out.suffix == ".csv":
        N, T, C = values.shape
        index_name = data.index_name or "step"
        header = (["series"] if N > 1 else []) + [index_name]
        header += [f"{name}{suffix}" for name in data.names for suffix in ("", "_q05", "_q95")]
        rows = []
        for i in range(N):
            for t in range(T):
                label = data.index[t] if data.index is not None and t < len(data.index) else str(t)
                cells = [f"{v:.6g}" for c in range(C) for v in (median[i, t, c], lo[i, t, c], hi[i, t, c])]
                rows.append(([str(i)] if N > 1 else []) + [label] + cells)
        paths.append(write_csv(out, header, rows))
    else:
        raise UserError(f"--out {out}: use a .csv or .npy file name")
    plot_dir = out.with_name(f"{out.stem}_plots")
    for i in range(min(len(values), max_plots)):
        paths.append(_plot(plot_dir / f"series_{i:04d}.png", values[i], observed[i], median[i], lo[i], hi[i],
                           data.names, f"{title} - series {i}"))
    return paths


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--ckpt", required=True, help="checkpoint of `ssm sssd fit`")
    p.add_argument("--input", required=True, help=".csv (time x channels) or .npy (N, L, C); NaN/empty = missing")
    p.add_argument("--out", required=True, help="output .csv or .npy (median, 5%% and 95%% quantiles)")
    p.add_argument("--samples", type=int, default=100, help="samples per series (default 100)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None, help="ddpm, ddim or dpm (default: the recipe's)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: all 200 for ddpm, 50 otherwise)")
    p.add_argument("--max-plots", type=int, default=20, help="PNG plots for the first N series (default 20)")
    p.add_argument("--seed", type=int, default=0)
    return p


def check_options(a: argparse.Namespace) -> None:
    """The checks that need no model: counts, and an --out that can be written and is not the input."""
    if a.samples < 1 or (a.steps is not None and a.steps < 1) or a.max_plots < 0:
        raise UserError(f"--samples and --steps must be at least 1 and --max-plots at least 0 "
                        f"(got {a.samples}, {a.steps}, {a.max_plots})")
    if getattr(a, "horizon", 1) < 1:
        raise UserError(f"--horizon must be at least 1, got {a.horizon}")
    out = Path(a.out)
    if out.suffix not in (".csv", ".npy"):
        raise UserError(f"--out {out}: use a .csv or .npy file name")
    if out.resolve() == Path(a.input).resolve():
        raise UserError(f"--out {out} is the --input file; choose another name (the input is never overwritten)")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a .csv or .npy file name")
    check_writable(out.parent, "--out")


def _load_input(a: argparse.Namespace, model: SSSDModule) -> tuple[SeriesFile, np.ndarray]:
    data = read_series(a.input, layout="auto", channels=int(model.hparams.channels))  # PTB-XL: channels first
    values = data.values if data.values.ndim == 3 else data.values[None]
    check_series(values, int(model.hparams.channels), a.input,
                 unconditional=trained_unconditionally(model.hparams, int(model.train_length)))
    return data, values


def impute(argv: list[str]) -> None:
    """``ssm sssd impute --ckpt CKPT --input data.csv|npy --out imputed.csv --samples 100 [--sampler ddim --steps 50]``."""
    a = _parser("ssm sssd impute", "Impute the missing (NaN/empty) entries of series.").parse_args(argv)
    check_options(a)
    model = load_model(a.ckpt)
    data, values = _load_input(a, model)
    observed = ~np.isnan(values)
    samples, rate = sample_series(model, values, observed, a.samples, a.sampler or model.hparams.sampler, a.steps,
                                  a.seed)
    print(f"{rate:.1f} samples/s (windows x samples per second), {int((~observed).sum())} entries imputed")
    for path in write_outputs(Path(a.out), data, values, observed, samples, a.max_plots, f"imputed: {a.input}"):
        print(f"wrote {path}")


def forecast(argv: list[str]) -> None:
    """``ssm sssd forecast --ckpt CKPT --input ... --out forecast.csv --horizon H [--holdout]``."""
    p = _parser("ssm sssd forecast", "Forecast the next H steps of series (or their last H with --holdout).")
    p.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    p.add_argument("--holdout", action="store_true", help="hide and forecast the last H steps, and score them")
    a = p.parse_args(argv)
    check_options(a)
    model = load_model(a.ckpt)
    data, values = _load_input(a, model)
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
    context = series[:, -W:]  # only the last window matters for the future
    observed = ~np.isnan(context)
    samples, rate = sample_series(model, context, observed, a.samples, a.sampler or model.hparams.sampler, a.steps,
                                  a.seed)
    full = np.repeat(series[None], a.samples, axis=0)
    full[:, :, -W:] = samples
    print(f"{rate:.1f} samples/s (series x samples per second)")
    if truth is not None:
        sums = MetricSums()
        hidden = np.zeros(truth.shape, dtype=bool)
        hidden[:, T - a.horizon:] = True
        hidden &= ~np.isnan(truth)
        t_samples, t_truth = torch.from_numpy(full), torch.from_numpy(truth)
        sums.add(t_samples.median(0).values, t_truth, torch.from_numpy(hidden), t_samples)
        r = sums.result()
        print(f"held-out last {a.horizon} steps: MSE {r['MSE']:.4g} MAE {r['MAE']:.4g} CRPS {r['CRPS']:.4g}")
    for path in write_outputs(Path(a.out), data, series, ~np.isnan(series), full, a.max_plots,
                              f"forecast of {a.horizon} steps: {a.input}"):
        print(f"wrote {path}")
