"""``ssm speech zero-shot``: a Speech Commands classifier tested at other sample rates, untrained for them.

S4 (Gu, Goel, Re 2022, Sec. 4.4 / Table 5) trains on 16 kHz SC10 and tests on 8 kHz audio by
doubling every layer's step size (``rate = 2``).  For each rate this verb evaluates the test split
fed two ways -- properly resampled (low-pass, then decimate) and naively decimated (every k-th
sample, aliasing) -- and each with the rate change and without it (the "no rate change" row shows
what the rate buys).  The table is written as markdown and CSV, with a PNG plot.

Two diagnostics say why a model loses accuracy at a lower rate ``r``:

- a "low-passed" row per lower rate: the training-rate audio with everything above ``r / 2``
  removed (down to ``r`` and back up), fed at the training rate.  It loses exactly the band that
  ``r`` Hz audio lacks and nothing else, so its drop is what the missing band costs; the rest of the
  ``r`` Hz drop is the rate change itself.
- ``kernel_band.csv`` / ``.png``: the share of the first SSM layer's kernel energy above each such
  ``r / 2``, per channel, and the channels' median magnitude response.

``--adapt-norm [CLIPS]`` scores every row a second time with normalisation statistics adapted to the
data folder, its labels unread: the input mean and std of its training split, and every BatchNorm's
running statistics re-estimated from CLIPS of its training clips fed as that row feeds the clips it
scores (AdaBN; :mod:`apps.common.norms`).  For a model meeting audio from a new source (another synthesiser,
microphone or rate) for which unlabelled clips exist; the "model" rows stay the zero-shot figures.
``--adapt-epochs E`` adds a third set of rows: after the statistics, each network (all but its output layer)
is trained for E epochs on the same unlabelled clips to make confident predictions that stay spread over the
words (information maximisation, SHOT-IM; :mod:`apps.common.self_training`).
``--tta [VIEWS]`` scores every row a second time with each clip's log-probabilities averaged over the clip and
views of it (test-time augmentation; by default played 0.9 and 1.1 times as fast, and with its formants moved by
0.9 and 1.1: :class:`apps.speech.augment.View`): zero-shot still, it needs nothing of the new source, and costs
one forward pass per view.
``--split all`` scores every clip of the folder instead of its test split: a source the model never
trained on is then measured on all its speakers.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress

from apps.common.cli import positive_int
from apps.common.devices import default_device, parse_device
from apps.common.errors import UserError
from apps.common.norms import batch_norms, reestimate_batchnorm
from apps.common.report import markdown_table, save_figure, write_csv, write_markdown
from apps.common.runs import beside_checkpoint
from apps.common.self_training import maximise_information
from apps.common.speech_commands import SAMPLE_RATE
from apps.speech.augment import DEFAULT_VIEWS, View, parse_views
from apps.speech.data import SpeechCommandsData
from apps.speech.module import SpeechClassifier, load_speech_classifier
from ssmcore.layers.base import SSMLayer

METHODS = {"proper": "resampled", "naive": "naive decimation"}
DATA_KEYS = ("root", "words", "features", "n_mfcc", "normalize")
ADAPT_CLIPS = 1000
ADAPT_LR = 1e-3
STATISTICS = {"model": ("o", "s", ""), "adapted": ("x", "D", ", adapted statistics"),
              "self-trained": ("^", "v", ", adapted and self-trained")}  # kinds of rows: markers (rows, low-passed), label


@dataclass(frozen=True)
class Adaptation:
    """How a network is adapted to the scored folder before scoring: BatchNorm statistics from ``clips`` of its
    unlabelled training clips, then, with ``epochs``, information maximisation on them at Adam's ``lr``, the clips
    in an order drawn from ``seed`` each epoch."""

    clips: int
    epochs: int = 0
    lr: float = ADAPT_LR
    seed: int = 0


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
              batch_size: int, lowpass: int | None = None, adapted: bool = False,
              views: tuple[View, ...] = ()) -> SpeechCommandsData:
    """The data module of the model's test split at ``sample_rate`` fed by ``method`` (proper / naive),
    low-passed at ``lowpass`` Hz first when given; normalised with the model's input statistics, or with
    those of the folder's own training split when ``adapted``; each clip served with its test-time ``views``."""
    data = SpeechCommandsData(**options, sample_rate=sample_rate, resample=method, batch_size=batch_size,
                              lowpass=lowpass)
    data.set_views(views)
    if bool(model.has_input_stats) and not adapted:
        data.set_normalization(model.input_mean, model.input_std)
    model.check_data(data)
    return data


def adapted_nets(model: SpeechClassifier, batches: Iterable, ssm_rates: list[float]) -> dict[float, torch.nn.Module]:
    """For each SSM rate, a copy of the model's network whose BatchNorm statistics are those of the unlabelled
    clips in ``batches`` (e.g. ``data.adaptation_loader(clips)``: fed as ``data`` feeds the clips it scores), at
    that rate (one pass over the clips for all the rates)."""
    nets = torch.nn.ModuleList(copy.deepcopy(model.net) for _ in ssm_rates)
    reestimate_batchnorm(nets, batches, lambda x: [net(x, rate=rate) for net, rate in zip(nets, ssm_rates, strict=True)])
    return dict(zip(ssm_rates, nets, strict=True))


def self_trained_nets(nets: dict[float, torch.nn.Module], clips: torch.Tensor, adapt: Adaptation,
                      batch_size: int = 50) -> dict[float, torch.nn.Module]:
    """Copies of the adapted ``nets`` (one per SSM rate), each trained ``adapt.epochs`` epochs on the unlabelled
    ``clips`` they were adapted to by information maximisation, its output layer (``head``) kept."""
    trained = {}
    for rate, net in nets.items():
        trained[rate] = net = copy.deepcopy(net)
        device = next(net.parameters()).device
        maximise_information(net, clips.to(device), net.head, adapt.epochs, adapt.lr, batch_size,
                             lambda x, net=net, rate=rate: net(x, rate=rate), seed=adapt.seed)
    return trained


def networks(model: SpeechClassifier, data: SpeechCommandsData, ssm_rates: list[float],
             adapt: Adaptation | None) -> dict[str, dict[float, torch.nn.Module]]:
    """The networks each kind of row is scored with, per SSM rate: the model's (``adapt`` None), or the adapted
    ones (:func:`adapted_nets`) and, with ``adapt.epochs``, those self-trained from them."""
    if adapt is None:
        return {"model": dict.fromkeys(ssm_rates, model.net)}
    batches = [x for x, _ in data.adaptation_loader(adapt.clips)]  # read once for both
    nets = {"adapted": adapted_nets(model, batches, ssm_rates)}
    if adapt.epochs:
        nets["self-trained"] = self_trained_nets(nets["adapted"], torch.cat(batches), adapt, data.hparams.batch_size)
    return nets


@torch.no_grad()
def accuracy(nets: dict[str, dict[float, torch.nn.Module]], data: SpeechCommandsData, progress: Progress, label: str,
             split: str = "test") -> dict[tuple[str, int], dict[float, float]]:
    """Accuracy on ``data``'s ``split`` (test, or all) of each kind of network of :func:`networks` at its SSM
    rate, in one pass over the clips: ``{(kind, 1): {rate: accuracy}}``; when ``data`` serves test-time views
    (:meth:`SpeechCommandsData.set_views`) also ``{(kind, 1 + views): ...}``, each clip's log-probabilities
    averaged over it and its views."""
    loader = data.test_dataloader(split)
    counts = sorted({1, 1 + len(data.views)})  # the clip alone, and with its views
    correct = {(kind, n): dict.fromkeys(by_rate, 0) for kind, by_rate in nets.items() for n in counts}
    total = 0
    task = progress.add_task(label, total=len(loader))
    any_net = next(net for by_rate in nets.values() for net in by_rate.values())  # all on the model's device
    device = next(any_net.parameters()).device
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        views = x.unsqueeze(1) if x.dim() == 3 else x  # (B, V, L, C): the clip first
        for kind, by_rate in nets.items():
            for rate, net in by_rate.items():
                logp = torch.stack([net(views[:, v], rate=rate).log_softmax(-1) for v in range(views.shape[1])], 1)
                for n in counts:  # the mean over the first n (the clip first): n = 1 is the clip alone
                    correct[kind, n][rate] += int((logp[:, :n].mean(1).argmax(-1) == y).sum())
        total += len(y)
        progress.advance(task)
    return {key: {rate: c / max(total, 1) for rate, c in by_rate.items()} for key, by_rate in correct.items()}


def zero_shot_table(model: SpeechClassifier, options: dict, rates: list[int], batch_size: int = 50,
                    adapt: Adaptation | None = None, split: str = "test", views: tuple[View, ...] = ()) -> list[dict]:
    """Rows ``{sample_rate, input, rate_change, ssm_rate, statistics, views, accuracy}`` for every rate x input x rate
    change, with the model's normalisation statistics; with ``adapt`` every row again with statistics adapted to
    the test folder's training split (:func:`adapted_nets`, and its input statistics), and with ``adapt.epochs``
    a third time, self-trained on those clips from there (:func:`self_trained_nets`).  ``split``: the clips
    scored, the test split or ``all`` of the folder.  With test-time ``views`` every row is also scored with each
    clip's log-probabilities averaged over it and its views (``views`` = 1 + their number; 1: the clip alone)."""
    with Progress(transient=True) as progress:
        rows = _rows(model, options, rates, batch_size, None, split, progress, views)
        if adapt:
            rows += _rows(model, options, rates, batch_size, adapt, split, progress, views)
    return rows


def _rows(model: SpeechClassifier, options: dict, rates: list[int], batch_size: int, adapt: Adaptation | None,
          split: str, progress: Progress, views: tuple[View, ...] = ()) -> list[dict]:
    """:func:`zero_shot_table`'s rows with the model's statistics, or with every kind of adaptation ``adapt``
    asks for (grouped by kind)."""
    suffix = "" if adapt is None else STATISTICS["self-trained" if adapt.epochs else "adapted"][-1]
    adapted = adapt is not None
    rows = []
    for rate in rates:
        ssm = {True: model.rate_for(rate) if options.get("features", "raw") == "raw" else 1.0, False: 1.0}
        for method, name in METHODS.items():
            if method == "naive" and SAMPLE_RATE % rate:
                continue
            # at 16 kHz naive decimation has nothing to drop: the input, and so ``acc``, is the one "proper" scored
            if not (method == "naive" and rate == SAMPLE_RATE):
                data = eval_data(options, model, rate, method, batch_size, adapted=adapted, views=views)
                nets = networks(model, data, sorted(set(ssm.values())), adapt)
                acc = accuracy(nets, data, progress, f"{rate} Hz, {name}{suffix}", split)
            for (stat, n), by_rate in acc.items():
                for change, ssm_rate in ssm.items():
                    rows.append(dict(sample_rate=rate, input=name, rate_change=change, ssm_rate=ssm_rate,
                                     statistics=stat, views=n, accuracy=by_rate[ssm_rate]))
    train_rate = int(model.train_sample_rate) or SAMPLE_RATE
    for rate in rates:
        if rate >= train_rate or options.get("features", "raw") != "raw":
            continue
        data = eval_data(options, model, train_rate, "proper", batch_size, lowpass=rate // 2, adapted=adapted,
                         views=views)
        name = f"low-passed at {rate // 2} Hz"
        acc = accuracy(networks(model, data, [1.0], adapt), data, progress, f"{train_rate} Hz, {name}{suffix}", split)
        rows += [dict(sample_rate=train_rate, input=name, rate_change=False, ssm_rate=1.0, statistics=stat, views=n,
                      accuracy=by_rate[1.0]) for (stat, n), by_rate in acc.items()]
    # stable: grouped by kind, then by views
    return sorted(rows, key=lambda row: (list(STATISTICS).index(row["statistics"]), row["views"]))


def first_ssm_layer(model: SpeechClassifier) -> torch.nn.Module | None:
    """The network's first SSM layer when it has a convolution kernel (``kernel(L)``: S4, S4D, CCNN, ...);
    None when the first is a scan (S5, ...) or there is none."""
    first = next((m for m in model.net.modules() if isinstance(m, SSMLayer)), None)
    return first if callable(getattr(first, "kernel", None)) else None


@torch.no_grad()
def kernel_band(model: SpeechClassifier, cutoffs: list[int], length: int = SAMPLE_RATE) -> dict | None:
    """The first SSM layer's kernels at the training rate: per channel, the share of energy above each
    cut-off (Hz), and the median and quartile magnitude responses in dB.  None without such a layer."""
    layer = first_ssm_layer(model)
    if layer is None:
        return None
    k = layer.kernel(length).detach().double().cpu()  # (C, H, L): C = 2 for a bidirectional layer
    k = k.reshape(-1, k.shape[-1])
    fs = int(model.train_sample_rate) or SAMPLE_RATE
    power = torch.fft.rfft(k, dim=-1).abs() ** 2
    freqs = torch.fft.rfftfreq(k.shape[-1], 1.0 / fs)
    total = power.sum(-1).clamp_min(1e-300)
    shares = {c: (power[:, freqs > c].sum(-1) / total) for c in cutoffs}
    db = 10 * torch.log10(power.clamp_min(1e-30) / power.max(-1, keepdim=True).values.clamp_min(1e-30))
    return dict(freqs=freqs, shares=shares, median_db=db.median(0).values, q1=db.quantile(0.25, 0),
                q3=db.quantile(0.75, 0), channels=k.shape[0])


def write_kernel_band(out: Path, band: dict) -> list[Path]:
    """``kernel_band.csv`` (share of kernel energy above each cut-off) and ``kernel_band.png``."""
    header = ["cut-off (Hz)", "channels", "median share above (%)", "mean share above (%)",
              "channels with > 50% above"]
    table = [[c, band["channels"], f"{100 * float(s.median()):.2f}", f"{100 * float(s.mean()):.2f}",
              int((s > 0.5).sum())] for c, s in band["shares"].items()]
    paths = [write_csv(out / "kernel_band.csv", header, table)]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    f = band["freqs"].numpy()
    ax.fill_between(f, band["q1"].numpy(), band["q3"].numpy(), alpha=0.3, label="quartiles over channels")
    ax.plot(f, band["median_db"].numpy(), label="median")
    for c in band["shares"]:
        ax.axvline(c, color="grey", linestyle="--", linewidth=0.8)
    paths.append(_finish(fig, ax, "frequency (Hz)", "kernel power (dB, per channel's peak)", (-80, 3),
                         "First SSM layer: kernel magnitude responses", out / "kernel_band.png"))
    return paths


def _finish(fig, ax, xlabel: str, ylabel: str, ylim: tuple[float, float], title: str, path: Path) -> Path:
    """Label, grid and legend one of this verb's plots, and save it to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_outputs(out: Path, rows: list[dict], train_rate: int, ckpt: Path, note: str = "") -> list[Path]:
    """``zero_shot.md``, ``zero_shot.csv`` and ``zero_shot.png`` under ``out``; returns their paths.  ``note``: a
    line for the markdown (what "adapted" statistics were adapted to)."""
    kinds = list(dict.fromkeys((r["statistics"], r["views"]) for r in rows))  # in the rows' order
    base = {key: next((r["accuracy"] for r in rows if r["sample_rate"] == train_rate
                       and (r["statistics"], r["views"]) == key), None) for key in kinds}
    tta = any(n > 1 for _, n in kinds)  # a "views" column only when some rows average over views
    header = ["sample rate (Hz)", "input", "rate change", "SSM rate", "statistics", *(["views"] if tta else []),
              "accuracy (%)", "vs training rate (points)"]
    table = []
    for r in rows:
        ref = base[r["statistics"], r["views"]]
        table.append([r["sample_rate"], r["input"], "yes" if r["rate_change"] else "no", f"{r['ssm_rate']:.3g}",
                      r["statistics"], *([r["views"]] if tta else []), f"{100 * r['accuracy']:.2f}",
                      "" if ref is None else f"{100 * (r['accuracy'] - ref):+.2f}"])
    md = [f"Zero-shot test accuracy of {ckpt} (trained at {train_rate} Hz) at other sample rates.",
          *([note] if note else []), "", *markdown_table(header, table, left=3)]
    paths = [write_markdown(out / "zero_shot.md", md), write_csv(out / "zero_shot.csv", header, table)]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for stat, n in kinds:
        marker, lowpass_marker, suffix = STATISTICS[stat]
        fill, suffix = ("full", suffix) if n == 1 else ("none", f"{suffix}, mean over {n} views")
        mine = [r for r in rows if r["statistics"] == stat and r["views"] == n]
        for name in METHODS.values():
            for change, style in ((True, "-"), (False, ":")):
                points = [(r["sample_rate"], 100 * r["accuracy"]) for r in mine
                          if r["input"] == name and r["rate_change"] == change]
                if points:
                    ax.plot(*zip(*points, strict=True), style, marker=marker, fillstyle=fill,
                            label=f"{name}, {'rate change' if change else 'no rate change'}{suffix}")
        lowpassed = [(2 * int(r["input"].split()[2]), 100 * r["accuracy"]) for r in mine
                     if r["input"].startswith("low-passed")]
        if lowpassed:  # at the rate whose band they keep
            ax.plot(*zip(*lowpassed, strict=True), lowpass_marker, color="black", fillstyle="none",
                    label=f"{train_rate} Hz input, only this rate's band{suffix}")
    ax.axvline(train_rate, color="grey", linestyle="--", linewidth=0.8, label=f"training rate ({train_rate} Hz)")
    ax.set_xscale("log", base=2)
    rates = sorted({r["sample_rate"] for r in rows})
    ax.set_xticks(rates, [str(r) for r in rates])
    paths.append(_finish(fig, ax, "test sample rate (Hz)", "test accuracy (%)", (0, 100),
                         "Speech Commands: zero-shot sample-rate change", out / "zero_shot.png"))
    return paths


def zero_shot(argv: list[str]) -> None:
    """``ssm speech zero-shot --ckpt CKPT --rates 16000,8000,4000 [--data-root DIR --out DIR --split all --tta [VIEWS]
    --adapt-norm [CLIPS] --adapt-epochs E --adapt-seed S]``."""
    p = argparse.ArgumentParser(prog="ssm speech zero-shot",
                                description="Test a Speech Commands classifier at other sample rates.")
    p.add_argument("--ckpt", required=True, help="checkpoint of `ssm speech fit` with a SpeechClassifier recipe")
    p.add_argument("--rates", default="16000,8000,4000", help="comma-separated sample rates (default 16000,8000,4000)")
    p.add_argument("--data-root", help="dataset folder (default: the one the checkpoint was trained on)")
    p.add_argument("--batch-size", type=positive_int, default=50)
    p.add_argument("--out", help="output folder (default: zero-shot/ in the checkpoint's run, or "
                   "beside a checkpoint kept elsewhere)")
    p.add_argument("--device", default=default_device(),
                   help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    p.add_argument("--split", choices=["test", "all"], default="test",
                   help="the clips scored: the test split (default), or all of the folder's clips, e.g. a source the "
                        "model never trained on (with --adapt-norm its training clips are then scored too)")
    p.add_argument("--tta", nargs="?", const=DEFAULT_VIEWS, default=None, metavar="VIEWS",
                   help="also score every row with each clip's log-probabilities averaged over the clip and these "
                        "views of it (test-time augmentation, zero-shot): comma-separated speed or formant factors "
                        f"(default {DEFAULT_VIEWS}); one forward pass per view")
    p.add_argument("--adapt-norm", type=int, nargs="?", const=ADAPT_CLIPS, default=None, metavar="CLIPS",
                   help="also score every row with the normalisation statistics adapted to the data folder: its "
                        "training split's input mean and std, and every BatchNorm's statistics from CLIPS of its "
                        f"clips (default {ADAPT_CLIPS}), unlabelled (AdaBN); for audio from a new source")
    p.add_argument("--adapt-epochs", type=int, default=0, metavar="E",
                   help="with --adapt-norm, also score every row after training the adapted network (all but its "
                        "output layer) for E epochs on the same unlabelled clips to make confident, diverse "
                        "predictions (information maximisation, SHOT-IM)")
    p.add_argument("--adapt-lr", type=float, default=ADAPT_LR, help=f"Adam's learning rate for --adapt-epochs "
                   f"(default {ADAPT_LR:g})")
    p.add_argument("--adapt-seed", type=int, default=None, help="the seed of --adapt-epochs' clip order (default 0): "
                   "rerun with others to see how much the self-trained rows vary")
    a = p.parse_args(argv)
    parse_device(a.device)
    rates = parse_rates(a.rates)
    views = parse_views(a.tta) if a.tta is not None else ()
    if a.adapt_norm is not None and a.adapt_norm < 1:
        raise UserError(f"--adapt-norm takes a number of clips >= 1 (or none for {ADAPT_CLIPS}), got {a.adapt_norm}")
    if a.adapt_epochs < 0 or (a.adapt_epochs and a.adapt_norm is None):
        raise UserError(f"--adapt-epochs takes a number of epochs >= 0 and needs --adapt-norm (the unlabelled clips "
                        f"it trains on), got --adapt-epochs {a.adapt_epochs}"
                        f"{'' if a.adapt_norm else ' without --adapt-norm'}")
    if not (a.adapt_lr > 0 and math.isfinite(a.adapt_lr)):
        raise UserError(f"--adapt-lr takes a learning rate > 0, got {a.adapt_lr}")
    if a.adapt_seed is not None and not a.adapt_epochs:
        raise UserError(f"--adapt-seed {a.adapt_seed} orders the clips of --adapt-epochs' self-training: give "
                        "--adapt-norm --adapt-epochs E as well, or leave --adapt-seed out")
    seed = a.adapt_seed or 0
    ckpt = Path(a.ckpt)
    model, saved = load_speech_classifier(ckpt)
    model.to(a.device)
    options = {k: v for k, v in saved.items() if k in DATA_KEYS}
    if a.data_root:
        options["root"] = a.data_root
    adapt = Adaptation(a.adapt_norm, a.adapt_epochs, a.adapt_lr, seed) if a.adapt_norm else None
    rows = zero_shot_table(model, options, rates, a.batch_size, adapt, a.split, views)
    out = Path(a.out) if a.out else beside_checkpoint(ckpt, "zero-shot")
    train_rate = int(model.train_sample_rate) or SAMPLE_RATE
    notes = ["Scored: every clip of the folder (train, validation and test splits)."] if a.split == "all" else []
    if a.adapt_norm:
        bn = (f"every BatchNorm's statistics from up to {a.adapt_norm} of its clips" if batch_norms(model.net)
              else "the model has no BatchNorm, so only those")
        notes.append(f"Adapted: normalised by the statistics of {options.get('root')}'s training split, labels "
                     f"unread (its input mean and std; {bn}), fed as each row feeds the clips it scores.")
    if views:
        notes.append(f"Views: rows with views {1 + len(views)} average each clip's log-probabilities over the clip "
                     f"and its views {', '.join(map(str, views))} (test-time augmentation).")
    if a.adapt_epochs:
        notes.append(f"Self-trained: the adapted network, all but its output layer, trained {a.adapt_epochs} "
                     f"epoch(s) on the same clips (Adam, lr {a.adapt_lr:g}, order seed {seed}) to minimise the "
                     "predictions' mean entropy less the entropy of their mean (information maximisation).")
    paths = write_outputs(out, rows, train_rate, ckpt, " ".join(notes))
    cutoffs = [r // 2 for r in rates if r < train_rate]
    band = kernel_band(model, cutoffs) if cutoffs else None
    if band is not None:
        paths += write_kernel_band(out, band)
    elif cutoffs:
        print("kernel_band.csv not written: the first SSM layer has no convolution kernel (a scan such as S5)")
    for path in paths:
        print(f"wrote {path}")
    print((out / "zero_shot.md").read_text().rstrip())
    if band is not None:
        print((out / "kernel_band.csv").read_text().rstrip())
