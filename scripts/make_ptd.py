"""Build the shipped perturb-then-diagonalise data ``ssmcore/data/ptd_N{N}.npz``.

Runs :func:`ssmcore.perturbation.perturb_then_diagonalize` (Adam on ``kappa(V)^2 + gamma ||E||_F`` in
float64 from the deterministic ``normal`` start, one thread, so re-running reproduces the files) for
each state size and writes ``A, B, E, Lambda, V, Vinv, kappa, rel_norm`` plus the settings used.
Every size takes under a few minutes on one CPU core.

    python scripts/make_ptd.py                      # every shipped size
    python scripts/make_ptd.py --sizes 64 128 --steps 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssmcore.perturbation import SHIPPED_SIZES, perturb_then_diagonalize  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1] / "ssmcore" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SHIPPED_SIZES), help="state sizes N")
    parser.add_argument("--steps", type=int, default=500, help="Adam steps per size")
    parser.add_argument("--gamma", type=float, default=None, help="weight of ||E||_F (default 1e4 / ||A||_F)")
    parser.add_argument("--init", choices=("normal", "random"), default="normal", help="starting perturbation")
    parser.add_argument("--init-scale", type=float, default=0.03, help="||E_0|| / ||A|| of the start")
    parser.add_argument("--lr", type=float, default=0.02, help="Adam lr relative to the start's entry scale")
    parser.add_argument("--lr-final", type=float, default=0.1, help="final lr / lr (cosine decay)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random start")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # LAPACK results can depend on the thread count: keep the files reproducible
    args.out.mkdir(parents=True, exist_ok=True)
    for N in args.sizes:
        start = time.time()

        def progress(step: int, stats: dict[str, float], N: int = N, start: float = start) -> None:
            print(
                f"N={N:4d} step {step:5d}/{args.steps}  kappa(V)={stats['kappa']:.4g}  "
                f"||E||/||A||={stats['rel_norm']:.4f}  max Re(lambda)={stats['max_re']:.3f}  "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )

        result = perturb_then_diagonalize(
            N, gamma=args.gamma, steps=args.steps, init=args.init, init_scale=args.init_scale, lr=args.lr,
            lr_final=args.lr_final, seed=args.seed, progress=progress,
        )
        settings = {"steps": args.steps, "init_scale": args.init_scale, "lr": args.lr, "lr_final": args.lr_final,
                    "seed": args.seed, "init_normal": float(args.init == "normal")}
        path = args.out / f"ptd_N{N}.npz"
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **result, **{k: np.float64(v) for k, v in settings.items()})
        os.replace(tmp, path)
        print(f"wrote {path}  kappa(V)={float(result['kappa']):.4g}  ||E||/||A||={float(result['rel_norm']):.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
