"""``ssm speech score``: IS, mIS, AM and FID of a folder of generated clips, judged by an SC09 classifier.

SaShiMi (Goel et al. 2022, Sec. 5.2, Table 3) scores unconditional SC09 samples with a classifier
trained on SC09: the inception scores and the AM score come from its softmax, the FID from its
penultimate features (the mean-pooled last block) of the samples against the real test set.  The
same numbers for the real test set itself are the upper bound a generator is compared with; the
real validation split against the test split gives the FID noise floor of two real sets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from apps.common.cli import positive_int
from apps.common.errors import UserError
from apps.common.report import markdown_table, write_csv, write_markdown
from apps.common.runs import beside_checkpoint
from apps.common.speech_commands import SAMPLE_RATE, WORD_SETS, readable, resolve_word_set
from apps.speech.data import SpeechCommandsData, SpeechCommandsDataset
from apps.speech.metrics import am_score, frechet_distance, inception_score, modified_inception_score
from apps.speech.module import SpeechClassifier, load_speech_classifier
from apps.speech.zero_shot import DATA_KEYS


@torch.no_grad()
def predict(model: SpeechClassifier, dataset: SpeechCommandsDataset,
            batch_size: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(probs (N, C), features (N, D), labels (N,))`` of every clip in ``dataset``."""
    probs, feats, labels = [], [], []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        f = model.features(x)  # (B, D)
        feats.append(f.double())
        probs.append(model.net.head(f).softmax(-1).double())
        labels.append(torch.as_tensor(y))
    return torch.cat(probs), torch.cat(feats), torch.cat(labels)


def sample_dataset(folder: Path, data: SpeechCommandsData) -> SpeechCommandsDataset:
    """The WAVs under ``folder`` (recursively) prepared exactly as the classifier's test clips (label -1)."""
    if not folder.is_dir():
        raise UserError(f"--samples folder not found: {folder}")
    paths = sorted(folder.rglob("*.wav"))
    items = readable([(p, -1) for p in paths])
    if not items:
        raise UserError(f"no readable .wav file under {folder} (generate some with `ssm sashimi generate`)")
    h = data.hparams
    mean, std = data.normalization() if h.normalize else (None, None)
    return SpeechCommandsDataset(items, data.sample_rate, h.resample, h.features, h.n_mfcc, mean, std)


def metrics_row(name: str, probs: torch.Tensor, feats: torch.Tensor, real_feats: torch.Tensor,
                reference: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """IS, mIS, AM and FID (against ``real_feats``) of one set; accuracy when ``labels`` are known."""
    row = dict(set=name, clips=len(probs), IS=inception_score(probs), mIS=modified_inception_score(probs),
               AM=am_score(probs, reference), FID=frechet_distance(feats, real_feats), features=feats.shape[1])
    row["accuracy"] = float((probs.argmax(-1) == labels).double().mean()) if labels is not None else None
    return row


def score_sets(model: SpeechClassifier, options: dict, samples: Path | None, batch_size: int = 50) -> list[dict]:
    """Metric rows of the samples (if given), the real test set and the real validation set."""
    data = SpeechCommandsData(**options, sample_rate=int(model.train_sample_rate) or SAMPLE_RATE)
    if bool(model.has_input_stats) and data.hparams.normalize:
        data.set_normalization(model.input_mean, model.input_std)
    model.check_data(data)
    model.use_sample_rate(data.sample_rate, data.hparams.features)
    real_probs, real_feats, real_labels = predict(model, data.dataset("test"), batch_size)
    reference = real_probs.mean(0)
    rows = []
    if samples is not None:
        probs, feats, _ = predict(model, sample_dataset(samples, data), batch_size)
        rows.append(metrics_row(f"samples ({samples})", probs, feats, real_feats, reference))
    rows.append(metrics_row("real test set (upper bound)", real_probs, real_feats, real_feats, reference, real_labels))
    try:
        val = predict(model, data.dataset("validation"), batch_size)
    except UserError:
        val = None
    if val is not None:
        rows.append(metrics_row("real validation set vs test", val[0], val[1], real_feats, reference, val[2]))
    return rows


def caveats(rows: list[dict], words: list[str]) -> list[str]:
    """What makes these figures less than SaShiMi's: a classifier of other classes than the ten digits, and sets too
    small for the FID's covariances (a Gaussian fit of D features needs more than D clips)."""
    notes = []
    if words != WORD_SETS["sc09"]:
        notes.append(f"note: the classifier's classes are {', '.join(words)}, not the ten SC09 digits: IS, mIS and AM "
                     "measure those classes (train one with recipes/speech/sc09_classifier.yaml for SC09 samples)")
    small = [f"{r['set']}: {r['clips']}" for r in rows if r["clips"] <= r["features"]]
    if small:
        notes.append(f"note: FID is unreliable with fewer clips than the classifier's {rows[0]['features']} features "
                     f"({'; '.join(small)} clips): score more clips")
    return notes


def write_scores(out: Path, rows: list[dict], ckpt: Path, classes: int, notes: list[str] = ()) -> list[Path]:
    """``out`` (markdown, with ``notes`` under the table) and the same table as CSV beside it."""
    header = ["set", "clips", "IS", "mIS", "AM", "FID", "classifier accuracy (%)"]
    table = [[r["set"], r["clips"], f"{r['IS']:.3f}", f"{r['mIS']:.3f}", f"{r['AM']:.4f}", f"{r['FID']:.4g}",
              "" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}"] for r in rows]
    md = [f"Generative metrics from the classifier {ckpt} ({classes} classes: IS at most {classes}; mIS unbounded, "
          "growing with confidence and within-class diversity; AM and FID lower is better; FID against the real "
          "test set's penultimate features).", "",
          *markdown_table(header, table), *(["", *notes] if notes else [])]
    return [write_markdown(out, md), write_csv(out.with_suffix(".csv"), header, table)]


def score(argv: list[str]) -> None:
    """``ssm speech score --classifier CKPT --samples DIR [--real DATA_ROOT --out FILE]``."""
    p = argparse.ArgumentParser(prog="ssm speech score",
                                description="IS, mIS, AM and FID of generated clips from an SC09 classifier.")
    p.add_argument("--classifier", required=True, help="SC09 classifier checkpoint (recipes/speech/sc09_classifier.yaml)")
    p.add_argument("--samples", help="folder of generated .wav clips (omit to score only the real sets)")
    p.add_argument("--real", help="real dataset folder (default: the one the classifier was trained on)")
    p.add_argument("--batch-size", type=positive_int, default=50)
    p.add_argument("--out", help="markdown file to write (default: scores.md in --samples, else "
                   "scores/real_scores.md in the checkpoint's run, or beside a checkpoint kept elsewhere)")
    a = p.parse_args(argv)
    ckpt = Path(a.classifier)
    model, saved = load_speech_classifier(ckpt)
    options = {k: v for k, v in saved.items() if k in DATA_KEYS}
    if a.real:
        options["root"] = a.real
    samples = Path(a.samples) if a.samples else None
    rows = score_sets(model, options, samples, a.batch_size)
    default = (samples / "scores.md") if samples else beside_checkpoint(ckpt, "scores") / "real_scores.md"
    out = Path(a.out) if a.out else default
    for path in write_scores(out, rows, ckpt, model.hparams.num_classes, caveats(rows, resolve_word_set(options.get("words", "sc09")))):
        print(f"wrote {path}")
    print(out.read_text().rstrip())
