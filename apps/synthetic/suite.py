"""``ssm synthetic suite``: train every task x layer pair on a step budget and tabulate R^2.

Writes ``results.csv``, ``results.md`` (tasks as rows, layers as columns, validation R^2) and
``heatmap.png`` under ``--out``; the tables are rewritten after every run, so a long suite can
be inspected while it runs and an interrupted one keeps what it finished.  An earlier suite's tables are never
overwritten: an ``--out`` that holds them is refused, and the default folder becomes ``suite-v2``, ...
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.layers import LayerSpec, layer_spec
from apps.common.report import markdown_table, save_figure, write_csv, write_markdown
from apps.common.runs import next_free, runs_root
from apps.common.training import quick_trainer
from apps.synthetic.data import SyntheticData
from apps.synthetic.module import SyntheticModule
from apps.synthetic.tasks import TASKS
from ssmcore.registry import LAYERS, layer_names

#: the suite's default layer options: a linear SSM (no activation, linear output) whose step covers a
#: kernel of a few hundred steps; the model's feed-forward blocks supply the nonlinearity
SUITE_LAYER_DEFAULTS = {"activation": None, "postact": "linear", "dt_min": 0.002, "dt_max": 0.02}


def suite_layer_spec(layer: str, d_state: int, extra: dict) -> LayerSpec:
    """The checked spec of ``layer``: ``d_state``, the :data:`SUITE_LAYER_DEFAULTS`, then the user's ``extra``."""
    return layer_spec({"name": layer, "d_state": d_state, **SUITE_LAYER_DEFAULTS, **extra}, key="--layer-kwargs")


def parse_names(text: str, valid: list[str], what: str, flag: str) -> list[str]:
    """Split a comma list and check every name against ``valid`` (a :class:`UserError` otherwise)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"{flag} is empty; choose from {', '.join(valid)}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UserError(f"unknown {what} {', '.join(unknown)} in {flag}; choose from {', '.join(valid)}")
    return names


def check_layers(names: list[str], flag: str = "--layers") -> None:
    """Every name must be registered and importable (a missing layer module is named in the error)."""
    parse_names(",".join(names), sorted(LAYERS), "layer", flag)
    present = layer_names()
    missing = [n for n in names if n not in present]
    if missing:
        raise UserError(
            f"layer {', '.join(missing)} is registered but not importable in this install "
            f"({', '.join(LAYERS[n].split(':')[0] for n in missing)}); available: {', '.join(present)}"
        )


def train_one(task: str, layer: str, args: argparse.Namespace, run_dir: Path) -> dict:
    """Train ``layer`` on ``task`` for ``args.steps`` steps; return a result row (final validation R^2)."""
    pl.seed_everything(args.seed, verbose=False)
    evals = max(1, min(args.evals, args.steps))
    data = SyntheticData(
        task=task,
        length=args.length,
        num_shifts=args.num_shifts,
        n_select=args.n_select,
        mips_dim=args.mips_dim,
        batch_size=args.batch_size,
        steps_per_epoch=max(1, args.steps // evals),
        val_size=args.val_size,
        seed=args.seed,
    )
    model = SyntheticModule(
        task=task,
        num_shifts=args.num_shifts,
        mips_dim=args.mips_dim,
        d_model=args.d_model,
        n_layers=args.n_layers,
        layer=suite_layer_spec(layer, args.d_state, args.layer_kwargs),
        ff_expand=args.ff_expand,
        norm=args.norm,
        optim={"lr": args.lr, "ssm_lr": args.ssm_lr, "warmup_steps": min(args.steps // 10, 100)},
    )
    trainer = quick_trainer(run_dir, f"{task}-{layer}", args.accelerator, max_steps=args.steps, max_epochs=-1)
    start = time.time()
    trainer.fit(model, datamodule=data)
    train_s = time.time() - start
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    return {
        "task": task,
        "label": TASKS[task].label,
        "layer": layer,
        "r2": float(metrics["val/r2"]),
        "position_r2": position_baseline_r2(data.val_set.tensors[1]),
        "mse": float(metrics["val/loss"]),
        "steps": int(trainer.global_step),
        "length": args.length,
        "seconds": round(train_s, 1),
    }


def position_baseline_r2(y: torch.Tensor) -> float:
    """R^2 of the best input-blind predictor, the per-position mean of the targets ``y`` (N, L_out, d_out).

    Where the target depends on the position more than on the input (Sort: the k-th smallest of L
    values is close to the k-th quantile), R^2 is high even for a model that ignores the input; this
    baseline says how much of a layer's R^2 is such free credit.
    """
    y = y.double()
    sse = (y - y.mean(dim=0, keepdim=True)).pow(2).sum()
    sst = (y - y.mean()).pow(2).sum().clamp_min(1e-12)
    return float(1 - sse / sst)


def write_results(rows: list[dict], tasks: list[str], layers: list[str], out: Path, title: str) -> list[Path]:
    """Write ``results.csv``, ``results.md`` and ``heatmap.png`` (atomically); return their paths."""
    fields = ["task", "label", "layer", "r2", "position_r2", "mse", "steps", "length", "seconds"]
    paths = [write_csv(out / "results.csv", fields, [[r.get(f, "") for f in fields] for r in rows])]
    grid = {(r["task"], r["layer"]): r["r2"] for r in rows}
    baseline = {r["task"]: r["position_r2"] for r in rows if "position_r2" in r}
    table = []
    for t in tasks:
        cells = [f"{grid[(t, la)]:.4f}" if (t, la) in grid else "" for la in layers]
        cells.append(f"{baseline[t]:.4f}" if t in baseline else "")
        table.append([TASKS[t].label, *cells])
    lines = [
        f"# {title}",
        "",
        "Validation R^2 (1 is perfect, 0 is predicting the mean).  `position only` is the R^2 of the",
        "per-position mean target, which ignores the input: a layer's R^2 counts only above it.",
        "",
        *markdown_table(["task", *layers, "position only"], table),
    ]
    paths.append(write_markdown(out / "results.md", lines))
    paths.append(plot_heatmap(grid, tasks, layers, out / "heatmap.png", title))
    return paths


def plot_heatmap(grid: dict, tasks: list[str], layers: list[str], path: Path, title: str) -> Path:
    """A tasks x layers heat map of R^2 (clipped to [0, 1] for colour; the number is printed as is)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = torch.full((len(tasks), len(layers)), float("nan"))
    for i, t in enumerate(tasks):
        for j, la in enumerate(layers):
            if (t, la) in grid:
                values[i, j] = grid[(t, la)]
    fig, ax = plt.subplots(figsize=(max(5.0, 2.6 + 1.3 * len(layers)), 1.4 + 0.45 * len(tasks)))
    image = ax.imshow(values.clamp(0, 1).numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(tasks)), [TASKS[t].label for t in tasks])
    for i in range(len(tasks)):
        for j in range(len(layers)):
            v = float(values[i, j])
            if v == v:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="R^2")
    ax.set_title(textwrap.fill(title, 48), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``ssm synthetic suite``."""
    p = argparse.ArgumentParser(
        prog="ssm synthetic suite",
        description="Train every task x layer pair of DLR's synthetic suite; tabulate R^2.",
    )
    p.add_argument("--layers", default="s4d,s5,dlr", help="comma-separated layer names (default s4d,s5,dlr)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: all eleven)")
    p.add_argument("--length", type=int, default=512, help="task length L (default 512)")
    p.add_argument("--steps", type=int, default=500, help="training steps per run (default 500)")
    p.add_argument("--evals", type=int, default=5, help="validations during a run (default 5)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--val-size", type=int, default=128)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--d-state", type=int, default=256)
    p.add_argument("--ff-expand", type=int, default=2)
    p.add_argument(
        "--norm",
        default="batch",
        choices=("layer", "batch", "none"),
        help="block norm (default batch: affine at evaluation, so linear layers stay linear)",
    )
    p.add_argument(
        "--layer-kwargs",
        type=json.loads,
        default={},
        help=f"layer options as JSON over the defaults {json.dumps(SUITE_LAYER_DEFAULTS)}, "
        'e.g. \'{"init": "lin"}\'',
    )
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--ssm-lr", type=float, default=1e-2)
    p.add_argument("--num-shifts", type=int, default=8)
    p.add_argument("--n-select", type=int, default=32)
    p.add_argument("--mips-dim", type=int, default=4)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--accelerator", default="auto")
    p.add_argument(
        "--out", default=None, help="output folder, new or without results (default $SSM_RUNS/synthetic/suite, "
        "SSM_RUNS=runs, or suite-v2, ... when it holds an earlier suite's)"
    )
    return p


def results_folder(out: str | None, default: Path, table: str) -> Path:
    """Where a study writes its tables: ``--out`` unless it already holds ``table`` from an earlier study
    (refused: nothing is overwritten); by default ``default``, or the first ``default-vN`` (N >= 2) without one."""
    if out:
        folder = Path(out)
        if (folder / table).exists():
            raise UserError(f"--out {folder} already holds the results of an earlier study ({table}); choose a new "
                            "folder (results are never overwritten)")
        return folder
    folder = next_free(default, lambda f: (f / table).exists())
    if folder != default:
        print(f"note: {default} holds an earlier study, kept as it is; this one writes under {folder}", flush=True)
    return folder


def check_suite_numbers(args: argparse.Namespace) -> None:
    """One line for a size or count below its minimum, or a learning rate that is not a finite positive number
    (they surfaced as tensor errors, some after the training: --d-model -1, --val-size 0)."""
    if args.steps < 1 or args.length < 8:
        raise UserError(f"--steps must be >= 1 and --length >= 8, got {args.steps} and {args.length}")
    minimum = {"evals": 1, "batch_size": 1, "val_size": 1, "d_model": 1, "n_layers": 1, "d_state": 1,
               "ff_expand": 0, "n_select": 1, "mips_dim": 1}
    for name, least in minimum.items():
        value = getattr(args, name)
        if value < least:
            raise UserError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    for name in ("lr", "ssm_lr"):
        value = getattr(args, name)
        if not 0 < value < math.inf:
            raise UserError(f"--{name.replace('_', '-')} must be a finite positive number, got {value}")


def suite(argv: list[str]) -> None:
    """``ssm synthetic suite [--layers s4d,s5,dlr] [--tasks ...] [--length 512] [--steps 500] [--out DIR]``.

    Trains every task x layer pair and writes ``results.md``, ``results.csv`` and ``heatmap.png``.
    """
    args = build_parser().parse_args(argv)
    layers = parse_names(args.layers, sorted(LAYERS), "layer", "--layers")
    tasks = parse_names(args.tasks, list(TASKS), "task", "--tasks")
    check_layers(layers)
    check_suite_numbers(args)
    out = results_folder(args.out, runs_root() / "synthetic" / "suite", "results.csv")
    title = (
        f"DLR synthetic suite, L={args.length}, {args.steps} steps, "
        f"d_model={args.d_model}, d_state={args.d_state}"
    )
    rows: list[dict] = []
    for task in tasks:
        for layer in layers:
            print(
                f"[{len(rows) + 1}/{len(tasks) * len(layers)}] {TASKS[task].label} with {layer}", flush=True
            )
            rows.append(train_one(task, layer, args, out / "logs"))
            print(f"  R^2 = {rows[-1]['r2']:.4f} ({rows[-1]['seconds']} s)", flush=True)
            paths = write_results(rows, tasks, layers, out, title)
    print("suite done; wrote:")
    for path in paths:
        print(f"  {path}")
