"""The no-grad kernel cache of convolutional layers, measured on SSSD imputation.

An SSSD sampler calls the same network (weights fixed, autograd off) at every denoising step; a
layer that reuses its convolution kernel while its parameters are unchanged
(:meth:`ssmcore.layers.base.SSMLayer.cached`) computes it on the first step only.  This times
DDIM imputation of random series with an untrained SSSD^S4 network (the speed does not depend on
training) with the cache on and off (off = every kernel recomputed at every call, as S4D, DSS and
DLR did before the cache moved into the base class), interleaved in one process, best of
``--repeats``, in CPU seconds of this process (the fair clock on a shared machine).

    OMP_NUM_THREADS=1 python benchmarks/kernel_cache.py --layers s4,s4d,dss,dlr --shapes 16x256,2x1024
"""

from __future__ import annotations

import argparse
import time

import torch

from apps.sssd.diffusion import impute, make_scheduler
from apps.sssd.model import SSSDS4
from ssmcore.layers.base import SSMLayer


def _uncached(self: SSMLayer, key: tuple, compute):  # noqa: ANN001, ANN202 -- the cache switched off
    return compute()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", default="s4,s4d,dss,dlr")
    p.add_argument("--shapes", default="16x256,2x1024", help="batch x length pairs")
    p.add_argument("--channels", type=int, default=14)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    cached = SSMLayer.cached
    print(f"DDIM-{args.steps}, SSSD^S4 with 4 residual layers of width 64 (8 bidirectional SSM layers of H = 128), "
          f"C = {args.channels}, 1 thread; CPU seconds per imputation, best of {args.repeats}\n")
    print("| layer | batch x L | no cache (s) | cache (s) | speed-up |\n|---|---|---:|---:|---:|")
    for name in args.layers.split(","):
        for shape in args.shapes.split(","):
            batch, length = (int(v) for v in shape.split("x"))
            torch.manual_seed(0)
            net = SSSDS4(in_channels=args.channels, res_channels=64, skip_channels=64, n_layers=4, layer=name).eval()
            x0 = torch.randn(batch, length, args.channels)
            mask = torch.rand(x0.shape) < 0.2
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):
                for use_cache in (False, True):
                    SSMLayer.cached = cached if use_cache else _uncached
                    began = time.process_time()
                    impute(net, x0, mask, make_scheduler(), "ddim", args.steps, generator=torch.Generator().manual_seed(0))
                    times[use_cache].append(time.process_time() - began)
            SSMLayer.cached = cached
            off, on = min(times[False]), min(times[True])
            print(f"| {name} | {batch} x {length} | {off:.2f} | {on:.2f} | {off / on:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
