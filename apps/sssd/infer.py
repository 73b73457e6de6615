"""``ssm sssd impute`` and ``ssm sssd forecast``: probabilistic imputation / forecasting with a checkpoint.

Each series (a CSV file, or every row of an ``.npy`` (N, L, C)) is cut into windows of the training
length; each window is denoised ``--samples`` times; the point estimate (``--point``, :mod:`apps.sssd.point`) and
the 5% / 95% quantiles of the samples are written (observed entries unchanged), with a PNG per series
showing the observed points, the point estimate and the 90% band.

The default point estimate, ``shrunk``, is the samples' mean with its offset from the linear
interpolation of the observed entries shrunk toward zero, by the James-Stein factor of the samples'
Monte Carlo noise and by a blend in [0, 1] fitted on the input's own observed entries: the input's
own gap pattern, shifted along time, hides some of them (the training masks when that hides nothing),
they are imputed like the gaps, and the blend is the least-squares factor of the shrunk offset to
their true offset.  The gaps themselves are never used to fit it; it costs
one more sampling pass (``--no-calibrate``: blend 1).  It falls back to the interpolation where the
model knows no better: on the held-out entries it is fitted on it is never worse than the interpolation
(blend 0 is the interpolation itself), and so, in expectation, on gaps like them; it may lie outside
the 90% band of a poorly trained model.  ``--point median`` writes the samples' median.  Forecasting
(:mod:`apps.sssd.forecast`) imputes ``--horizon`` steps appended after the series (or, with ``--holdout``, its
last H steps, and scores them against the hidden values).

Time stamps: a CSV's time column (``--time-column``, by default the training's ``data.time_column``), or for an
``.npy`` input the array of ``--times`` ((L,) or (N, L)), gives each window its time steps, from the same rows as its values (:meth:`apps.sssd.module.SSSDModule.time_steps`: in
units of the training series' median step, or of the input's own for a model trained without stamps).  A
regular series samples exactly as without the column; irregular stamps need a layer that takes them (S5).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from apps.common.checkpoint import datamodule_options, load_module
from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.io import atomic_npy_save, check_writable
from apps.common.report import save_figure, write_csv
from apps.sssd.data import SeriesFile, is_table, median_step, read_series
from apps.sssd.diffusion import SAMPLERS
from apps.sssd.evaluate import time_positions
from apps.sssd.masks import make_mask
from apps.sssd.module import SSSDModule, trained_unconditionally
from apps.sssd.point import POINTS, held_out_blend, interpolation, point_estimate

QUANTILES = (0.05, 0.95)


def load_model(path: str | Path) -> SSSDModule:
    """The SSSD model of a fit checkpoint, in eval mode on the CPU."""
    if not Path(path).exists():  # a .ckpt file or a save_pretrained folder
        raise UserError(f"checkpoint not found: {path} (train one with `ssm sssd fit -c recipes/sssd/<recipe>.yaml`)")
    module, blob = load_module(path, SSSDModule, check=lambda blob: None if "data_mean" in blob["state_dict"]
                               else "no data statistics in its state", kind="an sssd")
    #: the training's data.time_column (None for a save_pretrained folder, which keeps no data options)
    module.training_time_column = datamodule_options(blob).get("time_column")
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
                  steps: int | None, seed: int, times: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Samples of every series: (N, T, C) values (NaN = missing), (N, T, C) observed mask -> (S, N, T, C), samples/s.

    ``times`` (N, T): the rows' time stamps, if any; each window's time steps come from its own rows
    (:func:`series_time_steps`)."""
    N, T, C = series.shape
    W = int(model.train_length) or T
    pieces = [(i, s) for i in range(N) for s in window_starts(T, W)]
    width = min(W, T)
    x = torch.from_numpy(np.stack([series[i, s:s + width] for i, s in pieces])).float()
    m = torch.from_numpy(np.stack([cond_mask[i, s:s + width] for i, s in pieces]))
    dt = None
    if times is not None:
        rel = np.stack([times[i, s:s + width] - times[i, s] for i, s in pieces])  # (pieces, width) float64
        dt = series_time_steps(model, rel, times)
    sched_steps = steps or (model.hparams.diffusion_steps if sampler == "ddpm" else 50)
    batch = model.hparams.sample_batch_size
    total = -(-len(pieces) * n_samples // batch) * sched_steps
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task(f"{sampler}-{sched_steps}: {len(pieces)} windows x {n_samples} samples", total=total)
        samples = model.sample(x, m, n_samples, sampler, steps, generator, on_step=lambda: progress.advance(task),
                               dt=dt)
    rate = len(pieces) * n_samples / (time.perf_counter() - start)
    out = np.repeat(series[None].copy(), n_samples, axis=0)
    for k, (i, s) in enumerate(pieces):  # later windows overwrite the overlap
        out[:, i, s:s + width] = samples[:, k].numpy()
    return out, rate


def series_time_steps(model: SSSDModule, window_times: np.ndarray, times: np.ndarray) -> torch.Tensor | None:
    """``dt`` (B, L) of windows whose stamps are ``window_times`` (B, L): in units of the training series' median
    step, or of the input's own (``times``, every row) for a model trained without time stamps; None when regular."""
    unit = float(model.time_unit) or median_step(times)
    return model.time_steps(torch.from_numpy(window_times), unit, where="--time-column (time stamps of --input)")


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
        ax.plot(steps, median[:, c], color="tab:orange", lw=1, label="point estimate")
        ax.plot(steps[observed[:, c]], values[observed[:, c], c], ".", color="tab:blue", ms=3, label="observed")
        ax.set_ylabel(names[c], fontsize=8)
    axes[0, 0].legend(loc="upper left", fontsize=7, ncol=3)
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    return save_figure(fig, path)


def training_masks(model: SSSDModule, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """The model's training masks over whole series (N, T, C): one per window of the training length, tiled."""
    N, T, C = shape
    W = int(model.train_length) or T
    h = model.hparams
    ratios = h.mask_ratio if isinstance(h.mask_ratio, list) else [h.mask_ratio]
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    mask = np.ones(shape, dtype=bool)
    for i in range(N):
        for s in range(0, T, W):
            width = min(W, T - s)
            k = min(h.mask_length, width - 1) if h.mask_length is not None else None
            mask[i, s:s + width] = make_mask(h.mask, width, C, float(rng.choice(ratios)), k, g).numpy()
    return mask


def gap_pattern_held(observed: np.ndarray, seed: int, fraction: float = 0.15) -> np.ndarray:
    """Observed entries (N, T, C) to hold out that follow the input's own gaps.

    Each series' missing pattern is rolled along time by a seeded shift (1 .. T - 1; redrawn, up to 8 times,
    while it lands only on gaps, as periodic gaps do) and kept where it falls on observed entries; then whole
    runs of it (per channel) are kept at random so that about ``fraction`` of the observed entries are held
    out (at least one run).  Block gaps stay blocks of their length and scattered gaps stay scattered, while
    what is left to condition on stays close to the input's own density, as it is at the real gaps.
    """
    N, T, C = observed.shape
    rng = np.random.default_rng(seed)
    held = np.zeros_like(observed)
    for i in range(N):
        gaps = ~observed[i]
        if T < 2 or not gaps.any() or not observed[i].any():
            continue
        for _ in range(8):
            cand = observed[i] & np.roll(gaps, int(rng.integers(1, T)), axis=0)
            if cand.any():
                break
        budget = fraction * observed[i].sum()
        if cand.sum() > budget:
            starts = cand & ~np.vstack([np.zeros((1, C), dtype=bool), cand[:-1]])  # (T, C) first step of each run
            run = (np.cumsum(starts.T.ravel()).reshape(C, T).T) * cand  # run ids 1.. per entry, 0 elsewhere
            n_runs = int(run.max())
            keep = rng.random(n_runs + 1) < budget / cand.sum()
            keep[0] = False
            if not keep.any():
                keep[rng.integers(1, n_runs + 1)] = True
            cand = keep[run]
        held[i] = cand
    return held


def calibrate_blend(model: SSSDModule, values: np.ndarray, observed: np.ndarray, n_samples: int, sampler: str,
                    steps: int | None, seed: int, times: np.ndarray | None = None) -> float:
    """The blend of the ``shrunk`` point estimate, fitted on observed entries hidden in the pattern of the
    input's own gaps (:func:`gap_pattern_held`); the model's training masks when that hides nothing."""
    held = gap_pattern_held(observed, seed + 17)
    if not held.any():
        held = observed & ~training_masks(model, values.shape, seed + 17)
    cond = observed & ~held
    if not held.any():
        return 1.0
    hidden = np.where(cond, values, np.nan).astype(np.float32)
    samples, _ = sample_series(model, hidden, cond, n_samples, sampler, steps, seed + 31, times)
    return held_out_blend(torch.from_numpy(samples), torch.from_numpy(values), torch.from_numpy(cond),
                          torch.from_numpy(held), model.data_mean, model.data_std, series_positions(model, times))


def series_positions(model: SSSDModule, times: np.ndarray | None) -> torch.Tensor | None:
    """The rows' positions in time (N, T) float64 for the linear interpolations of the point estimate, from the
    input's time stamps ``times`` (N, T); None without them or when they are evenly spaced (row index)."""
    if times is None:
        return None
    return time_positions(series_time_steps(model, times - times[:, :1], times))


def point_of(samples: np.ndarray, values: np.ndarray, observed: np.ndarray, model: SSSDModule, kind: str,
             blend: float, times: np.ndarray | None = None, where: np.ndarray | None = None) -> np.ndarray:
    """The point estimate (N, T, C) of ``samples`` (S, N, T, C), observed entries as given; ``times`` (N, T):
    the rows' time stamps, if any (the interpolation ``shrunk`` falls back to is then in time); ``where``
    (N, T, C): the entries that were sampled (default: every missing one); others stay as ``values`` has them."""
    t_obs = torch.from_numpy(observed)
    interp = interpolation(torch.from_numpy(values), t_obs, model.data_mean, series_positions(model, times))
    sampled = ~t_obs if where is None else torch.from_numpy(where)
    est = point_estimate(torch.from_numpy(samples), interp, sampled, kind, model.data_std, blend)
    return np.where(sampled.numpy(), est.numpy(), values)


def write_outputs(out: Path, data: SeriesFile, values: np.ndarray, observed: np.ndarray, samples: np.ndarray,
                  max_plots: int, title: str, point: np.ndarray | None = None) -> list[Path]:
    """Point estimate + quantiles to ``out`` (.csv: one column per channel and quantile; .npy: (N, T, C, 3) =
    point, q05, q95) and a PNG per series under ``<out stem>_plots/``; the point is the samples' median
    unless given."""
    median = np.where(observed, values, np.median(samples, axis=0) if point is None else point)
    lo, hi = (np.where(observed, values, np.quantile(samples, q, axis=0)) for q in QUANTILES)
    paths = []
    if out.suffix == ".npy":
        paths.append(atomic_npy_save(np.stack([median, lo, hi], axis=-1).astype(np.float32), out))
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


def _parser(prog: str, description: str, point_help: str, calibrate_help: str) -> argparse.ArgumentParser:
    """The options impute and forecast share; ``point_help`` / ``calibrate_help`` say what their ``--point`` and
    ``--no-calibrate`` mean for the verb."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--point", choices=POINTS, default="shrunk", help=point_help)
    p.add_argument("--no-calibrate", action="store_true", help=calibrate_help)
    p.add_argument("--ckpt", required=True, help="checkpoint of `ssm sssd fit`")
    p.add_argument("--input", required=True, help=".csv (time x channels) or .npy (N, L, C); NaN/empty = missing")
    p.add_argument("--out", required=True, help="output .csv or .npy (point estimate, 5%% and 95%% quantiles)")
    p.add_argument("--samples", type=int, default=100, help="samples per series (default 100)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None, help="ddpm, ddim or dpm (default: the recipe's)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: all 200 for ddpm, 50 otherwise)")
    p.add_argument("--max-plots", type=int, default=20, help="PNG plots for the first N series (default 20)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--time-column", default=None,
                   help="the CSV's column of time stamps (default: the training's data.time_column); none: the rows "
                        "are evenly spaced")
    p.add_argument("--times", default=None,
                   help="for an .npy --input: an .npy of its time stamps, (L,) shared by every series or (N, L), "
                        "increasing along each series (a CSV's stamps are its --time-column)")
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


def input_time_column(a: argparse.Namespace, model: SSSDModule) -> tuple[str | None, bool]:
    """The time column to read from ``--input`` and whether the user named it (``--time-column``), else the
    training's ``data.time_column`` (only for a CSV input; none for .npy)."""
    if a.time_column is not None:
        return (None if a.time_column == "none" else a.time_column), True
    column = getattr(model, "training_time_column", None)
    return (None if column in (None, "none") or not is_table(a.input) else column), False


def read_times(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """The time stamps of ``--times`` for series of ``shape`` (N, T): an .npy of (T,) (every series) or (N, T)
    finite numbers increasing along each series, as float64 (N, T); one clear error otherwise."""
    path = Path(path)
    if path.suffix != ".npy" or not path.is_file():
        raise UserError(f"--times {path}: not an .npy file (give the stamps as an .npy array of (T,) or (N, T))")
    try:
        times = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"--times {path}: not a readable .npy array ({e})") from None
    N, T = shape
    if times.shape not in ((T,), (N, T)) or not np.issubdtype(times.dtype, np.number):
        raise UserError(f"--times {path}: numbers of shape ({T},) or ({N}, {T}) for --input's {N} series of {T} steps, "
                        f"got {times.dtype} {times.shape}")
    times = np.broadcast_to(times.astype(np.float64), (N, T)).copy()
    if not np.isfinite(times).all() or not (np.diff(times, axis=1) > 0).all():
        raise UserError(f"--times {path}: the stamps must be finite and increase along each series")
    return times


def _load_input(a: argparse.Namespace, model: SSSDModule) -> tuple[SeriesFile, np.ndarray, np.ndarray | None]:
    """The input's data, its values (N, T, C) and its time stamps (N, T) float64 (None without a time column)."""
    stamps, trained = a.times, getattr(model, "training_time_column", None)
    if stamps is not None and is_table(a.input):
        raise UserError(f"--times {stamps}: only for an .npy --input; a CSV's stamps are its column (--time-column NAME)")
    if stamps is not None and a.time_column == "none":
        raise UserError(f"--times {stamps} and --time-column none contradict each other; give one of them")
    if stamps is None and not is_table(a.input) and trained not in (None, "none") and a.time_column != "none":
        raise UserError(f"{a.input}: the model was trained with time stamps (data.time_column {trained!r}); give the "
                        "series' stamps with --times FILE.npy, or pass --time-column none if its rows are evenly spaced")
    column, named = input_time_column(a, model)
    options = {"time_column": column} if column else {}
    try:
        data = read_series(a.input, layout="auto", channels=int(model.hparams.channels), **options)  # PTB-XL: channels first
    except UserError as e:
        if column and not named and str(e).startswith(f"{a.input}: no column {column!r}"):
            raise UserError(f"{a.input}: no column {column!r}, the time column the model was trained with "
                            "(data.time_column); name the input's with --time-column NAME, or pass --time-column none "
                            "if its rows are evenly spaced") from None
        raise
    values = data.values if data.values.ndim == 3 else data.values[None]
    check_series(values, int(model.hparams.channels), a.input,
                 unconditional=trained_unconditionally(model.hparams, int(model.train_length)))
    times = None if data.times is None else data.times[None].astype(np.float64)
    if stamps is not None:
        times = read_times(stamps, values.shape[:2])
    return data, values, times


def impute(argv: list[str]) -> None:
    """``ssm sssd impute --ckpt CKPT --input data.csv|npy --out imputed.csv --samples 100 [--sampler ddim --steps 50]
    [--point shrunk|mean|median] [--no-calibrate]``."""
    p = _parser("ssm sssd impute", "Impute the missing (NaN/empty) entries of series.",
                "the point estimate written: shrunk (default: the mean, shrunk toward linear interpolation where "
                "the model knows no better), mean or median of the samples",
                "shrunk: skip fitting its blend on held-out observed entries (one sampling pass less)")
    a = p.parse_args(argv)
    check_options(a)
    model = load_model(a.ckpt)
    data, values, times = _load_input(a, model)
    observed = ~np.isnan(values)
    sampler = a.sampler or model.hparams.sampler
    blend = 1.0
    if a.point == "shrunk" and not a.no_calibrate:
        blend = calibrate_blend(model, values, observed, a.samples, sampler, a.steps, a.seed, times)
        print(f"point estimate: blend {blend:.3g} toward the samples, fitted on held-out observed entries")
    samples, rate = sample_series(model, values, observed, a.samples, sampler, a.steps, a.seed, times)
    print(f"{rate:.1f} samples/s (windows x samples per second), {int((~observed).sum())} entries imputed")
    point = point_of(samples, values, observed, model, a.point, blend, times)
    for path in write_outputs(Path(a.out), data, values, observed, samples, a.max_plots, f"imputed: {a.input}",
                              point):
        print(f"wrote {path}")
