"""Throughput and memory of the S4ND image backbone against its Conv2D baseline (``ssm s4nd``).

Both networks are the ones of ``recipes/s4nd/mnist_s4nd.yaml`` and ``mnist_conv2d.yaml`` (isotropic,
pixel stem, width 32, 3 blocks, d_state 16; the baseline's depthwise 11x11 convolutions have the same
parameter count).  Reported per resolution: training throughput (forward, backward and AdamW step) and
evaluation throughput (forward under ``no_grad``) in images per second, and the extra peak memory of
one training step (peak RSS on CPU, peak allocated on CUDA).  Every (model, resolution) runs in its
own process, so its peak memory is its own.  These machines are shared: take the ratios, not the
absolute numbers.

    python benchmarks/s4nd.py                                  # 28 and 64, memory at 16..128, CPU
    python benchmarks/s4nd.py --resolutions 28,64 --memory 16,32,64,128 --batch 32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

MODEL = dict(d_model=32, n_layers=3)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(mixer: str, resolution: int, batch: int, device: str, repeats: int, train_only: bool) -> dict:
    from apps.s4nd.model import IsotropicNet, count_parameters

    torch.manual_seed(0)
    model = IsotropicNet(1, 10, train_resolution=14, layer={"name": mixer, "d_state": 16}, **MODEL).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, resolution, resolution, 1, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def train_step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.no_grad():
            model(x)

    def best_time(step) -> float:
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        return min(times)

    optimizer.zero_grad(set_to_none=True)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _rss_mib()
    train_step()  # also the warm-up (allocator, FFT plans, optimizer state)
    sync()
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB -> MiB
    result = {"mixer": mixer, "resolution": resolution, "params": count_parameters(model),
              "train_mem_mib": peak - before}
    if not train_only:
        result["train_ips"] = batch / best_time(train_step)
        eval_step()
        result["eval_ips"] = batch / best_time(eval_step)
    return result


def measure(mixer: str, resolution: int, args: argparse.Namespace, train_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", mixer, "--resolutions", str(resolution), "--batch", str(args.batch),
           "--device", args.device, "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if train_only:
        cmd.append("--train-only")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["killed"])[-1]
        return {"mixer": mixer, "resolution": resolution, "error": reason[:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", default="28,64", help="sides for the throughput table")
    p.add_argument("--memory", default="16,32,64,128", help="sides for the memory-scaling table ('' skips it)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 on shared machines)")
    p.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sides = [int(v) for v in args.resolutions.split(",") if v]
    if args.worker:
        result = worker(args.worker, sides[0], args.batch, args.device, args.repeats, args.train_only)
        print(json.dumps(result))
        return
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} thread(s)"
    print(f"# S4ND-ISO vs Conv2D baseline ({MODEL}), batch {args.batch}, {device}, torch {torch.__version__}")
    print("| model | resolution | params | train (img/s) | eval (img/s) | train-step memory (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for side in sides:
        for mixer in ("s4nd", "conv2d"):
            r = measure(mixer, side, args)
            if "error" in r:
                print(f"| {mixer} | {side} | failed: {r['error']} | | | |", flush=True)
                continue
            print(f"| {mixer} | {side}x{side} | {r['params']} | {r['train_ips']:.1f} | {r['eval_ips']:.1f} | "
                  f"{r['train_mem_mib']:.0f} |", flush=True)
    memory_sides = [int(v) for v in args.memory.split(",") if v]
    if not memory_sides:
        return
    print()
    print(f"# memory of one training step against H x W (batch {args.batch}); ratio to the smallest side")
    print("| model | " + " | ".join(f"{s}x{s}" for s in memory_sides) + " |")
    print("|---|" + "---:|" * len(memory_sides))
    for mixer in ("s4nd", "conv2d"):
        cells, first = [], None
        for side in memory_sides:
            r = measure(mixer, side, args, train_only=True)
            if "error" in r:
                cells.append("failed")
                continue
            first = first or r["train_mem_mib"]
            cells.append(f"{r['train_mem_mib']:.0f} MiB (x{r['train_mem_mib'] / first:.1f})")
        print(f"| {mixer} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
