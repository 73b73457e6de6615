"""Fast sampling for SSSD: DDIM (and DPM-Solver) with few steps against 200-step ancestral DDPM.

The same checkpoint imputes the same series under the same random-missing masks with each sampler;
reported: wall and CPU time (the CPU time of this process is the fairer clock on a shared machine),
imputations per second, speed-ups over DDPM-200, and MSE / MAE / CRPS of the
sample median (MSE cost relative to DDPM-200) on the held-out entries, in data units, beside the
linear-interpolation baseline.  The machine is shared: take the ratios, not the absolute numbers.

    python benchmarks/sssd.py --ckpt runs/sssd/mujoco_cpu/checkpoints/last.ckpt \
        --data data/mujoco/test_mujoco.npy --n 100 --ratio 0.8 --samples 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from apps.sssd.evaluate import MetricSums, add_baselines
from apps.sssd.infer import load_model
from apps.sssd.masks import batch_masks


def run(args: argparse.Namespace) -> list[str]:
    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt)
    raw = torch.from_numpy(np.load(args.data)[: args.n].astype(np.float32))
    N, L, C = raw.shape
    available = ~torch.isnan(raw)
    cond = batch_masks(args.mask, N, L, C, args.ratio, generator=torch.Generator().manual_seed(0)) & available
    target = available & ~cond
    baselines: dict[str, MetricSums] = {}
    add_baselines(baselines, raw, cond, target, model.data_mean)
    specs = [(name, int(steps)) for name, steps in (spec.split("-") for spec in args.samplers.split(","))]
    model.sample(raw[:2], cond[:2], 1, "ddim", 2)  # warm-up
    times: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], float] = {}
    results: dict[tuple[str, int], torch.Tensor] = {}
    for _ in range(args.repeats):  # samplers interleaved, the fastest of the repeats kept: the machine is shared
        for name, steps in specs:
            start, start_cpu = time.perf_counter(), time.process_time()
            results[(name, steps)] = model.sample(raw, cond, args.samples, name, steps, torch.Generator().manual_seed(1))
            times[(name, steps)] = min(times.get((name, steps), float("inf")), time.perf_counter() - start)
            cpu[(name, steps)] = min(cpu.get((name, steps), float("inf")), time.process_time() - start_cpu)
    rows, reference = [], None
    for name, steps in specs:
        samples, elapsed = results[(name, steps)], times[(name, steps)]
        sums = MetricSums()
        sums.add(samples.median(0).values, raw, target, samples)
        r = sums.result()
        reference = reference or (elapsed, r["MSE"], cpu[(name, steps)])
        rows.append([f"{name.upper()}-{steps}", f"{elapsed:.1f}", f"{cpu[(name, steps)]:.1f}",
                     f"{N * args.samples / elapsed:.2f}", f"{reference[0] / elapsed:.2f}x",
                     f"{reference[2] / cpu[(name, steps)]:.2f}x", f"{r['MSE']:.4g}", f"{100 * (r['MSE'] / reference[1] - 1):+.1f}%",
                     f"{r['MAE']:.4g}", f"{r['CRPS']:.4g}"])
    lin = baselines["linear"].result()
    rows.append(["linear interpolation", "-", "-", "-", "-", "-", f"{lin['MSE']:.4g}", "-", f"{lin['MAE']:.4g}",
                 f"{lin['CRPS']:.4g}"])
    header = ["sampler", "wall (s)", "CPU (s)", "imputations/s", "speed-up (wall)", "speed-up (CPU)", "MSE", "MSE vs first", "MAE", "CRPS"]
    lines = [f"{N} series x {args.samples} samples, {args.mask} {args.ratio:g} missing, {args.threads} thread(s), "
             f"fastest of {args.repeats}", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", default="data/mujoco/test_mujoco.npy", help=".npy (N, L, C)")
    p.add_argument("--n", type=int, default=100, help="series")
    p.add_argument("--mask", default="rm")
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--samples", type=int, default=10, help="imputations per series")
    p.add_argument("--samplers", default="ddpm-200,ddim-50", help="comma-separated name-steps; the first is the reference")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per sampler (the fastest is reported)")
    print("\n".join(run(p.parse_args())))


if __name__ == "__main__":
    main()
