"""``ssm s4nd zero-shot``: evaluate one checkpoint at many resolutions without fine-tuning.

S4ND (Nguyen, Goel, Gu et al. 2022, Sec. 5.3) runs a model trained at one resolution on another
by rescaling its step size; a Conv2D model just slides its kernels over the larger grid.  This
verb evaluates a checkpoint (and optionally a Conv2D baseline's) on the test split resized to each
resolution (antialiased bilinear) and writes a markdown table, a CSV and a PNG plot of accuracy
against resolution.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.progress import Progress

from apps.common.checkpoint import datamodule_options, load_module
from apps.common.cli import positive_int
from apps.common.errors import UserError
from apps.common.report import markdown_table, save_figure, write_csv, write_markdown
from apps.common.runs import beside_checkpoint
from apps.s4nd.data import ImageData
from apps.s4nd.module import ImageClassifier

MIXER_NAMES = {"s4nd": "S4ND", "ccnn": "CCNN", "conv2d": "Conv2D"}


def _parse_resolutions(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"--resolutions needs comma-separated positive sizes such as 7,14,28,56, got {text!r}")
    return sorted(set(values))


def load_classifier(path: Path) -> tuple[ImageClassifier, dict]:
    """The model of a fit checkpoint and the data options saved with it."""
    if not path.exists():  # a .ckpt file or a save_pretrained folder
        raise UserError(f"checkpoint not found: {path} (train one with `ssm s4nd fit -c recipes/s4nd/<recipe>.yaml`)")
    model, blob = load_module(path, ImageClassifier, kind="an s4nd", check=lambda blob: None if blob[
        "hyper_parameters"].get("backbone") is not None else "no model.backbone in its hyper-parameters")
    return model, datamodule_options(blob)


@torch.no_grad()
def accuracy_by_resolution(model: ImageClassifier, loader, resolutions: list[int], label: str) -> dict[int, float]:
    """Accuracy of ``model`` on ``loader`` at every resolution, with a progress bar."""
    correct = dict.fromkeys(resolutions, 0)
    total = 0
    with Progress(transient=True) as progress:
        task = progress.add_task(f"{label}: {len(resolutions)} resolutions", total=len(loader))
        for images, labels in loader:
            if images.shape[-1] != model.hparams.in_channels:
                raise UserError(f"the checkpoint expects {model.hparams.in_channels}-channel images but the data has "
                                f"{images.shape[-1]}: pass --channels {model.hparams.in_channels} or another --root")
            for r in resolutions:
                correct[r] += int((model(images, r).argmax(-1) == labels).sum())
            total += len(labels)
            progress.advance(task)
    return {r: correct[r] / max(total, 1) for r in resolutions}


def _rate(model: ImageClassifier, resolution: int) -> float:
    rate = model.net.rate((resolution, resolution))
    return float(rate[0][0] if isinstance(rate, list) else rate[0])


def write_outputs(out: Path, resolutions: list[int], curves: dict[str, dict[int, float]], train_resolution: int,
                  rates: dict[int, float]) -> list[Path]:
    """Write ``zero_shot.md``, ``zero_shot.csv`` and ``zero_shot.png`` under ``out``; return their paths."""
    names = list(curves)
    header = ["resolution", "rate", *[f"{n} acc" for n in names]]
    if len(names) == 2:
        header.append("gap (points)")
    rows = []
    for r in resolutions:
        row = [str(r), f"{rates[r]:.3g}", *[f"{100 * curves[n][r]:.2f}" for n in names]]
        if len(names) == 2:
            row.append(f"{100 * (curves[names[0]][r] - curves[names[1]][r]):+.2f}")
        rows.append(row)
    md = [f"Zero-shot accuracy (%) by test resolution; trained at {train_resolution}x{train_resolution}.", "",
          *markdown_table(header, rows)]
    paths = [write_markdown(out / "zero_shot.md", md),
             write_csv(out / "zero_shot.csv", [h.replace(" (points)", "") for h in header], rows)]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in names:
        ax.plot(resolutions, [100 * curves[name][r] for r in resolutions], marker="o", label=name)
    ax.axvline(train_resolution, color="grey", linestyle=":", label=f"training resolution ({train_resolution})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(resolutions, [str(r) for r in resolutions])
    ax.set_xlabel("test resolution (pixels per side)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Zero-shot resolution change")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(save_figure(fig, out / "zero_shot.png"))
    return paths


def zero_shot(argv: list[str]) -> None:
    """``ssm s4nd zero-shot --ckpt CKPT --resolutions 7,14,28,56 [--baseline CKPT]``."""
    p = argparse.ArgumentParser(prog="ssm s4nd zero-shot",
                                description="Evaluate a checkpoint at several resolutions without fine-tuning.")
    p.add_argument("--ckpt", required=True, help="checkpoint of `ssm s4nd fit` (e.g. runs/s4nd/<recipe>/checkpoints/best.ckpt)")
    p.add_argument("--resolutions", default="7,14,28,56", help="comma-separated sides (default 7,14,28,56)")
    p.add_argument("--baseline", help="a Conv2D baseline's checkpoint, plotted alongside")
    p.add_argument("--root", help="data folder (default: the one the checkpoint was trained on)")
    p.add_argument("--split", choices=["val", "test"], default="test", help="split to evaluate (default test)")
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--out", help="output folder (default: the run's zero-shot/ folder, beside its checkpoints/; "
                                  "zero-shot/ beside a checkpoint kept elsewhere)")
    a = p.parse_args(argv)
    resolutions = _parse_resolutions(a.resolutions)
    ckpt = Path(a.ckpt)
    model, data_options = load_classifier(ckpt)
    models = {f"{MIXER_NAMES[model.hparams.layer['name']]} ({ckpt.stem})": model}
    if a.baseline:
        baseline, _ = load_classifier(Path(a.baseline))
        if baseline.hparams.train_resolution != model.hparams.train_resolution:
            print(f"note: the baseline was trained at {baseline.hparams.train_resolution}, "
                  f"the model at {model.hparams.train_resolution}")
        models[f"{MIXER_NAMES[baseline.hparams.layer['name']]} baseline"] = baseline
    options = {k: v for k, v in data_options.items() if k in ("dataset", "root", "channels", "image_size", "val_size")}
    if a.root:
        options["root"] = a.root
    data = ImageData(**options, batch_size=a.batch_size)
    data.setup("test")
    loader = data.val_dataloader() if a.split == "val" else data.test_dataloader()
    curves = {name: accuracy_by_resolution(m, loader, resolutions, name) for name, m in models.items()}
    out = Path(a.out) if a.out else beside_checkpoint(ckpt, "zero-shot")
    train_resolution = int(model.hparams.train_resolution)
    rates = {r: _rate(model, r) for r in resolutions}
    for path in write_outputs(out, resolutions, curves, train_resolution, rates):
        print(f"wrote {path}")
    print((out / "zero_shot.md").read_text().rstrip())
