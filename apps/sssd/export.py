"""``ssm sssd export --ckpt CKPT --out DIR``: the denoiser as a ``torch.export`` program (``DIR/model.pt2``).

The program is the noise-prediction network ``SSSDS4.forward(x_t, cond, mask, t)`` on normalised series of
the training window length (batch size free); a deployment runs its own sampler loop around it.
"""

from __future__ import annotations

import torch

from apps.common.export import export_parser, run_export
from apps.sssd.infer import load_model


def export(argv: list[str]) -> None:
    """Export a fit checkpoint's denoiser to ``--out/model.pt2``."""
    args = export_parser("sssd", "the SSSD denoiser (x_t, cond, mask, t) -> noise").parse_args(argv)

    def build():
        module = load_model(args.ckpt)
        net = module.net.eval()
        length, channels = int(module.train_length) or 100, int(module.hparams.channels)
        x = torch.zeros(2, length, channels)
        mask = torch.ones(2, length, channels, dtype=torch.bool)
        t = torch.tensor([1, 2])
        batch = torch.export.Dim("batch", min=1)
        return net, (x, x.clone(), mask, t), ({0: batch}, {0: batch}, {0: batch}, {0: batch})

    run_export(build, args.out)
