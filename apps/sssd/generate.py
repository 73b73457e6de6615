"""``ssm sssd generate``: unconditional generation, new series sampled with nothing observed (mask ratio 1).

Only a model trained with the ratio 1 among its training ratios (``model.mask_ratio: 1.0``, or a list such as
``[0.5, 1.0]``, or ``model.mask_length`` equal to the window) has seen a series with nothing observed; any other
checkpoint is refused, since its samples would be an untested extrapolation.  The same models also impute
series that are entirely missing with ``ssm sssd impute``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.io import atomic_npy_save, check_writable
from apps.common.report import write_csv
from apps.sssd.diffusion import SAMPLERS
from apps.sssd.module import trained_unconditionally


def check_unconditional(model, ckpt: str) -> None:
    """Refuse a checkpoint that never trained with nothing observed, naming the fix."""
    if not trained_unconditionally(model.hparams, int(model.train_length)):
        h = model.hparams
        raise UserError(f"{ckpt} was trained with model.mask_ratio {h.mask_ratio} (mask_length {h.mask_length}): it "
                        "never saw a series with nothing observed; train one with --model.mask_ratio 1.0 "
                        "(or a list with 1.0, e.g. [0.5, 1.0]) to generate unconditionally")


def generate(argv: list[str]) -> None:
    """``ssm sssd generate --ckpt CKPT --n 16 --out new.npy|csv [--length L] [--sampler ddim --steps 50]``."""
    from apps.sssd.infer import load_model, sample_series

    p = argparse.ArgumentParser(prog="ssm sssd generate",
                                description="Sample new series with nothing observed (a model trained with mask ratio 1).")
    p.add_argument("--ckpt", required=True, help="checkpoint of `ssm sssd fit` trained with mask ratio 1")
    p.add_argument("--n", type=int, default=16, help="series to generate (default 16)")
    p.add_argument("--out", required=True, help="output .npy (N, L, C) or .csv (series, step, one column per channel)")
    p.add_argument("--length", type=int, default=None, help="steps per series (default and at most: the training window)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None, help="ddpm, ddim or dpm (default: the recipe's)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: all 200 for ddpm, 50 otherwise)")
    p.add_argument("--seed", type=seed_int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.n < 1 or (a.steps is not None and a.steps < 1) or (a.length is not None and a.length < 1):
        raise UserError(f"--n, --steps and --length must be at least 1 (got {a.n}, {a.steps}, {a.length})")
    if out.suffix not in (".npy", ".csv") or out.is_dir():
        raise UserError(f"--out {out}: use a .npy or .csv file name")
    check_writable(out.parent, "--out")
    model = load_model(a.ckpt)
    check_unconditional(model, a.ckpt)
    W = int(model.train_length)
    length = a.length or W
    if length > W:
        raise UserError(f"--length {length} is longer than the model's window of {W} steps; generate at most {W}")
    C = int(model.hparams.channels)
    nothing = np.full((a.n, length, C), np.nan, dtype=np.float32)
    samples, rate = sample_series(model, nothing, np.zeros(nothing.shape, dtype=bool), 1,
                                  a.sampler or model.hparams.sampler, a.steps, a.seed)
    series = samples[0].astype(np.float32)  # (N, L, C)
    print(f"{rate:.1f} series/s")
    if out.suffix == ".npy":
        path = atomic_npy_save(series, out)
    else:
        header = ["series", "step", *[f"ch{c}" for c in range(C)]]
        rows = [[str(i), str(t), *[f"{v:.6g}" for v in series[i, t]]] for i in range(a.n) for t in range(length)]
        path = write_csv(out, header, rows)
    print(f"wrote {path}")
