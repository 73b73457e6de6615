"""``ssm sashimi``: raw-audio generation with SaShiMi.

``ssm sashimi prepare speech-commands`` and ``ssm sashimi score`` are the speech app's verbs
(``ssm speech prepare`` / ``score``), reached through the app registry.  The verbs import their
modules when called.
"""

from __future__ import annotations

from collections.abc import Callable

from apps.common.cli import lazy_verb, load_app
from apps.common.errors import UserError
from apps.common.pretrained import export_weights_verb
from apps.sashimi.module import WaveformGenerator
from apps.sashimi.waveform import WaveformData

MODULE = WaveformGenerator
DATAMODULE = WaveformData


def _speech_verb(verb: str) -> Callable[[list[str]], None]:
    """The speech app's ``verb``, looked up through the app registry (no import of another app)."""

    def run(argv: list[str]) -> None:
        load_app("speech").VERBS[verb][0](argv)

    return run


#: what ``ssm sashimi prepare <what>`` can build
PREPARERS = {"speech-commands": _speech_verb("prepare"), "piano": lazy_verb("apps.sashimi.piano", "prepare_piano")}


def prepare(argv: list[str]) -> None:
    """``ssm sashimi prepare speech-commands|piano [options]``."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ssm sashimi prepare {" + ",".join(PREPARERS) + "} [options]  (--help after the name for its options)")
        return
    what, rest = argv[0], argv[1:]
    if what not in PREPARERS:
        raise UserError(f"unknown dataset {what!r} to prepare; choose one of {', '.join(PREPARERS)}")
    PREPARERS[what](rest)


VERBS = {
    "prepare": (prepare, "build an offline stand-in: ssm sashimi prepare piano --out data/piano --minutes M | "
                         "prepare speech-commands --words sc09 --out data/sc09 (= ssm speech prepare)"),
    "generate": (lazy_verb("apps.sashimi.generate", "generate"),
                 "sample audio in recurrent mode: ssm sashimi generate --ckpt CKPT --n 16 --seconds 4 --batch 16 "
                 "[--stream: write while generating; | aplay]"),
    "score": (_speech_verb("score"),
              "IS, mIS, AM and FID of generated SC09 clips (= ssm speech score --classifier CKPT --samples DIR)"),
    "export-weights": export_weights_verb("sashimi"),
}
