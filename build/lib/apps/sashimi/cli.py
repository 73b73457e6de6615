"""``ssm sashimi``: raw-audio generation (SaShiMi) and Speech Commands classification.

The app holds two tasks, so its recipes name their classes::

    model: {class_path: apps.sashimi.classifier.SpeechClassifier, init_args: {...}}
    data:  {class_path: apps.sashimi.speech.SpeechCommandsData, init_args: {...}}

Command-line overrides may leave out ``init_args`` (``--data.sample_rate 8000``).
The verbs import their modules when called, so ``ssm sashimi --help`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import lightning.pytorch as pl

from apps.common.errors import UserError

MODULE = pl.LightningModule
DATAMODULE = pl.LightningDataModule
SUBCLASS_MODE = True
LINKS: list[tuple[str, str]] = []

#: what ``ssm sashimi prepare <what>`` can build, and the function that builds it
PREPARERS = {
    "speech-commands": ("apps.sashimi.speak", "prepare_speech_commands"),
    "piano": ("apps.sashimi.piano", "prepare_piano"),
}


def _lazy(module: str, name: str) -> Callable[[list[str]], None]:
    def run(argv: list[str]) -> None:
        getattr(importlib.import_module(module), name)(argv)

    return run


def prepare(argv: list[str]) -> None:
    """``ssm sashimi prepare speech-commands|piano [options]``."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ssm sashimi prepare {" + ",".join(PREPARERS) + "} [options]  (--help after the name for its options)")
        return
    what, rest = argv[0], argv[1:]
    if what not in PREPARERS:
        raise UserError(f"unknown dataset {what!r} to prepare; choose one of {', '.join(PREPARERS)}")
    _lazy(*PREPARERS[what])(rest)


VERBS = {
    "prepare": (prepare, "build an offline stand-in: ssm sashimi prepare speech-commands --out "
                         "data/speech_commands_synth --words sc35 --per-word N | prepare piano --out data/piano --minutes M"),
    "zero-shot": (_lazy("apps.sashimi.zero_shot", "zero_shot"),
                  "classifier accuracy at other sample rates: ssm sashimi zero-shot --ckpt CKPT --rates 16000,8000,4000"),
    "score": (_lazy("apps.sashimi.score", "score"),
              "IS, mIS, AM and FID of a folder of WAVs: ssm sashimi score --classifier CKPT --samples DIR"),
    "generate": (_lazy("apps.sashimi.generate", "generate"),
                 "sample audio in recurrent mode: ssm sashimi generate --ckpt CKPT --n 16 --seconds 4 --batch 16"),
}
