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

Offline stand-ins in the exact layouts of the sets SSSD's users load (same files, same columns, same
formats; the values are generated, deterministic from ``--seed``):

- ``ett``: ``ETTm1.csv`` as in the ETDataset (``date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT``, one row every 15
  minutes from 2016-07-01 00:00:00, 69680 rows by default): six transformer loads with daily and weekly
  cycles and AR(1) noise, and an oil temperature that follows the total load through a slow first-order lag
  plus a yearly cycle.
- ``electricity``: UCI's ``LD2011_2014.txt`` (``;``-separated, decimal commas, a quoted
  ``"";"MT_001";...`` header, 15-minute kW readings from 2011-01-01 00:15:00; 370 clients, 8760 rows by
  default, the real file has 140256): per-client scales, daily and weekly profiles, noise, and clients that
  join later read 0 before, as in the real file.
- ``ptbxl``: ``train_ptbxl_1000.npy``, ``val_ptbxl_1000.npy``, ``test_ptbxl_1000.npy`` (80/10/10), float32
  channels first (N, 12, 1000): 10 s of 12-lead ECG at 100 Hz in the published arrays' lead order
  (I, II, V1-V6, III, aVR, aVL, aVF), from a heart dipole swept through P, QRS and T waves per beat and
  projected on each lead, with baseline wander and noise on the 8 independent leads (III, aVR, aVL and aVF
  are derived from I and II, exactly as on a recorder), in mV.
- ``irregular``: ``irregular.csv`` (``t,y1,y2,y3,y4``; 3000 rows by default), a smooth process observed at
  random times: two stochastic damped oscillators (periods 12 and 40 time units, damping ratio 0.1, unit
  stationary variance), sampled exactly (the SDE's Gaussian transition over each gap) at times whose gaps are
  log-uniform between 1/4 and 4 (median 1), mixed into 4 channels with small observation noise.  Time matters
  here: a row may be a quarter or four time units after the previous one.  For ``data.time_column: t`` with a
  layer that takes per-step time steps (``recipes/sssd/irregular_s5_cpu.yaml``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from rich.progress import Progress

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.io import atomic_npy_save, atomic_write_text
from apps.common.prepared import already_prepared, building

DATASETS = ("mujoco", "stocks", "eeg", "ett", "electricity", "ptbxl", "irregular")
#: generated sets: their --n (rows, or records for ptbxl) when not given
DEFAULT_N = {"mujoco": 10000, "ett": 69680, "electricity": 8760, "ptbxl": 1000, "irregular": 3000}
#: dm_control's planar Hopper (Apache-2.0, see assets/LICENSE); its includes sit beside it in common/
HOPPER_XML = Path(__file__).parent / "assets" / "hopper.xml"

EEG_CHANNELS = ("PG3", "PG5", "PG7", "PG9")
ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
#: the lead order of the published PTB-XL arrays (SSSD's preprocessing)
PTBXL_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL", "aVF")


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
    paths = [atomic_npy_save(scaled[:n_train], out / "train_mujoco.npy"),
             atomic_npy_save(scaled[n_train:], out / "test_mujoco.npy")]
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


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float) -> np.ndarray:
    """Unit-variance AR(1) noise along the first axis: (T, ...)."""
    from scipy.signal import lfilter

    white = rng.normal(size=shape) * np.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], white, axis=0)


def _stamps(start: str, n: int, minutes: int) -> np.ndarray:
    """``n`` datetime64 stamps every ``minutes`` from ``start``."""
    return np.datetime64(start, "m") + np.arange(n) * np.timedelta64(minutes, "m")


def _stamp_text(stamps: np.ndarray) -> list[str]:
    return [str(s).replace("T", " ") + ":00" for s in stamps.astype("datetime64[m]")]


def ett_values(n: int, seed: int) -> np.ndarray:
    """(n, 7) ETTm1-like values: HUFL, HULL, MUFL, MULL, LUFL, LULL, OT (15-minute steps)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    day, week, year = 2 * np.pi * t / 96, 2 * np.pi * t / (96 * 7), 2 * np.pi * t / (96 * 365)
    daily = np.sin(day - 2.0) + 0.35 * np.sin(2 * day + 0.5)
    weekly = 0.3 * np.sin(week)
    base = np.array([6.0, 2.0, 4.0, 1.2, 3.0, 1.0])  # high / middle / low, useful / useless loads
    swing = np.array([2.0, 0.6, 1.5, 0.4, 1.0, 0.3])
    noise = _ar1(rng, (n, 6), 0.97) * np.array([0.8, 0.3, 0.6, 0.2, 0.4, 0.15])
    loads = base + swing * (daily + weekly)[:, None] + noise
    from scipy.signal import lfilter

    total = loads[:, [0, 2, 4]].sum(1)
    lag = lfilter([0.01], [1.0, -0.99], total - total.mean())  # slow first-order response to the load
    ot = 15.0 + 8.0 * np.sin(year - 1.0) + 1.5 * lag + 1.0 * _ar1(rng, (n,), 0.995)
    return np.column_stack([loads, ot])


def prepare_ett(out: Path, n: int, seed: int) -> list[Path]:
    """``out/ETTm1.csv``: the ETDataset's columns and 15-minute dates, generated values."""
    values = ett_values(n, seed)
    dates = _stamp_text(_stamps("2016-07-01T00:00", n, 15))
    lines = ["date," + ",".join(ETT_COLUMNS)]
    lines += [d + "," + ",".join(f"{v:.3f}" for v in row) for d, row in zip(dates, values)]
    return [atomic_write_text(out / "ETTm1.csv", "\n".join(lines) + "\n")]


def electricity_values(n: int, clients: int, seed: int) -> np.ndarray:
    """(n, clients) kW per 15 minutes: per-client scale, daily / weekly profile, noise; late joiners read 0."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    day, week = 2 * np.pi * t / 96, 2 * np.pi * t / (96 * 7)
    scale = np.exp(rng.normal(3.5, 1.2, clients))  # kW, log-normal across clients
    phase = rng.uniform(-0.6, 0.6, clients)
    profile = 1 + 0.5 * np.sin(day - 2.0 + phase) + 0.2 * np.sin(2 * day + phase) - 0.15 * (np.sin(week) > 0.6)
    noise = 0.15 * _ar1(rng, (n, clients), 0.9)
    values = np.maximum(scale * (profile + noise), 0.0)
    start = np.where(rng.random(clients) < 0.15, rng.integers(0, max(n // 2, 1), clients), 0)
    values[t < start] = 0.0
    return values


def prepare_electricity(out: Path, n: int, clients: int, seed: int) -> list[Path]:
    """``out/LD2011_2014.txt`` in UCI's format: ``;``-separated, decimal commas, quoted header and dates."""
    values = electricity_values(n, clients, seed)
    dates = _stamp_text(_stamps("2011-01-01T00:15", n, 15))

    def cell(v: float) -> str:
        return "0" if v == 0 else repr(round(float(v), 10)).replace(".", ",")

    lines = ['"";' + ";".join(f'"MT_{i + 1:03d}"' for i in range(clients))]
    with Progress() as progress:
        task = progress.add_task(f"writing {n} rows x {clients} clients", total=n)
        for d, row in zip(dates, values):
            lines.append(f'"{d}";' + ";".join(cell(v) for v in row))
            progress.advance(task)
    return [atomic_write_text(out / "LD2011_2014.txt", "\n".join(lines) + "\n")]


def ecg_records(n: int, seed: int, length: int = 1000, fs: float = 100.0) -> np.ndarray:
    """(n, 12, length) float32 mV, 12-lead ECGs in :data:`PTBXL_LEADS` order (see the module docstring)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / fs
    # waves: (offset from the R peak in s, width in s, amplitude in mV, dipole direction (x, y, z))
    waves = [(-0.16, 0.025, 0.12, (0.6, 0.8, 0.1)), (-0.03, 0.010, -0.15, (0.2, -0.5, 0.8)),
             (0.0, 0.012, 1.2, (0.55, 0.75, -0.35)), (0.03, 0.012, -0.3, (-0.3, -0.6, 0.75)),
             (0.25, 0.05, 0.3, (0.5, 0.6, -0.6))]
    # frontal angles of the limb leads (I 0, II 60, III 120, aVR -150, aVL -30, aVF 90 degrees) and the
    # horizontal directions of V1-V6
    v_angles = np.deg2rad([115, 95, 75, 55, 30, 0])
    out = np.empty((n, 12, length), dtype=np.float32)
    for i in range(n):
        rr = 60.0 / rng.uniform(50, 100)
        beats = np.cumsum(rr * (1 + 0.04 * rng.normal(size=int(length / fs / rr) + 4))) - rng.uniform(0, rr)
        axis = np.deg2rad(rng.normal(0, 15))  # the heart's electrical axis varies between people
        rot = np.array([[np.cos(axis), -np.sin(axis), 0], [np.sin(axis), np.cos(axis), 0], [0, 0, 1]])
        dipole = np.zeros((3, length))
        for wave_offset, width, amp, direction in waves:
            d = rot @ np.asarray(direction) * amp * rng.uniform(0.8, 1.2)
            shape = np.exp(-0.5 * ((t[None] - beats[:, None] - wave_offset) / width) ** 2).sum(0)  # (length,)
            dipole += d[:, None] * shape
        x, y, z = dipole
        # baseline wander and noise on the 8 independent leads; the other 4 derive from I and II as on a real ECG
        wander = 0.1 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3, (8, 1)) * t + rng.uniform(0, 2 * np.pi, (8, 1)))
        extra = wander + 0.02 * rng.normal(size=(8, length))
        lead_i = x + extra[0]
        lead_ii = 0.5 * x + np.sqrt(3) / 2 * y + extra[1]
        precordial = [np.cos(a) * x + np.sin(a) * z + e for a, e in zip(v_angles, extra[2:])]  # x left, z front
        leads = [lead_i, lead_ii, *precordial, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2,
                 lead_ii - lead_i / 2]
        out[i] = np.stack(leads)
    return out


def prepare_ptbxl(out: Path, n: int, seed: int) -> list[Path]:
    """``train/val/test_ptbxl_1000.npy`` (80/10/10), float32 (N, 12, 1000), channels first."""
    if n < 10:
        raise UserError(f"--n must be at least 10 for ptbxl (train, val and test records), got {n}")
    records = ecg_records(n, seed)
    n_val = n_test = n // 10
    n_train = n - n_val - n_test
    parts = {"train": records[:n_train], "val": records[n_train:n_train + n_val], "test": records[n_train + n_val:]}
    return [atomic_npy_save(part, out / f"{name}_ptbxl_1000.npy") for name, part in parts.items()]


#: the irregular stand-in's oscillators: (period, damping ratio) in time units
IRREGULAR_OSCILLATORS = ((12.0, 0.1), (40.0, 0.1))
#: its channels: each a fixed mix of the two oscillators
IRREGULAR_MIX = np.array([[1.0, 0.5], [0.3, 1.0], [-0.8, 0.6], [0.5, -0.9]])


def oscillator_transition(period: float, damping: float, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact Gaussian transitions ``(F, Q)`` ((..., 2, 2) each) over ``gaps`` (...) time units of the stochastic
    damped oscillator ``dx = v dt, dv = (-w^2 x - 2 zeta w v) dt + sigma dW`` (``w = 2 pi / period``), ``sigma``
    chosen for unit stationary variance of ``x``: ``F = exp(A gap)`` and ``Q`` by Van Loan's block exponential."""
    from scipy.linalg import expm

    w = 2 * np.pi / period
    A = np.array([[0.0, 1.0], [-w * w, -2 * damping * w]])
    GG = np.array([[0.0, 0.0], [0.0, 4 * damping * w**3]])  # sigma^2 on v
    generator = np.block([[-A, GG], [np.zeros((2, 2)), A.T]])
    block = expm(np.asarray(gaps, dtype=np.float64)[..., None, None] * generator)  # (..., 4, 4)
    F = np.swapaxes(block[..., 2:, 2:], -1, -2)
    return F, F @ block[..., :2, 2:]


def irregular_series(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(times (n,), values (n, 4))``: the irregular stand-in (see the module docstring)."""
    rng = np.random.default_rng(seed)
    gaps = np.exp(rng.uniform(np.log(0.25), np.log(4.0), n))
    gaps[0] = 0.0
    times = np.cumsum(gaps)
    latent = np.empty((n, len(IRREGULAR_OSCILLATORS)))
    for k, (period, damping) in enumerate(IRREGULAR_OSCILLATORS):
        w = 2 * np.pi / period
        F, Q = oscillator_transition(period, damping, gaps)  # (n, 2, 2)
        kicks = (np.linalg.cholesky(Q[1:] + 1e-12 * np.eye(2)) @ rng.normal(size=(n - 1, 2, 1)))[..., 0]
        state = rng.normal(size=2) * np.array([1.0, w])  # stationary: var x = 1, var v = w^2
        latent[0, k] = state[0]
        for i in range(1, n):
            state = F[i] @ state + kicks[i - 1]
            latent[i, k] = state[0]
    values = latent @ IRREGULAR_MIX.T + 0.05 * rng.normal(size=(n, len(IRREGULAR_MIX)))
    return times, values


def prepare_irregular(out: Path, n: int, seed: int) -> list[Path]:
    """``out/irregular.csv``: ``t,y1,...,y4``, a smooth process observed at random times (module docstring)."""
    if n < 2:
        raise UserError(f"--n must be at least 2 for irregular, got {n}")
    times, values = irregular_series(n, seed)
    lines = ["t," + ",".join(f"y{c + 1}" for c in range(values.shape[1]))]
    lines += [f"{t:.6f}," + ",".join(f"{v:.5f}" for v in row) for t, row in zip(times, values)]
    return [atomic_write_text(out / "irregular.csv", "\n".join(lines) + "\n")]


def prepare(argv: list[str]) -> None:
    """``ssm sssd prepare mujoco|stocks|eeg|ett|electricity|ptbxl|irregular [--out DIR] [--n N] [--seed S]``."""
    p = argparse.ArgumentParser(prog="ssm sssd prepare", description="Build an offline SSSD dataset.")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", default=None, help="output folder (default $SSM_DATA/<dataset>, SSM_DATA=data)")
    p.add_argument("--n", type=int, default=None,
                   help="mujoco: trajectories (10000); ett / electricity / irregular: rows (69680 / 8760 / 3000); "
                        "ptbxl: records (1000)")
    p.add_argument("--clients", type=int, default=370, help="electricity: clients (columns, default 370)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed of the generated sets")
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    a = p.parse_args(argv)
    final = Path(a.out) if a.out else Path(os.environ.get("SSM_DATA", "data")) / a.dataset
    if a.dataset in DEFAULT_N:
        a.n = DEFAULT_N[a.dataset] if a.n is None else a.n
        smallest = {"mujoco": 5, "ptbxl": 10}.get(a.dataset, 1)
        if a.n < smallest:
            raise UserError(f"--n must be at least {smallest} for {a.dataset}, got {a.n}")
    if a.clients < 1:
        raise UserError(f"--clients must be at least 1, got {a.clients}")
    settings = {"dataset": a.dataset, **({"n": a.n, "seed": a.seed} if a.dataset in DEFAULT_N else {}),
                **({"clients": a.clients} if a.dataset == "electricity" else {})}
    if already_prepared(final, "ssm sssd prepare", settings, a.force):
        return
    with building(final, "ssm sssd prepare", settings) as out:
        if a.dataset == "mujoco":
            paths = prepare_mujoco(out, a.n, a.seed)
        elif a.dataset == "stocks":
            paths = prepare_stocks(out)
        elif a.dataset == "ett":
            paths = prepare_ett(out, a.n, a.seed)
        elif a.dataset == "electricity":
            paths = prepare_electricity(out, a.n, a.clients, a.seed)
        elif a.dataset == "ptbxl":
            paths = prepare_ptbxl(out, a.n, a.seed)
        elif a.dataset == "irregular":
            paths = prepare_irregular(out, a.n, a.seed)
        else:
            paths = prepare_eeg(out)
    for path in paths:
        print(f"wrote {final / path.relative_to(out)}")
