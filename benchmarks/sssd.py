"""Fast sampling for SSSD: DDIM (and DPM-Solver) with few steps against 200-step ancestral DDPM.

The same checkpoint imputes the same series under the same random-missing masks with each sampler;
reported: wall and CPU time (the CPU time of this process is the fairer clock on a shared machine),
imputations per second, speed-ups over DDPM-200, and MSE / MAE / CRPS of the
sample median (MSE cost relative to DDPM-200) on the held-out entries, in data units, beside the
linear-interpolation baseline.  The machine is shared: take the ratios, not the absolute numbers.

Two schedules (``--schedule``): ``sequential`` runs each sampler's whole ``model.sample`` in turn
(samplers interleaved, the fastest of ``--repeats`` kept); ``paired`` runs them at the same time, taking
turns step by step in proportion to their step counts (one thread each, one running at a time), so that
both see the same load on a shared machine; each sampler's wall time is the sum of its own turns and its
CPU time its thread's CPU clock (summed over repeats).  Paired also reports the median time of one
denoising step (network + scheduler step + re-imposed observations) and the CPU time of a call beyond its
steps (set-up and finishing work: the first turn, set-up and a step, and the last, after the last step,
less one median step), per run.

    python benchmarks/sssd.py --ckpt runs/sssd/mujoco_cpu/checkpoints/last.ckpt \
        --data data/mujoco/test_mujoco.npy --n 100 --ratio 0.8 --samples 10

Speed alone, at a recipe's size with no trained checkpoint (the GPU table, benchmarks/gpu_tables.sh): ``--recipe``
builds the recipe's model untrained, ``--data random`` draws standard normal series of ``--length`` steps and the
recipe's channels, and ``--device cuda`` times on the GPU (each sampler's clock read after a synchronise).  An
untrained network's imputations say nothing of quality, so those rows leave the quality columns out:

    python benchmarks/sssd.py --recipe recipes/sssd/mujoco.yaml --data random --device cuda --n 100 --samples 10

``--point``: the point estimates of :mod:`apps.sssd.point` (the samples' median, mean, the James-Stein
shrunk mean, and the same with its offset from the interpolation scaled by a blend fitted on the validation split)
against linear interpolation, with the sample CRPS, CSDI's normalised CRPS and CRPS-sum, on the test split
the checkpoint's own data module builds (the run's CSV or .npy), at every ``--ratios`` of ``--mask``; the
blend is fitted on masked entries of the validation split at the training masks, never on the test split.

    python benchmarks/sssd.py --point --ckpt runs/sssd/stocks/checkpoints/last.ckpt --ratios 0.2,0.6 \
        --samples 50 --sampler ddim --steps 50 --eval-stride 4
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from apps.common.checkpoint import read_checkpoint
from apps.sssd.data import SeriesData
from apps.sssd.evaluate import MetricSums, add_baselines
from apps.sssd.infer import load_model
from apps.sssd.masks import batch_masks
from apps.sssd.module import SSSDModule
from apps.sssd.point import fit_blend, interpolation, point_estimate


class Turns:
    """Samplers running in threads take turns: after each denoising step the least advanced one goes on."""

    def __init__(self, totals: dict[str, int]) -> None:
        self.totals, self.done_steps = totals, dict.fromkeys(totals, 0)
        self.finished: set[str] = set()
        self.holder = next(iter(totals))
        self.cv = threading.Condition()
        self.turns: dict[str, list[tuple[float, float]]] = {name: [] for name in totals}  # (wall, CPU) per turn
        self.started = self.started_cpu = 0.0

    def wait(self, name: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.holder == name)
        self.started, self.started_cpu = time.perf_counter(), time.thread_time()  # this sampler's thread

    def give(self, name: str, finished: bool = False) -> None:
        self.turns[name].append((time.perf_counter() - self.started, time.thread_time() - self.started_cpu))
        with self.cv:
            if finished:
                self.finished.add(name)
            else:
                self.done_steps[name] += 1
            active = [n for n in self.totals if n not in self.finished]
            if active:
                self.holder = min(active, key=lambda n: self.done_steps[n] / self.totals[n])
            self.cv.notify_all()

    def step(self, name: str) -> None:
        self.give(name)
        self.wait(name)


def _paired(model, raw, cond, args, specs) -> tuple[dict, dict, dict, dict]:
    """One paired run of every sampler: results, wall, CPU and per-turn times per spec."""
    batches = -(-raw.shape[0] * args.samples // model.hparams.sample_batch_size)
    turns = Turns({f"{n}-{k}": batches * k for n, k in specs})
    results, cpu, errors = {}, {}, []

    def work(name: str, steps: int) -> None:
        key = f"{name}-{steps}"
        try:
            torch.set_num_threads(args.threads)
            turns.wait(key)
            start_cpu = time.thread_time()
            results[(name, steps)] = model.sample(raw, cond, args.samples, name, steps,
                                                  torch.Generator().manual_seed(1), on_step=lambda: turns.step(key))
            cpu[(name, steps)] = time.thread_time() - start_cpu
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(e)
        finally:
            turns.give(key, finished=True)

    threads = [threading.Thread(target=work, args=spec) for spec in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    wall = {(n, k): sum(w for w, _ in turns.turns[f"{n}-{k}"]) for n, k in specs}
    per_turn = {(n, k): turns.turns[f"{n}-{k}"] for n, k in specs}
    return results, wall, cpu, per_turn


def untrained_model(recipe: str) -> SSSDModule:
    """The SSSD model a recipe describes (its ``model:`` section and ``data.channels``), untrained, in eval mode."""
    config = yaml.safe_load(Path(recipe).read_text())
    options = dict(config.get("model") or {})
    if "channels" in (config.get("data") or {}):
        options["channels"] = config["data"]["channels"]
    return SSSDModule(**options).eval()


def series(args: argparse.Namespace, channels: int) -> torch.Tensor:
    """(N, L, C) float32 series: the first ``--n`` of the ``--data`` .npy, or standard normal ones for ``random``."""
    if args.data == "random":
        return torch.randn(args.n, args.length, channels, generator=torch.Generator().manual_seed(0))
    return torch.from_numpy(np.load(args.data)[: args.n].astype(np.float32))


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read afterwards times it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> list[str]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = untrained_model(args.recipe) if args.recipe else load_model(args.ckpt)
    trained = not args.recipe  # an untrained network's imputations are timed, not scored
    raw = series(args, model.hparams.channels)
    N, L, C = raw.shape
    available = ~torch.isnan(raw)
    cond = batch_masks(args.mask, N, L, C, args.ratio, generator=torch.Generator().manual_seed(0)) & available
    target = available & ~cond
    baselines: dict[str, MetricSums] = {}
    if trained:
        add_baselines(baselines, raw, cond, target, model.data_mean)
    model, raw_on, cond_on = model.to(device), raw.to(device), cond.to(device)  # what the samplers run on
    specs = [(name, int(steps)) for name, steps in (spec.split("-") for spec in args.samplers.split(","))]
    model.sample(raw_on[:2], cond_on[:2], 1, "ddim", 2)  # warm-up
    times: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], float] = {}
    results: dict[tuple[str, int], torch.Tensor] = {}
    steps_of: dict[tuple[str, int], list[tuple[float, float]]] = {spec: [] for spec in specs}
    ends_of: dict[tuple[str, int], list[tuple[float, float]]] = {spec: [] for spec in specs}
    for _ in range(args.repeats):
        if args.schedule == "paired":  # co-scheduled, step by step: the same load for every sampler
            results, wall, used, per_turn = _paired(model, raw_on, cond_on, args, specs)
            for spec in specs:
                times[spec] = times.get(spec, 0.0) + wall[spec]
                cpu[spec] = cpu.get(spec, 0.0) + used[spec]
                steps_of[spec] += per_turn[spec][1:-1]  # a denoising step each
                ends_of[spec] += [per_turn[spec][0], per_turn[spec][-1]]  # set-up + one step, finishing work
            continue
        for name, steps in specs:  # samplers interleaved, the fastest of the repeats kept: the machine is shared
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            results[(name, steps)] = model.sample(raw_on, cond_on, args.samples, name, steps,
                                                  torch.Generator().manual_seed(1))
            synchronize(device)
            times[(name, steps)] = min(times.get((name, steps), float("inf")), time.perf_counter() - start)
            cpu[(name, steps)] = min(cpu.get((name, steps), float("inf")), time.process_time() - start_cpu)
    paired = args.schedule == "paired"
    on_cpu = device.type == "cpu"  # the process's CPU clock times a GPU run's host only
    rows, reference = [], None
    for name, steps in specs:
        elapsed = times[(name, steps)]
        r = {"MSE": float("nan")}
        if trained:
            samples, sums = results[(name, steps)].cpu(), MetricSums()
            sums.add(samples.median(0).values, raw, target, samples)
            r = sums.result()
        reference = reference or (elapsed, r["MSE"], cpu[(name, steps)])
        row = [f"{name.upper()}-{steps}", f"{elapsed:.2f}", f"{cpu[(name, steps)]:.1f}" if on_cpu else "-",
               f"{N * args.samples * (args.repeats if paired else 1) / elapsed:.2f}", f"{reference[0] / elapsed:.2f}x",
               f"{reference[2] / cpu[(name, steps)]:.2f}x" if on_cpu else "-"]
        row += ([f"{r['MSE']:.4g}", f"{100 * (r['MSE'] / reference[1] - 1):+.1f}%", f"{r['MAE']:.4g}", f"{r['CRPS']:.4g}"]
                if trained else ["-"] * 4)
        if paired:  # CPU clocks: the wall time of one step is at the mercy of the other users
            step_cpu = statistics.median(c for _, c in steps_of[(name, steps)]) if steps > 1 else float("nan")
            ends = sum(c for _, c in ends_of[(name, steps)]) / args.repeats
            row += [f"{1000 * statistics.median(w for w, _ in steps_of[(name, steps)]):.0f}" if steps > 1 else "-",
                    f"{1000 * step_cpu:.0f}", f"{1000 * (ends - step_cpu):.0f}"]
        rows.append(row)
    header = ["sampler", "wall (s)", "CPU (s)", "imputations/s", "speed-up (wall)", "speed-up (CPU)", "MSE", "MSE vs first",
              "MAE", "CRPS"]
    if paired:
        header += ["median step wall (ms)", "median step CPU (ms)", "per-call CPU beyond the steps (ms)"]
    if trained:
        lin = baselines["linear"].result()
        rows.append(["linear interpolation", "-", "-", "-", "-", "-", f"{lin['MSE']:.4g}", "-", f"{lin['MAE']:.4g}",
                     f"{lin['CRPS']:.4g}"] + ["-", "-", "-"] * paired)
    how = (f"paired step by step, {args.repeats} run(s) summed" if paired else f"fastest of {args.repeats}")
    what = (f"{args.recipe}, untrained ({sum(p.numel() for p in model.parameters()):,} parameters): speed only"
            if args.recipe else args.ckpt)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} thread(s)"
    lines = [f"{what}; {N} series x {L} steps x {C} channels x {args.samples} samples, {args.mask} {args.ratio:g} "
             f"missing, {where}, {how}", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _splits(ckpt: str, stride: int) -> dict[str, torch.Tensor]:
    """The validation and test splits of the checkpoint's data module, every ``stride``-th window."""
    hp = {k: v for k, v in read_checkpoint(ckpt)["datamodule_hyper_parameters"].items() if not k.startswith("_")}
    dm = SeriesData(**hp)
    dm.setup()
    return {name: torch.from_numpy(np.ascontiguousarray(dm.splits[name][::stride])) for name in ("val", "test")}


def run_point(args: argparse.Namespace) -> list[str]:
    """Point estimates against linear interpolation, and the CRPS scores, on the checkpoint's test split."""
    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt)
    splits = _splits(args.ckpt, args.eval_stride)
    sampler = args.sampler or model.hparams.sampler
    draw_counts = sorted({min(int(k), args.samples) for k in args.sample_counts.split(",")} | {args.samples})

    def draw(raw: torch.Tensor, kind: str, ratio, seed: int):
        N, L, C = raw.shape
        available = ~torch.isnan(raw)
        cond = batch_masks(kind, N, L, C, ratio, generator=torch.Generator().manual_seed(seed)) & available
        samples = model.sample(raw, cond, args.samples, sampler, args.steps, torch.Generator().manual_seed(seed + 1))
        return cond, available & ~cond, samples, interpolation(raw, cond, model.data_mean)

    # the blend toward the interpolation, fitted on the validation split at the training masks
    val = splits["val"]
    cond, target, samples, interp = draw(val, model.hparams.mask, model.hparams.mask_ratio, 7)
    blends = {S: fit_blend(point_estimate(samples[:S], interp, target, "shrunk", model.data_std) - interp,
                           val - interp, target) for S in draw_counts}
    raw = splits["test"]
    header = ["mask", "ratio", "samples", "estimate", "MSE", "vs linear", "MAE", "CRPS", "NCRPS", "CRPS-sum"]
    rows = []
    for ratio in (float(r) for r in args.ratios.split(",")):
        cond, target, samples, interp = draw(raw, args.mask, ratio, 1000 + round(ratio * 1000))
        base: dict[str, MetricSums] = {}
        add_baselines(base, raw, cond, target, model.data_mean)
        lin = base["linear"].result()
        # the blend fitted on the validation split at this test mask and ratio (the gaps' own pattern)
        v_cond, v_target, v_samples, v_interp = draw(val, args.mask, ratio, 9 + round(ratio * 1000))
        at_mask = {S: fit_blend(point_estimate(v_samples[:S], v_interp, v_target, "shrunk", model.data_std) - v_interp,
                                val - v_interp, v_target) for S in draw_counts}
        for S in draw_counts:
            sub = samples[:S]
            ests = {"median": point_estimate(sub, interp, target, "median"),
                    "mean": point_estimate(sub, interp, target, "mean"),
                    "James-Stein only (blend 1)": point_estimate(sub, interp, target, "shrunk", model.data_std),
                    f"shrunk, blend {blends[S]:.2f}": point_estimate(sub, interp, target, "shrunk", model.data_std,
                                                                     blends[S]),
                    f"shrunk, blend {at_mask[S]:.2f} at the test mask": point_estimate(
                        sub, interp, target, "shrunk", model.data_std, at_mask[S])}
            for name, est in ests.items():
                sums = MetricSums()
                sums.add(est, raw, target, sub)
                r = sums.result()
                rows.append([args.mask, f"{ratio:g}", str(S), name, f"{r['MSE']:.4g}",
                             f"{100 * (r['MSE'] / lin['MSE'] - 1):+.1f}%", f"{r['MAE']:.4g}", f"{r['CRPS']:.4g}",
                             f"{r['NCRPS']:.4g}", f"{r['CRPS-sum']:.4g}"])
        rows.append([args.mask, f"{ratio:g}", "-", "linear interpolation", f"{lin['MSE']:.4g}", "+0.0%",
                     f"{lin['MAE']:.4g}", f"{lin['CRPS']:.4g}", f"{lin['NCRPS']:.4g}", f"{lin['CRPS-sum']:.4g}"])
    lines = [f"{args.ckpt}: {len(raw)} test windows (every {args.eval_stride}th), {len(val)} validation windows, "
             f"{sampler}-{args.steps or model.hparams.sampler_steps or 'all'}", "",
             "| " + " | ".join(header) + " |", "|---|---:|---:|---|" + "---:|" * (len(header) - 4)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a trained checkpoint")
    source.add_argument("--recipe", help="time the recipe's model untrained (speed only, no quality columns)")
    p.add_argument("--data", default="data/mujoco/test_mujoco.npy", help=".npy (N, L, C), or random")
    p.add_argument("--length", type=int, default=100, help="--data random: steps per series")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the speed table; --point runs on the CPU)")
    p.add_argument("--n", type=int, default=100, help="series")
    p.add_argument("--mask", default="rm")
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--samples", type=int, default=10, help="imputations per series")
    p.add_argument("--samplers", default="ddpm-200,ddim-50", help="comma-separated name-steps; the first is the reference")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2,
                   help="timed runs per sampler (sequential: the fastest is reported; paired: summed)")
    p.add_argument("--schedule", choices=("sequential", "paired"), default="sequential",
                   help="whole runs one after the other, or all samplers taking turns step by step")
    p.add_argument("--point", action="store_true",
                   help="score the point estimates against linear interpolation on the checkpoint's test split")
    p.add_argument("--ratios", default="0.2,0.6", help="--point: the missing ratios scored")
    p.add_argument("--sample-counts", default="10", help="--point: also score the first K samples (comma-separated)")
    p.add_argument("--sampler", default=None, help="--point: the sampler (default: the recipe's)")
    p.add_argument("--steps", type=int, default=None, help="--point: sampler steps (default: the recipe's)")
    p.add_argument("--eval-stride", type=int, default=4, help="--point: score every k-th window of the splits")
    args = p.parse_args()
    if args.point and args.recipe:
        p.error("--point scores a trained checkpoint: give --ckpt")
    if args.schedule == "paired" and args.device != "cpu":
        p.error("--schedule paired shares CPU threads: use it with --device cpu")
    print("\n".join(run_point(args) if args.point else run(args)))


if __name__ == "__main__":
    main()
