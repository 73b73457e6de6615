"""Time one training step (forward + backward + AdamW) of a classifier recipe's model on random input,
and list the costliest operators: where an epoch's time goes, without the data loader.

    python benchmarks/train_step.py recipes/speech/sc35_s4.yaml --length 16000 --batch 16
    python benchmarks/train_step.py recipes/speech/sc35_s4.yaml --layer s4d --profile
    python benchmarks/train_step.py recipes/speech/sc10_s4d_cpu.yaml --batch 8 --threads 2 --compile both

``--compile both`` times the eager model, then the same model after ``nn.Module.compile()`` (inductor;
its warm-up steps include the compilation), in one run.

Prints milliseconds per step (median of ``--steps`` after warm-up) on CUDA when present, else CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import yaml

from apps.speech.model import SpeechNet
from apps.speech.module import SpeechClassifier


def build(recipe: str, layer: str | None) -> SpeechNet:
    """The recipe's network, built by the classifier it names (optionally with another SSM layer)."""
    args = dict(yaml.safe_load(open(recipe))["model"])
    if layer:
        args["layer"] = {**args.get("layer", {}), "name": layer}
    return SpeechClassifier(**args).net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--layer", help="replace the recipe's SSM layer")
    p.add_argument("--length", type=int, default=16000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--profile", action="store_true", help="also print the top operators (torch.profiler)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", choices=("no", "yes", "both"), default="no",
                   help="torch.compile the network (both: eager first, then compiled, same run)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    net = build(a.recipe, a.layer).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(a.batch, a.length, 1, device=device)
    y = torch.randint(0, net.head.out_features, (a.batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def median_ms() -> tuple[float, float]:
        """(median ms per step after 3 warm-up steps, seconds of the warm-up)."""
        t0 = time.perf_counter()
        for _ in range(3):
            step()
        sync()
        warm = time.perf_counter() - t0
        times = []
        for _ in range(a.steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times), warm

    model = yaml.safe_load(open(a.recipe))["model"]
    layer = a.layer or model.get("init_args", model).get("layer")
    params = sum(p.numel() for p in net.parameters())
    modes = {"no": ["eager"], "yes": ["compiled"], "both": ["eager", "compiled"]}[a.compile]
    for mode in modes:
        if mode == "compiled":
            net.compile()
        ms, warm = median_ms()
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        print(f"{a.recipe} layer={layer} B={a.batch} L={a.length} params={params:,} device={device} "
              f"threads={torch.get_num_threads()} {mode}: {ms:.1f} ms/step (median of {a.steps}; warm-up "
              f"{warm:.1f} s), peak {mem:.2f} GiB", flush=True)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                step()
            sync()
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
