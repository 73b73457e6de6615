"""Forward+backward time and peak memory of every layer against the FFT-convolution floor.

The floor is what any convolutional SSM layer must do anyway: the causal FFT convolution of
(B, L, H) input with a fixed precomputed kernel, plus the GLU output projection.  Each layer
is reported as a ratio to the floor measured in the same run (these machines are noisy).
Every (layer, L) runs in its own process, so its peak RSS is its own.

    python benchmarks/layers.py                       # B=8, H=256, N=64, L = 1K 4K 16K 64K
    python benchmarks/layers.py --lengths 1024,4096 --layers s4d,s4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch

DEFAULT_LAYERS = "floor,s4d,dss,s4,s5,dlr,ema,mega,gss,sgconv,liquid_s4,ccnn,floor2d,s4nd,ccnn2d"
LAYER_OPTIONS = {
    "s4d": dict(d_state=64),
    "dss": dict(d_state=64),
    "s4": dict(d_state=64),
    "s5": dict(d_state=256),
    "dlr": dict(d_state=1024),
    "s4nd": dict(d_state=64, dim=2),
    "sgconv": dict(d_state=64),  # d = 64 taps per scale, l_max = 16384: S = 9 scales, 576 parameters per feature
    "gss": dict(d_state=64),  # expand 3 (F = 768), SSM width 64 (DSS-exp, N = 64), linear W4: the paper's block
    "ema": dict(d_state=16),  # Mega's expansion dimension
    "mega": dict(d_state=16, chunk_size=128),  # qk_dim 64, values 2H
    "liquid_s4": dict(d_state=64, liquid_degree=2),
    "ccnn": dict(d_state=32),
    "ccnn2d": dict(d_state=32, dim=2),
}
#: rows that run a registered layer under another name (its options above)
ALIASES = {"ccnn2d": "ccnn"}
#: 2-D rows, measured on a sqrt(L) x sqrt(L) grid against floor2d
TWO_D = ("s4nd", "ccnn2d")


class Floor(torch.nn.Module):
    """FFT convolution with a fixed kernel + GLU projection: the work every conv layer must do."""

    def __init__(self, H: int, L: int, dim: int = 1) -> None:
        super().__init__()
        from ssmcore.fftconv import fftconv, fftconv_nd

        self.dim, self.conv = dim, (fftconv if dim == 1 else fftconv_nd)
        shape = (1, H, L) if dim == 1 else (1, H, *[2 * s for s in _square(L)])
        self.register_buffer("k", torch.randn(shape) / L)
        self.output = torch.nn.Sequential(torch.nn.Linear(H, 2 * H), torch.nn.GLU(dim=-1))

    def forward(self, x: torch.Tensor):
        u = x.movedim(-1, 1)  # (B, H, *S)
        y = self.conv(u, self.k)[:, 0].movedim(1, -1)  # (B, *S, H)
        return self.output(y), None


def _square(L: int) -> tuple[int, int]:
    side = int(math.isqrt(L))
    return side, side


def build(name: str, H: int, L: int) -> tuple[torch.nn.Module, tuple[int, ...]]:
    if name == "floor":
        return Floor(H, L), (L,)
    if name == "floor2d":
        return Floor(H, L, dim=2), _square(L)
    from ssmcore import make_layer

    layer = make_layer(ALIASES.get(name, name), d_model=H, **LAYER_OPTIONS.get(name, {}))
    return layer, (_square(L) if name in TWO_D else (L,))


def worker(name: str, B: int, H: int, L: int, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model, spatial = build(name, H, L)
    model = model.to(device)
    x = torch.randn(B, *spatial, H, device=device, requires_grad=True)

    def run() -> None:
        y, _ = model(x)
        y.float().sum().backward()

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    run()  # warm-up (allocator, FFT plans, lazy buffers)
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, cpu = [], []
    for _ in range(repeats):
        x.grad = None
        model.zero_grad(set_to_none=True)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"layer": name, "L": L, "time_s": min(times), "cpu_s": min(cpu), "peak_gib": peak}


def measure(name: str, args: argparse.Namespace, L: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--lengths", str(L), "--batch", str(args.batch),
           "--d_model", str(args.d_model), "--device", args.device, "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["killed"])[-1]
        return {"layer": name, "L": L, "error": reason[:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default=DEFAULT_LAYERS)
    p.add_argument("--lengths", default="1024,4096,16384,65536")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d_model", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.d_model, lengths[0], args.device, args.repeats)))
        return
    names = args.layers.split(",")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"# forward+backward, B={args.batch}, H={args.d_model}, device: {device}, torch {torch.__version__}")
    print("# time: wall clock, fastest of the repeats; CPU: process time of that pass (all threads), which")
    print("# a busy shared machine inflates less; load: 1-minute load average when the row was measured")
    print("| layer | L | time (s) | x floor | CPU (s) | x floor | peak mem (GiB) | x floor | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for L in lengths:
        floors = {}
        for name in names:
            r = measure(name, args, L)
            if "error" in r:
                print(f"| {name} | {L} | failed: {r['error']} | | | | | | |", flush=True)
                continue
            if name.startswith("floor"):
                floors[name] = r
            ref = floors.get("floor2d" if name in TWO_D else "floor")
            tr = f"{r['time_s'] / ref['time_s']:.2f}" if ref else ""
            cr = f"{r['cpu_s'] / ref['cpu_s']:.2f}" if ref else ""
            mr = f"{r['peak_gib'] / ref['peak_gib']:.2f}" if ref else ""
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(
                f"| {name} | {L} | {r['time_s']:.3f} | {tr} | {r['cpu_s']:.2f} | {cr} | {r['peak_gib']:.2f} | {mr} "
                f"| {load:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
