"""``ssm speech export --ckpt CKPT --out DIR``: the classifier as a ``torch.export`` program (``DIR/model.pt2``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from apps.common.errors import UserError
from apps.common.export import export_parser, run_export
from apps.speech.module import SpeechClassifier, load_speech_classifier


class InferenceClassifier(nn.Module):
    """The trained classifier for deployment: unnormalised features (B, L, d_input) -> logits (B, num_classes).

    The features are what the checkpoint's ``data.features`` computes (the waveform, MFCCs, or for ``mfcc_cmn``
    MFCCs less the clip's cepstral mean: :func:`apps.speech.data.cepstral_mean_removed`).
    The training-set statistics saved in the checkpoint are applied first (as the data loader does), and the
    SSM runs at ``rate`` (1: input at the training sample rate).
    """

    def __init__(self, classifier: SpeechClassifier, rate: float = 1.0) -> None:
        super().__init__()
        self.net, self.rate = classifier.net, float(rate)
        normalize = bool(classifier.has_input_stats)
        self.register_buffer("mean", classifier.input_mean.clone() if normalize else torch.zeros_like(classifier.input_mean))
        self.register_buffer("std", classifier.input_std.clone() if normalize else torch.ones_like(classifier.input_std))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std, rate=self.rate)


def example_length(options: dict) -> int:
    """The sequence length of one clip: a second of samples (raw), or its 10 ms MFCC frames."""
    rate = int(options.get("sample_rate") or 16000)
    return rate if options.get("features", "raw") == "raw" else rate // int(0.01 * rate) + 1


def export(argv: list[str]) -> None:
    """Export a fit checkpoint's classifier (batch size free, clip length fixed) to ``--out/model.pt2``."""
    args = export_parser("speech", "a Speech Commands classifier").parse_args(argv)

    def build():
        classifier, options = load_speech_classifier(args.ckpt)
        model = InferenceClassifier(classifier).eval()
        x = torch.zeros(2, example_length(options), classifier.hparams.d_input)
        return model, (x,), ({0: torch.export.Dim("batch", min=1)},)

    try:
        run_export(build, args.out)
    except torch._dynamo.exc.UserError as e:  # noqa: SLF001 -- an untraceable option of the checkpoint's model
        raise UserError(f"{args.ckpt}: this model cannot be exported ({str(e).splitlines()[0]})") from e
