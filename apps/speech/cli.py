"""``ssm speech``: Speech Commands classifiers (S4 Sec. 4.4; S4D, S5, DLR), zero-shot sample rates, SC09 scoring.

Each verb imports its own module when it runs.
"""

from __future__ import annotations

from apps.common.cli import lazy_verb
from apps.common.pretrained import export_weights_verb
from apps.speech.data import SpeechCommandsData
from apps.speech.module import SpeechClassifier

MODULE = SpeechClassifier
DATAMODULE = SpeechCommandsData

VERBS = {
    "prepare": (lazy_verb("apps.speech.prepare", "prepare_speech_commands"),
                "build an offline stand-in (espeak-ng; --engine flite, festival or klatt for independent ones, "
                "asterisk for ten recorded digits): ssm speech prepare --out data/speech_commands_synth --words sc35 --per-word N"),
    "zero-shot": (lazy_verb("apps.speech.zero_shot", "zero_shot"),
                  "classifier accuracy at other sample rates: ssm speech zero-shot --ckpt CKPT --rates 16000,8000,4000"),
    "export": (lazy_verb("apps.speech.export", "export"),
               "the classifier as a torch.export program: ssm speech export --ckpt CKPT --out DIR (writes DIR/model.pt2)"),
    "score": (lazy_verb("apps.speech.score", "score"),
              "IS, mIS, AM and FID of a folder of WAVs: ssm speech score --classifier CKPT --samples DIR"),
    "export-weights": export_weights_verb("speech"),
}
