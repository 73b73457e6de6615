"""``ssm synthetic robustness``: PTD's Fourier-mode noise study on sequential MNIST.

Yu, Nigmetov, Morozov, Mahoney, Erichson (2023), "Robustifying State-space Models for Long
Sequences via Approximate Diagonalization", Sec. 5: classifiers built on S4D (the diagonal
LegS approximation) and on S4-PTD (perturb-then-diagonalise), and likewise S5 and S5-PTD, are
trained on clean sequential MNIST and evaluated on test sequences with ``0.1 * a * cos(omega t)``,
``a ~ U[0, 1]``, added.  PTD's claim: its accuracy drops less under such noise, because the
diagonal system it uses converges to HiPPO-LegS's transfer function while S4D-LegS's does not
(S4D-LegS is only weakly close to LegS and amplifies some Fourier modes).

Writes ``robustness.csv``, ``robustness.md`` and ``robustness.png`` (accuracy against omega)
under ``--out``; never over an earlier study's (an ``--out`` holding them is refused, the default folder
becomes ``robustness-v2``, ...).
"""

from __future__ import annotations

import argparse
import math
import textwrap
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.lightning import runs_root
from apps.common.report import markdown_table, save_figure, write_csv, write_markdown
from apps.common.training import quick_trainer
from apps.synthetic.classifier import SequenceClassifier
from apps.synthetic.sequential_mnist import SequentialMNIST, fourier_noise
from apps.synthetic.suite import check_layers, parse_names, results_folder
from ssmcore.registry import LAYERS

DEFAULT_OMEGAS = "0.01,0.05,0.1,0.5,1.0,2.0,3.14"


def parse_omegas(text: str) -> list[float]:
    """``"0.1,1,3"`` -> ``[0.1, 1.0, 3.0]``; a :class:`UserError` for anything else."""
    try:
        omegas = [float(w) for w in text.split(",") if w.strip()]
    except ValueError as e:
        raise UserError(f"--omegas must be comma-separated numbers, got {text!r}") from e
    if not omegas:
        raise UserError("--omegas is empty")
    return omegas


def train_classifier(
    layer: str, data: SequentialMNIST, args: argparse.Namespace, run_dir: Path
) -> SequenceClassifier:
    """Train a mean-pooled classifier with ``layer`` on clean sequences for ``args.epochs`` epochs."""
    pl.seed_everything(args.seed, verbose=False)
    model = SequenceClassifier(
        d_input=1,
        n_classes=10,
        d_model=args.d_model,
        n_layers=args.n_layers,
        layer={"name": layer, "d_state": args.d_state},
        optim={"lr": args.lr, "ssm_lr": args.ssm_lr},
    )
    trainer = quick_trainer(run_dir, layer, args.accelerator, max_epochs=args.epochs, max_steps=args.max_steps)
    trainer.fit(model, datamodule=data)
    return model


def evaluate(
    model: SequenceClassifier, data: SequentialMNIST, omegas: list[float], amplitude: float, seed: int
) -> dict[str, float]:
    """Test accuracy clean (``"clean"``) and under Fourier-mode noise at each omega (keyed ``str(omega)``)."""
    x, y = data.splits["test"].tensors
    result = {"clean": model.accuracy(x, y)}
    for omega in omegas:
        noisy = fourier_noise(x, omega, amplitude, torch.Generator().manual_seed(seed))
        result[str(omega)] = model.accuracy(noisy, y)
    return result


def write_outputs(rows: list[dict], omegas: list[float], out: Path, title: str) -> list[Path]:
    """``robustness.csv`` / ``.md`` (one row per layer) and ``robustness.png`` (accuracy vs omega)."""
    keys = [str(w) for w in omegas]
    table = [[r["layer"], f"{r['clean']:.4f}", *[f"{r[k]:.4f}" for k in keys], f"{r['worst_drop']:.4f}"] for r in rows]
    fields = ["layer", "clean", *[f"omega={k}" for k in keys], "worst_drop", "seconds"]
    paths = [write_csv(out / "robustness.csv", fields, [[*t, r["seconds"]] for t, r in zip(table, rows)])]
    lines = [
        f"# {title}",
        "",
        "Test accuracy, clean and with 0.1 * U[0,1] * cos(omega t) added; worst drop = "
        "clean minus the lowest noisy accuracy.",
        "",
        *markdown_table(["layer", "clean", *[f"ω={k}" for k in keys], "worst drop"], table),
    ]
    paths.append(write_markdown(out / "robustness.md", lines))
    paths.append(plot_accuracy(rows, omegas, out / "robustness.png", title))
    return paths


def plot_accuracy(rows: list[dict], omegas: list[float], path: Path, title: str) -> Path:
    """Accuracy against omega (log axis), one line per layer, its clean accuracy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, r in enumerate(rows):
        color = f"C{i}"
        ax.plot(omegas, [r[str(w)] for w in omegas], "o-", color=color, label=r["layer"])
        ax.axhline(r["clean"], color=color, linestyle="--", linewidth=0.8)
    if all(w > 0 for w in omegas):
        ax.set_xscale("log")
    ax.set_xlabel("omega (noise frequency, radians per step)")
    ax.set_ylabel("test accuracy")
    ax.set_title(textwrap.fill(title, 80), fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``ssm synthetic robustness``."""
    p = argparse.ArgumentParser(
        prog="ssm synthetic robustness",
        description="Train S4D / S4-PTD / S5 / S5-PTD on sequential MNIST-5k; evaluate "
        "clean and under Fourier-mode input noise.",
    )
    p.add_argument(
        "--layers",
        default="s4d,s4_ptd,s5,s5_ptd",
        help="comma-separated layers (default s4d,s4_ptd,s5,s5_ptd)",
    )
    p.add_argument("--omegas", default=DEFAULT_OMEGAS, help=f"noise frequencies (default {DEFAULT_OMEGAS})")
    p.add_argument("--amplitude", type=float, default=0.1, help="noise amplitude (default 0.1, the paper's)")
    p.add_argument(
        "--downsample",
        type=int,
        default=1,
        help="average-pool the 28x28 digits by this factor first (1: 784 steps; 2: 196; 4: 49)",
    )
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (default: no limit)")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument(
        "--d-state",
        type=int,
        default=16,
        help="state size N (PTD needs a shipped ssmcore/data/ptd_N{N}.npz; default 16)",
    )
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ssm-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--accelerator", default="auto")
    p.add_argument(
        "--out", default=None, help="output folder, new or without results (default "
        "$SSM_RUNS/synthetic/robustness, SSM_RUNS=runs, or robustness-v2, ... when it holds an earlier study's)"
    )
    return p


def check_numbers(args: argparse.Namespace) -> None:
    """One line for a count below 1 (``--max-steps`` -1 means no limit) or a non-finite / non-positive rate."""
    for name in ("epochs", "train_size", "val_size", "batch_size", "d_model", "n_layers", "d_state", "downsample"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.max_steps < -1 or args.max_steps == 0:
        raise UserError(f"--max-steps must be -1 (no limit) or at least 1, got {args.max_steps}")
    for name in ("lr", "ssm_lr", "amplitude"):
        value = getattr(args, name)
        if not 0 <= value < math.inf or (name != "amplitude" and value == 0):
            raise UserError(f"--{name.replace('_', '-')} must be a finite positive number, got {value}")


def robustness(argv: list[str]) -> None:
    """``ssm synthetic robustness [--layers ...] [--omegas ...] [--downsample 1] [--epochs 5] [--out DIR]``.

    Trains each layer's classifier, evaluates it clean and noisy, and writes the table and plot.
    """
    args = build_parser().parse_args(argv)
    check_numbers(args)
    layers = parse_names(args.layers, sorted(LAYERS), "layer", "--layers")
    omegas = parse_omegas(args.omegas)
    check_layers(layers)
    out = results_folder(args.out, runs_root() / "synthetic" / "robustness", "robustness.csv")
    data = SequentialMNIST(
        downsample=args.downsample,
        train_size=args.train_size,
        val_size=args.val_size,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    data.setup()
    steps = 784 // args.downsample**2
    title = (
        f"sequential MNIST-5k ({steps} steps), {args.epochs} epochs, d_model={args.d_model}, "
        f"d_state={args.d_state}, noise {args.amplitude}*U[0,1]*cos(omega t)"
    )
    rows: list[dict] = []
    for i, layer in enumerate(layers):
        print(f"[{i + 1}/{len(layers)}] training {layer} on {steps}-step sequences", flush=True)
        start = time.time()
        model = train_classifier(layer, data, args, out / "logs")
        seconds = round(time.time() - start, 1)
        acc = evaluate(model, data, omegas, args.amplitude, args.seed)
        worst = acc["clean"] - min(acc[str(w)] for w in omegas)
        rows.append({"layer": layer, **acc, "worst_drop": worst, "seconds": seconds})
        print(f"  clean {acc['clean']:.4f}, worst drop {worst:.4f} ({seconds} s)", flush=True)
        paths = write_outputs(rows, omegas, out, title)
    print("robustness done; wrote:")
    for path in paths:
        print(f"  {path}")
