"""``ssm speech``: Speech Commands classifiers (S4 Sec. 4.4; S4D, S5, DLR), zero-shot sample rates, SC09 scoring.

The verbs import their modules when called, so ``ssm speech --help`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from apps.speech.data import SpeechCommandsData
from apps.speech.module import SpeechClassifier

MODULE = SpeechClassifier
DATAMODULE = SpeechCommandsData


def _lazy(module: str, name: str) -> Callable[[list[str]], None]:
    def run(argv: list[str]) -> None:
        getattr(importlib.import_module(module), name)(argv)

    return run


VERBS = {
    "prepare": (_lazy("apps.speech.prepare", "prepare_speech_commands"),
                "build the offline stand-in (espeak-ng): ssm speech prepare --out data/speech_commands_synth "
                "--words sc35 --per-word N"),
    "zero-shot": (_lazy("apps.speech.zero_shot", "zero_shot"),
                  "classifier accuracy at other sample rates: ssm speech zero-shot --ckpt CKPT --rates 16000,8000,4000"),
    "score": (_lazy("apps.speech.score", "score"),
              "IS, mIS, AM and FID of a folder of WAVs: ssm speech score --classifier CKPT --samples DIR"),
}
