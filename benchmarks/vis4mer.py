"""ViS4mer's efficiency claim, measured: the same decoder with S4 layers vs self-attention.

Islam & Bertasius (2022) report that their multi-scale S4 decoder is 2.63x faster and uses 8x
less GPU memory than the same model built on self-attention, at 60 s x 197 tokens = 11,820
tokens, d = 1024.  Here :class:`apps.vis4mer.model.ViS4merDecoder` is built twice, ``mixer:
ssm`` (S4, d_state 64) and ``mixer: attention`` (8-head self-attention through torch's
``scaled_dot_product_attention``, which dispatches to a fused flash / memory-efficient kernel),
and one forward+backward at batch 1 is timed (wall clock, and the process's CPU time, which a
busy machine disturbs less).  Every (mixer, L) runs in its own process; peak
memory is the process's peak RSS growth over its state right before the first step (CPU) or
``torch.cuda.max_memory_allocated`` (GPU).

    python benchmarks/vis4mer.py                            # CPU: L = 2955, 5910, 11820
    python benchmarks/vis4mer.py --device cuda --lengths 11820
    python benchmarks/vis4mer.py --lengths 2955,5910 --attention-backend math   # explicit L x L attention
    python benchmarks/vis4mer.py --layer s4d                                   # S4D in place of S4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def worker(mixer: str, L: int, d_model: int, device: str, repeats: int, backend: str = "auto",
           layer: str = "s4") -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from apps.vis4mer.model import ViS4merDecoder

    torch.manual_seed(0)
    model = ViS4merDecoder(d_input=d_model, num_outputs=10, d_model=d_model, n_stages=3,
                           layer={"name": layer, "d_state": 64}, dropout=0.0, mixer=mixer).to(device)
    x = torch.randn(1, L, d_model, device=device)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()

    # math: the explicit (L, L) attention matrix, as attention was computed in 2022
    backends = sdpa_kernel(SDPBackend.MATH) if backend == "math" else contextlib.nullcontext()
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times = [], []
    with backends:
        for i in range(repeats + 1):  # the first is a warm-up (allocator, FFT plans, S4's lazy buffers)
            model.zero_grad(set_to_none=True)
            if i == 1 and device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            sync()
            if i:
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib) / 2**20  # KiB -> GiB
    return {"mixer": mixer, "L": L, "time_s": min(times), "cpu_s": min(cpu_times), "peak_gib": peak,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def measure(mixer: str, L: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mixer, "--lengths", str(L), "--d_model", str(args.d_model),
           "--device", args.device, "--repeats", str(args.repeats), "--attention-backend", args.attention_backend,
           "--layer", args.layer]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        return {"mixer": mixer, "L": L, "error": reason[:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="2955,5910,11820")
    p.add_argument("--d_model", type=int, default=1024)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--attention-backend", choices=["auto", "math"], default="auto",
                   help="auto: torch picks a fused kernel (flash / memory-efficient); math: explicit L x L matrix")
    p.add_argument("--layer", default="s4", help="the SSM layer (any ssmcore registry name; ViS4mer: s4)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, lengths[0], args.d_model, args.device, args.repeats,
                                args.attention_backend, args.layer)))
        return
    device = (torch.cuda.get_device_name() if args.device.startswith("cuda")
              else f"CPU, {torch.get_num_threads()} threads")
    print(f"# ViS4mer decoder forward+backward, batch 1, d={args.d_model}, 3 stages; device: {device}, "
          f"torch {torch.__version__}, attention backend: {args.attention_backend}, SSM: {args.layer}")
    print("| tokens L | SSM time (s) | attention time (s) | attn / SSM time | SSM CPU (s) | attention CPU (s) "
          "| attn / SSM CPU | SSM peak (GiB) | attention peak (GiB) | attn / SSM memory |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for L in lengths:
        s4, attn = measure("ssm", L, args), measure("attention", L, args)
        if "error" in s4 or "error" in attn:
            print(f"| {L} | {s4.get('time_s', s4.get('error'))} | {attn.get('time_s', attn.get('error'))} "
                  f"| | | | | | | |", flush=True)
            continue
        print(f"| {L} | {s4['time_s']:.2f} | {attn['time_s']:.2f} | {attn['time_s'] / s4['time_s']:.2f} "
              f"| {s4['cpu_s']:.2f} | {attn['cpu_s']:.2f} | {attn['cpu_s'] / s4['cpu_s']:.2f} "
              f"| {s4['peak_gib']:.2f} | {attn['peak_gib']:.2f} | {attn['peak_gib'] / max(s4['peak_gib'], 1e-9):.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
