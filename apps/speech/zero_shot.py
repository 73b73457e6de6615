"""``ssm speech zero-shot``: a Speech Commands classifier tested at other sample rates, untrained for them.

S4 (Gu, Goel, Re 2022, Sec. 4.4 / Table 5) trains on 16 kHz SC10 and tests on 8 kHz audio by
doubling every layer's step size (``rate = 2``).  For each rate this verb evaluates the test split
fed two ways -- properly resampled (low-pass, then decimate) and naively decimated (every k-th
sample, aliasing) -- and each with the rate change and without it (the "no rate change" row shows
what the rate buys).  The table is written as markdown and CSV, with a PNG plot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.progress import Progress

from apps.common.errors import UserError
from apps.common.report import markdown_table, save_figure, write_csv, write_markdown
from apps.common.speech_commands import SAMPLE_RATE
from apps.speech.data import SpeechCommandsData
from apps.speech.module import SpeechClassifier, load_speech_classifier

METHODS = {"proper": "resampled", "naive": "naive decimation"}
DATA_KEYS = ("root", "words", "features", "n_mfcc", "normalize")


def parse_rates(text: str) -> list[int]:
    """``"16000,8000,4000"`` -> [16000, 8000, 4000] (descending, unique)."""
    try:
        rates = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        rates = []
    if not rates or min(rates) <= 0 or max(rates) > SAMPLE_RATE:
        raise UserError(f"--rates needs comma-separated rates in (0, {SAMPLE_RATE}] such as 16000,8000,4000, "
                        f"got {text!r}")
    return sorted(set(rates), reverse=True)


def eval_data(options: dict, model: SpeechClassifier, sample_rate: int, method: str,
              batch_size: int) -> SpeechCommandsData:
    """The data module of the model's test split at ``sample_rate`` fed by ``method`` (proper / naive)."""
    data = SpeechCommandsData(**options, sample_rate=sample_rate, resample=method, batch_size=batch_size)
    if bool(model.has_input_stats):
        data.set_normalization(model.input_mean, model.input_std)
    model.check_data(data)
    return data


@torch.no_grad()
def accuracy(model: SpeechClassifier, data: SpeechCommandsData, ssm_rates: list[float], progress: Progress,
             label: str) -> dict[float, float]:
    """Test accuracy of ``model`` on ``data`` with each SSM rate in ``ssm_rates``."""
    loader = data.test_dataloader()
    correct = dict.fromkeys(ssm_rates, 0)
    total = 0
    task = progress.add_task(label, total=len(loader))
    device = next(model.parameters()).device
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        for rate in ssm_rates:
            correct[rate] += int((model.net(x, rate=rate).argmax(-1) == y).sum())
        total += len(y)
        progress.advance(task)
    return {rate: correct[rate] / max(total, 1) for rate in ssm_rates}


def zero_shot_table(model: SpeechClassifier, options: dict, rates: list[int],
                    batch_size: int = 50) -> list[dict]:
    """Rows ``{sample_rate, input, rate_change, ssm_rate, accuracy}`` for every rate x input x rate change."""
    rows = []
    with Progress(transient=True) as progress:
        for rate in rates:
            for method, name in METHODS.items():
                if method == "naive" and SAMPLE_RATE % rate:
                    continue
                data = eval_data(options, model, rate, method, batch_size)
                ssm = {True: model.rate_for(rate) if data.hparams.features == "raw" else 1.0, False: 1.0}
                acc = accuracy(model, data, sorted(set(ssm.values())), progress, f"{rate} Hz, {name}")
                for change, ssm_rate in ssm.items():
                    rows.append(dict(sample_rate=rate, input=name, rate_change=change, ssm_rate=ssm_rate,
                                     accuracy=acc[ssm_rate]))
    return rows


def write_outputs(out: Path, rows: list[dict], train_rate: int, ckpt: Path) -> list[Path]:
    """``zero_shot.md``, ``zero_shot.csv`` and ``zero_shot.png`` under ``out``; returns their paths."""
    base = next((r["accuracy"] for r in rows if r["sample_rate"] == train_rate), None)
    header = ["sample rate (Hz)", "input", "rate change", "SSM rate", "accuracy (%)", "vs training rate (points)"]
    table = [[r["sample_rate"], r["input"], "yes" if r["rate_change"] else "no", f"{r['ssm_rate']:.3g}",
              f"{100 * r['accuracy']:.2f}", "" if base is None else f"{100 * (r['accuracy'] - base):+.2f}"]
             for r in rows]
    md = [f"Zero-shot test accuracy of {ckpt} (trained at {train_rate} Hz) at other sample rates.", "",
          *markdown_table(header, table, left=3)]
    paths = [write_markdown(out / "zero_shot.md", md), write_csv(out / "zero_shot.csv", header, table)]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in METHODS.values():
        for change, style in ((True, "-"), (False, ":")):
            points = [(r["sample_rate"], 100 * r["accuracy"]) for r in rows
                      if r["input"] == name and r["rate_change"] == change]
            if points:
                ax.plot(*zip(*points, strict=True), style, marker="o",
                        label=f"{name}, {'rate change' if change else 'no rate change'}")
    ax.axvline(train_rate, color="grey", linestyle="--", linewidth=0.8, label=f"training rate ({train_rate} Hz)")
    ax.set_xscale("log", base=2)
    rates = sorted({r["sample_rate"] for r in rows})
    ax.set_xticks(rates, [str(r) for r in rates])
    ax.set_xlabel("test sample rate (Hz)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Speech Commands: zero-shot sample-rate change")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "zero_shot.png"))
    return paths


def zero_shot(argv: list[str]) -> None:
    """``ssm speech zero-shot --ckpt CKPT --rates 16000,8000,4000 [--data-root DIR --out DIR]``."""
    p = argparse.ArgumentParser(prog="ssm speech zero-shot",
                                description="Test a Speech Commands classifier at other sample rates.")
    p.add_argument("--ckpt", required=True, help="checkpoint of `ssm speech fit` with a SpeechClassifier recipe")
    p.add_argument("--rates", default="16000,8000,4000", help="comma-separated sample rates (default 16000,8000,4000)")
    p.add_argument("--data-root", help="dataset folder (default: the one the checkpoint was trained on)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--out", help="output folder (default: zero-shot/ beside the checkpoints folder)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    a = p.parse_args(argv)
    rates = parse_rates(a.rates)
    ckpt = Path(a.ckpt)
    model, saved = load_speech_classifier(ckpt)
    model.to(a.device)
    options = {k: v for k, v in saved.items() if k in DATA_KEYS}
    if a.data_root:
        options["root"] = a.data_root
    rows = zero_shot_table(model, options, rates, a.batch_size)
    out = Path(a.out) if a.out else ckpt.resolve().parent.parent / "zero-shot"
    for path in write_outputs(out, rows, int(model.train_sample_rate) or SAMPLE_RATE, ckpt):
        print(f"wrote {path}")
    print((out / "zero_shot.md").read_text().rstrip())
