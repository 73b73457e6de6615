"""Recurrent generation speed of the default SaShiMi model (d_model 64, 8 pairs per tier, pool [4, 4], S4).

Prints generated audio samples per second (batch x steps / wall time; sampling included) at batch 1
and 16 on the CPU (``--threads``, default 2) and at batch 64 on CUDA when available, for:

* ``module``: the model's own ``step()`` through every nn.Module (exact),
* ``torch``: :class:`apps.sashimi.stepper.FastStepper` with fused tensor ops (exact; precomputed DPLR terms),
* ``compile``: the same with each tier's block stack compiled by ``torch.compile`` (minutes of warm-up),
* ``native``: the C step of :mod:`apps.sashimi.native` (exact; the default of ``ssm sashimi generate`` on CPU),
  with the sampling in C too: many steps per call, each thread owning a slice of the batch,
* ``native-bf16``, ``native-int8``: the same with the linears' weights in bfloat16 or int8 (``--weights``;
  approximate: the log-likelihood of the generated tokens under the float32 step is printed beside it).

With ``--threads 2`` or more, batch 1 runs on two threads that share each step (see
:class:`apps.sashimi.native.NativeStepper`); larger batches are split across the threads.

``--profile`` instead prints where a native step's time goes (cycle counters of a ``-DSASHIMI_PROFILE``
build, per tier and part, share of the counted time).

Besides wall-clock samples/s it prints samples per CPU-second of this process, which is what a
loaded machine still measures fairly (with several threads it sums their CPU time).

    python benchmarks/generation.py [--threads 2] [--steps 512] [--modes module,torch,native,native-bf16,native-int8,compile]
    python benchmarks/generation.py --profile [--batches 1,16]
    python benchmarks/generation.py --modes native,native-int8 --cflags=-mno-avx512f   # 8-float vectors beside
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time
from typing import Any

import torch

from apps.sashimi.model import SaShiMi, shift_right
from apps.sashimi.sampling import sample_logits
from apps.sashimi.stepper import FastStepper, _ModuleRun


def _start(model: SaShiMi, mode: str, batch: int, device: str, threads: int, cflags: str = "") -> Any:
    """A warmed-up run of ``mode``; ``cflags``: extra compiler flags of a native variant build (e.g.
    ``-mno-avx512f``)."""
    state = model.default_state(batch, device)
    backend, _, weights = mode.partition("-")
    if mode == "module":
        run = _ModuleRun(model, state)
    elif backend == "native" and cflags:
        from apps.sashimi import native

        lib = native.build(tuple(cflags.split()))
        run = native.NativeStepper(model, threads, weights or "float32", lib=lib).start(state)
    else:
        run = FastStepper(model, backend=backend, threads=threads, weights=weights or "float32").start(state)
    run.g = torch.Generator(device=device).manual_seed(0)
    token = torch.full((batch,), 128, dtype=torch.long, device=device)
    with torch.no_grad():
        if hasattr(run, "generate"):
            run.generate(run.step(token), 16, 1.0, 1.0, run.g, step_last=True)
        else:
            for _ in range(48 if "compile" in mode else 16):  # whole frames (and compilation)
                token = sample_logits(run.step(token), 1.0, 1.0, run.g)
    run.token = token
    return run


def _time(run: Any, batch: int, steps: int, device: str) -> tuple[float, float]:
    """``(samples per wall second, samples per CPU second)`` of ``steps`` more steps of a started run."""
    with torch.no_grad():
        if hasattr(run, "generate"):  # native: sampling and stepping in C, as `ssm sashimi generate` runs it
            began, cpu = time.perf_counter(), time.process_time()
            run.generate(run.logits, steps, 1.0, 1.0, run.g, step_last=True)
            return batch * steps / (time.perf_counter() - began), batch * steps / (time.process_time() - cpu)
        if device == "cuda":
            torch.cuda.synchronize()
        began, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            run.token = sample_logits(run.step(run.token), 1.0, 1.0, run.g)
        if device == "cuda":
            torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - began), batch * steps / (time.process_time() - cpu)


def check_exact(model: SaShiMi, L: int = 64) -> float:
    """Relative error of fused stepping against the teacher-forced forward (float32)."""
    tokens = torch.randint(0, 256, (2, L))
    with torch.no_grad():
        full = model(shift_right(tokens, 128))[0]
        run = FastStepper(model).start(model.default_state(2))
        out = [run.step(torch.full((2,), 128))] + [run.step(tokens[:, t]) for t in range(L - 1)]
    return float((torch.stack(out, 1) - full).norm() / full.norm())


def profile(model: SaShiMi, batch: int, steps: int) -> None:
    """Print the share of a native step's counted cycles per tier and part (one thread)."""
    from apps.sashimi import native

    stepper = native.NativeStepper(model, 1)
    stepper.lib = native.build(("-DSASHIMI_PROFILE",))
    run = stepper.start(model.default_state(batch))
    g = torch.Generator().manual_seed(0)
    run.generate(run.step(torch.full((batch,), 128)), 64, 1.0, 1.0, g, step_last=True)
    counters = (ctypes.c_double * 64).in_dll(stepper.lib, "sashimi_prof")
    for i in range(64):
        counters[i] = 0.0
    cpu = time.process_time()
    run.generate(run.logits, steps, 1.0, 1.0, g, step_last=True)
    us = (time.process_time() - cpu) / (batch * steps) * 1e6
    total = sum(counters)
    parts = ["layer norm", "SSM recurrence", "GELU + GLU", "SSM output linear", "FF norm", "FF linears",
             "FF GELU + residual"]
    print(f"batch {batch}: {us:.1f} CPU-us per sample; share of counted time (load {os.getloadavg()[0]:.1f}):")
    for tier in range(3):
        row = [counters[tier * 8 + k] / total * 100 for k in range(7)]
        print(f"  tier {tier} ({sum(row):.1f}%): " + ", ".join(f"{n} {v:.1f}%" for n, v in zip(parts, row, strict=True)))
    print(f"  pooling linears {(counters[24] + counters[25]) / total * 100:.1f}%, final norm + decoder "
          f"{counters[28] / total * 100:.1f}%, sampling {counters[29] / total * 100:.1f}%")


def check_weights(model: SaShiMi, formats: list[str], L: int = 1024) -> dict[str, float]:
    """Per weight format ("bf16", "int8"): the largest per-sample difference of the log-likelihood of L
    float32-generated tokens (batch 2) between the native step in that format and the float32 one,
    teacher-forced (the tokens and the float32 log-likelihood are computed once for all formats)."""
    from apps.sashimi.native import NativeStepper

    def loglik(stepper: NativeStepper, tokens: torch.Tensor) -> torch.Tensor:
        r = stepper.start(model.default_state(2))
        logits, ll = r.step(torch.full((2,), 128)), torch.zeros(2, dtype=torch.float64)
        for t in range(L):
            ll += torch.log_softmax(logits.double(), -1).gather(-1, tokens[:, t:t + 1])[:, 0]
            logits = r.step(tokens[:, t])
        return ll

    exact = NativeStepper(model)
    run = exact.start(model.default_state(2))
    tokens, _ = run.generate(run.step(torch.full((2,), 128)), L, 1.0, 1.0, torch.Generator().manual_seed(0))
    reference = loglik(exact, tokens)
    return {w: float((loglik(NativeStepper(model, weights=w), tokens) - reference).abs().max()) / L for w in formats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=512)
    p.add_argument("--modes", default="module,torch,native,compile")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--cuda-batch", type=int, default=64)
    p.add_argument("--no-cpu", action="store_true", help="only the CUDA rows (benchmarks/gpu_tables.sh)")
    p.add_argument("--profile", action="store_true", help="where the native step's time goes, then exit")
    p.add_argument("--repeats", type=int, default=1, help="rounds over all configurations (medians printed)")
    p.add_argument("--cflags", default="", help="native modes only: also run a variant build with these extra "
                   "compiler flags, e.g. '-mno-avx512f' (8-float vectors), side by side")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SaShiMi().eval()
    print(f"# SaShiMi default ({sum(q.numel() for q in model.parameters()) / 1e6:.2f} M parameters), "
          f"torch {torch.__version__}, {args.threads} CPU threads, load average {os.getloadavg()[0]:.1f}")
    if args.profile:
        for batch in (int(b) for b in args.batches.split(",")):
            profile(model, batch, args.steps)
        return
    print(f"fused step vs forward, relative error (float32): {check_exact(model):.1e}")
    if args.no_cpu:
        args.batches, args.modes = "", ",".join(m for m in args.modes.split(",") if not m.startswith("native"))
    formats = [w for w in ("bf16", "int8") if f"native-{w}" in args.modes.split(",")]
    for weights, diff in check_weights(model, formats).items():
        print(f"{weights} weights: log-likelihood vs the float32 step, nats per sample: {diff:.1e}")
    print(f"| device | mode | batch | samples/s (wall{', median' if args.repeats > 1 else ''}) | x real time | "
          "samples per CPU-second | load |")
    print("|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",") if b):
        # every configuration of this batch started first, then timed in turn, `repeats` rounds (medians):
        # a ratio between two rows is measured side by side
        configs = [(m, f) for m in args.modes.split(",")
                   for f in [""] + ([args.cflags] if args.cflags and m.startswith("native") else [])]
        runs = {c: _start(model, c[0], batch, "cpu", args.threads, c[1]) for c in configs}
        rates: dict[tuple[str, str], list[tuple[float, float]]] = {c: [] for c in configs}
        for _ in range(args.repeats):
            for c in configs:
                steps = args.steps if c[0].startswith("native") or c[0] == "compile" else max(16, args.steps // 8)
                rates[c].append(_time(runs[c], batch, steps, "cpu"))
        for (mode, cflags), got in rates.items():
            rate, cpu_rate = (statistics.median(r[i] for r in got) for i in (0, 1))
            name = f"{mode} ({cflags})" if cflags else mode
            print(f"| cpu | {name} | {batch} | {rate:,.0f} | {rate / 16000:.3f} | {cpu_rate:,.0f} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)
    if torch.cuda.is_available():
        model = model.cuda()
        for mode in (m for m in args.modes.split(",") if m in ("module", "torch", "compile")):
            run = _start(model, mode, args.cuda_batch, "cuda", args.threads)
            rate, _ = _time(run, args.cuda_batch, args.steps, "cuda")
            print(f"| cuda | {mode} | {args.cuda_batch} | {rate:,.0f} | {rate / 16000:.2f} | | |", flush=True)


if __name__ == "__main__":
    main()
