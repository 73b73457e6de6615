"""The pendulum task of S5's Sec. 6.3 (after the CRU benchmark of Schirmer et al. 2022): a damped pendulum
filmed as small grey frames, observed at irregular times through time-varying noise; the target at
every observation is ``(sin theta, cos theta)`` of its angle.

Generation (our reading of the published description; the exact constants are ours):

- dynamics ``theta'' = -(g / l) sin(theta) - gamma theta'`` with ``g / l = 9.81 s^-2``,
  ``gamma = 0.25 s^-1``, integrated by RK4 on a fine grid, initial angle uniform in (-pi, pi) and
  angular velocity uniform in (-2, 2) rad/s;
- a grid of ``grid`` steps of ``step`` seconds (default 100 x 0.05 s), of which ``observed`` (50) are
  drawn at random per sequence, kept in time order: the observation times are irregular;
- each frame is ``size x size`` (24) pixels: a Gaussian blob (the bob) at the end of the rod;
- noise: ``frame = f_t * clean + (1 - f_t) * uniform noise`` with a factor ``f_t`` in [0, 1] that
  wanders over time (a clipped random walk), so some stretches of frames show nothing.

``ssm pendulum prepare --out data/pendulum`` writes ``{train,val,test}.npz``, each with ``frames``
(N, L, size, size) uint8, ``times`` (N, L) float32 seconds and ``targets`` (N, L, 2) float32.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.prepared import already_prepared, building, parse_sizes

SPLITS = ("train", "val", "test")
#: the default split sizes (the CRU/S5 benchmark's 4000 / 1000 / 1000)
SIZES = (4000, 1000, 1000)
KEYS = ("frames", "times", "targets")


def simulate(n: int, grid: int, step: float, rng: np.random.Generator, substeps: int = 10) -> np.ndarray:
    """Angles (n, grid) of damped pendulums sampled every ``step`` seconds (RK4 with ``substeps`` per step)."""
    g_over_l, gamma = 9.81, 0.25
    theta = rng.uniform(-math.pi, math.pi, n)
    omega = rng.uniform(-2.0, 2.0, n)
    h = step / substeps

    def f(th: np.ndarray, om: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return om, -g_over_l * np.sin(th) - gamma * om

    out = np.empty((n, grid))
    for t in range(grid):
        out[:, t] = theta
        for _ in range(substeps):
            k1 = f(theta, omega)
            k2 = f(theta + h / 2 * k1[0], omega + h / 2 * k1[1])
            k3 = f(theta + h / 2 * k2[0], omega + h / 2 * k2[1])
            k4 = f(theta + h * k3[0], omega + h * k3[1])
            theta = theta + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            omega = omega + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return out


def render(theta: np.ndarray, size: int) -> np.ndarray:
    """Clean frames (..., size, size) in [0, 1]: a Gaussian blob at the bob of a rod from the centre."""
    c = (size - 1) / 2
    r = 0.35 * size
    px = c + r * np.sin(theta)
    py = c + r * np.cos(theta)
    ys, xs = np.mgrid[0:size, 0:size]
    sigma = size / 16
    d2 = (xs - px[..., None, None]) ** 2 + (ys - py[..., None, None]) ** 2
    return np.exp(-d2 / (2 * sigma**2))


def generate(n: int, seed: int, *, grid: int = 100, observed: int = 50, step: float = 0.05,
             size: int = 24) -> dict[str, np.ndarray]:
    """One split: ``frames`` (n, observed, size, size) uint8, ``times`` (n, observed), ``targets`` (n, observed, 2)."""
    if not 1 <= observed <= grid:
        raise ValueError(f"need 1 <= observed <= grid, got observed={observed}, grid={grid}")
    rng = np.random.default_rng(seed)
    theta = simulate(n, grid, step, rng)
    idx = np.sort(np.argsort(rng.random((n, grid)), axis=1)[:, :observed], axis=1)  # irregular times
    theta = np.take_along_axis(theta, idx, axis=1)
    clean = render(theta, size)
    walk = np.cumsum(rng.normal(0, 0.2, (n, observed)), axis=1) + rng.uniform(0, 1, (n, 1))
    factor = np.clip(walk, 0.0, 1.0)[..., None, None]
    noisy = factor * clean + (1 - factor) * rng.uniform(0, 1, clean.shape)
    return {
        "frames": np.round(noisy * 255).astype(np.uint8),
        "times": (idx * step).astype(np.float32),
        "targets": np.stack([np.sin(theta), np.cos(theta)], -1).astype(np.float32),
    }


def read_split(root: Path, name: str) -> dict[str, np.ndarray]:
    """A split written by ``ssm pendulum prepare`` (read without pickle); a bad file is one UserError line."""
    path = Path(root) / f"{name}.npz"
    if not path.is_file():
        raise UserError(f"data.root: {path} not found; build the data with `ssm pendulum prepare --out {root}`")
    try:
        with np.load(path, allow_pickle=False) as blob:
            split = {k: blob[k] for k in KEYS}
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"data.root: {path} is not a pendulum split ({e}); rebuild it with "
                        f"`ssm pendulum prepare --out {root} --force`") from None
    rebuild = f"rebuild it with `ssm pendulum prepare --out {root} --force`"
    times, frames, targets = split["times"], split["frames"], split["targets"]
    n, length = times.shape if times.ndim == 2 else (-1, -1)
    if (times.ndim != 2 or frames.ndim != 4 or frames.shape[:2] != (n, length) or frames.shape[2] != frames.shape[3]
            or targets.shape != (n, length, 2)):
        raise UserError(f"data.root: {path} has shapes {[split[k].shape for k in KEYS]}, not frames (N, L, size, size), "
                        f"times (N, L) and targets (N, L, 2); {rebuild}")
    for key in ("times", "targets"):
        bad = ~np.isfinite(split[key])
        if bad.any():
            raise UserError(f"data.root: {path} holds {int(bad.sum())} non-finite {key} (first in sequence "
                            f"{int(np.argwhere(bad)[0][0])}); {rebuild}")
    back = np.diff(times, axis=1) < 0
    if back.any():
        raise UserError(f"data.root: {path} has times that go backwards (first in sequence "
                        f"{int(np.argwhere(back)[0][0])}); the observation times must not decrease; {rebuild}")
    return split


class PendulumData(pl.LightningDataModule):
    """The pendulum splits as ``(frames (B, L, size*size) float in [0, 1], times (B, L), targets (B, L, 2))``.

    Args:
        root: the folder written by ``ssm pendulum prepare``.
        batch_size: training batch size (evaluation uses the same).
        num_workers: DataLoader workers.
    """

    def __init__(self, root: str = "data/pendulum", batch_size: int = 50, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not Path(root).is_dir():
            raise UserError(f"data.root: {root} not found; build it with `ssm pendulum prepare --out {root}`")
        self.splits: dict[str, TensorDataset] = {}
        #: pixels per side of the frames, known once the splits are loaded
        self.frame_size: int | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # loaded once (the CLI loads before the run writes anything)
            return
        splits, sizes = {}, {}
        for name in SPLITS:
            s = read_split(Path(self.hparams.root), name)
            sizes[name] = s["frames"].shape[-1]
            frames = torch.from_numpy(s["frames"]).flatten(2).float() / 255
            splits[name] = TensorDataset(frames, torch.from_numpy(s["times"]), torch.from_numpy(s["targets"]))
        if len(set(sizes.values())) > 1:
            found = ", ".join(f"{name} {size}x{size}" for name, size in sizes.items())
            raise UserError(f"data.root: {self.hparams.root} mixes frame sizes ({found}); "
                            f"rebuild it with `ssm pendulum prepare --out {self.hparams.root} --force`")
        self.splits = splits  # all or nothing: a split that fails to read leaves none loaded
        self.frame_size = sizes["train"]

    def _loader(self, name: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[name], batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


def prepare(argv: list[str]) -> None:
    """``ssm pendulum prepare --out DIR``: generate the train/val/test splits."""
    p = argparse.ArgumentParser(prog="ssm pendulum prepare", description="Generate the irregular pendulum task.")
    p.add_argument("--out", default="data/pendulum", help="output folder (default data/pendulum)")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="train,val,test sizes (default 4000,1000,1000)")
    p.add_argument("--grid", type=int, default=100, help="time steps of the regular grid (default 100)")
    p.add_argument("--observed", type=int, default=50, help="observed steps per sequence (default 50)")
    p.add_argument("--step", type=float, default=0.05, help="grid step in seconds (default 0.05)")
    p.add_argument("--size", type=int, default=24, help="frame size in pixels (default 24)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    a = p.parse_args(argv)
    sizes = parse_sizes(a.sizes)
    if not 1 <= a.observed <= a.grid or a.step <= 0 or a.size < 4:
        raise UserError(f"need 1 <= --observed <= --grid, --step > 0 and --size >= 4 "
                        f"(got {a.observed}, {a.grid}, {a.step}, {a.size})")
    out = Path(a.out)
    settings = {"sizes": sizes, "grid": a.grid, "observed": a.observed, "step": a.step, "size": a.size, "seed": a.seed}
    if already_prepared(out, "ssm pendulum prepare", settings, a.force):
        return
    with building(out, "ssm pendulum prepare", settings) as tmp:
        for i, (name, n) in enumerate(zip(SPLITS, sizes)):
            split = generate(n, a.seed * 3 + i, grid=a.grid, observed=a.observed, step=a.step, size=a.size)
            np.savez_compressed(tmp / f"{name}.npz", **split)
    for name, n in zip(SPLITS, sizes):
        print(f"wrote {out / f'{name}.npz'} ({n} sequences, {a.observed} of {a.grid} steps observed)")
