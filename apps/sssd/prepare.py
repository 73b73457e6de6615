"""``ssm sssd prepare mujoco|stocks|eeg``: offline datasets in the layouts SSSD reads.

- ``mujoco``: Hopper trajectories (qpos + qvel = 14 dims, 100 steps) from random initial states,
  simulated with the ``mujoco`` package on dm_control's Hopper model (suite/hopper.xml and its
  includes, shipped in ``apps/sssd/assets`` with their license), with no actuation, the recipe of the Latent-ODE MuJoCo set that SSSD uses
  (Rubanova et al. 2019): root x/z ~ U(0, 0.5), other positions ~ U(-2, 2), velocities ~ U(-5, 5);
  each channel min-max scaled to [0, 1] over the set.  Written as ``train_mujoco.npy`` (80%) and
  ``test_mujoco.npy`` (20%), float32 (N, 100, 14).
- ``stocks``: matplotlib's sample ``Stocks.csv`` (monthly prices of 10 tickers, with its real gaps:
  empty cells, later listings) as ``stocks.csv`` (Date + 10 channels).
- ``eeg``: matplotlib's sample 4-channel EEG (800 steps at 80 Hz) as ``eeg.csv``.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
from rich.progress import Progress

from apps.common.errors import UserError
from apps.common.io import atomic_write, atomic_write_text
from apps.common.prepared import already_prepared, building

DATASETS = ("mujoco", "stocks", "eeg")
#: dm_control's planar Hopper (Apache-2.0, see assets/LICENSE); its includes sit beside it in common/
HOPPER_XML = Path(__file__).parent / "assets" / "hopper.xml"

EEG_CHANNELS = ("PG3", "PG5", "PG7", "PG9")


def hopper_trajectories(n: int, steps: int = 100, seed: int = 0, chunk: int = 500) -> np.ndarray:
    """Simulate ``n`` unactuated Hopper trajectories: (n, steps, 14) float64 of [qpos, qvel] (raw units)."""
    import mujoco
    from mujoco import rollout

    model = mujoco.MjModel.from_xml_path(str(HOPPER_XML))
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    size, offset = mujoco.mj_stateSize(model, spec), mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME)
    nq, nv = model.nq, model.nv
    base = np.zeros(size)
    mujoco.mj_getState(model, data, base, spec)
    rng = np.random.default_rng(seed)
    out = np.empty((n, steps, nq + nv))
    with Progress() as progress:
        task = progress.add_task(f"simulating {n} Hopper trajectories", total=n)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            init = np.tile(base, (m, 1))
            qpos = rng.uniform(-2.0, 2.0, (m, nq))
            qpos[:, :2] = rng.uniform(0.0, 0.5, (m, 2))  # root x and z: above the ground
            init[:, offset:offset + nq] = qpos
            init[:, offset + nq:offset + nq + nv] = rng.uniform(-5.0, 5.0, (m, nv))
            state, _ = rollout.rollout(model, data, init, np.zeros((m, steps - 1, model.nu)))
            states = np.concatenate([init[:, None], state], axis=1)  # (m, steps, size): the initial state first
            out[start:start + m] = states[..., offset:offset + nq + nv]
            progress.advance(task, m)
    return out


def _save_npy(path: Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def prepare_mujoco(out: Path, n: int, seed: int) -> list[Path]:
    """Write ``train_mujoco.npy`` and ``test_mujoco.npy`` (80/20) under ``out``; print the time taken."""
    if n < 5:
        raise UserError(f"--n must be at least 5 (train and test splits), got {n}")
    start = time.perf_counter()
    raw = hopper_trajectories(n, seed=seed)
    elapsed = time.perf_counter() - start
    lo, hi = raw.min(axis=(0, 1)), raw.max(axis=(0, 1))
    scaled = ((raw - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)
    n_train = int(round(0.8 * n))
    paths = [_save_npy(out / "train_mujoco.npy", scaled[:n_train]), _save_npy(out / "test_mujoco.npy", scaled[n_train:])]
    print(f"simulated {n} trajectories x 100 steps x 14 dims in {elapsed:.1f} s ({n / elapsed:.0f} trajectories/s)")
    return paths


def _sample_data(name: str) -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data(name, asfileobj=False))


def prepare_stocks(out: Path) -> list[Path]:
    """Copy Stocks.csv (comment line dropped, gaps kept as empty cells) to ``out/stocks.csv``."""
    lines = [line for line in _sample_data("Stocks.csv").read_text().splitlines() if not line.startswith("#")]
    return [atomic_write_text(out / "stocks.csv", "\n".join(lines) + "\n")]


def prepare_eeg(out: Path) -> list[Path]:
    """Write the 4-channel EEG (800 float64 samples per channel) to ``out/eeg.csv``."""
    values = np.fromfile(_sample_data("eeg.dat"), dtype=np.float64).reshape(800, len(EEG_CHANNELS))
    rows = [",".join(EEG_CHANNELS)] + [",".join(f"{v:.6g}" for v in row) for row in values]
    return [atomic_write_text(out / "eeg.csv", "\n".join(rows) + "\n")]


def prepare(argv: list[str]) -> None:
    """``ssm sssd prepare mujoco|stocks|eeg [--out DIR] [--n N] [--seed S]``."""
    p = argparse.ArgumentParser(prog="ssm sssd prepare", description="Build an offline SSSD dataset.")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", default=None, help="output folder (default $SSM_DATA/<dataset>, SSM_DATA=data)")
    p.add_argument("--n", type=int, default=10000, help="mujoco: number of trajectories (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="mujoco: random seed")
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    a = p.parse_args(argv)
    final = Path(a.out) if a.out else Path(os.environ.get("SSM_DATA", "data")) / a.dataset
    settings = {"dataset": a.dataset, **({"n": a.n, "seed": a.seed} if a.dataset == "mujoco" else {})}
    if a.dataset == "mujoco" and a.n < 5:
        raise UserError(f"--n must be at least 5 (train and test splits), got {a.n}")
    if already_prepared(final, "ssm sssd prepare", settings, a.force):
        return
    with building(final, "ssm sssd prepare", settings) as out:
        if a.dataset == "mujoco":
            paths = prepare_mujoco(out, a.n, a.seed)
        elif a.dataset == "stocks":
            paths = prepare_stocks(out)
        else:
            paths = prepare_eeg(out)
    for path in paths:
        print(f"wrote {final / path.relative_to(out)}")
