"""S5 with per-step time steps (irregular sampling): forward and forward+backward CPU time of one layer.

    OMP_NUM_THREADS=1 python benchmarks/s5_dt.py [--batch 4 --length 4096 --width 64 --state 64 --repeats 9]

Prints the median CPU time (``time.process_time``, one thread: less disturbed by neighbours than wall time)
of ``layer(x, dt=dt)`` under ``no_grad``, of the same with its backward, and of the forward without ``dt``.
To compare two versions, run it from a worktree of each, alternately, in one quiet window.
"""

from __future__ import annotations

import argparse
import time

import torch

from ssmcore.registry import make_layer


def cpu_ms(f, repeats: int) -> float:
    """Median CPU milliseconds of ``f()`` over ``repeats`` calls after one warm-up call."""
    f()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        f()
        times.append(time.process_time() - t)
    return sorted(times)[repeats // 2] * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--state", type=int, default=64)
    p.add_argument("--repeats", type=int, default=9)
    a = p.parse_args()
    torch.manual_seed(0)
    layer = make_layer("s5", d_model=a.width, d_state=a.state)
    x = torch.randn(a.batch, a.length, a.width)
    dt = torch.rand(a.batch, a.length) + 0.5

    def forward_backward() -> None:
        xx = x.clone().requires_grad_()
        layer(xx, dt=dt)[0].sum().backward()

    with torch.no_grad():
        fwd = cpu_ms(lambda: layer(x, dt=dt), a.repeats)
        plain = cpu_ms(lambda: layer(x), a.repeats)
    both = cpu_ms(forward_backward, a.repeats)
    print(f"S5 {a.width}/{a.state}, B {a.batch}, L {a.length}, {torch.get_num_threads()} thread(s), medians of "
          f"{a.repeats}: forward with dt {fwd:.1f} ms, forward+backward with dt {both:.1f} ms, forward without dt "
          f"{plain:.1f} ms")


if __name__ == "__main__":
    main()
