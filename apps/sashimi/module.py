"""``WaveformGenerator``: the LightningModule that trains SaShiMi on quantised waveforms.

Teacher-forced cross-entropy (token t predicted from tokens < t, padding masked out); the NLL
is logged in bits per sample (``train/nll``, ``val/nll``, ``test/nll``; a uniform model over 256
levels scores 8); the validation and test figures are over every sample of the split's clips, gathered
from every DDP process (:mod:`apps.common.distributed`).  Every ``sample_every_n_epochs`` epochs a few clips are generated in recurrent
mode and logged to TensorBoard as audio.
Goel, Gu, Donahue, Re (2022), "It's Raw! Audio Generation with State-Space Models".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from apps.common.distributed import SampleResults
from apps.common.errors import UserError
from apps.common.layers import LayerSpec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.sashimi.model import SASHIMI_LAYER, SaShiMi, shift_right
from apps.sashimi.sampling import sample
from apps.sashimi.waveform import dequantize, silence_level

#: the paper's optimiser for SaShiMi (AdamW, lr 4e-3, no weight decay, cosine)
GENERATOR_OPTIM = OptimConfig(lr=4e-3, weight_decay=0.0)


class WaveformGenerator(TaskModule):
    """SaShiMi trained by teacher forcing on batches ``(tokens (B, L) long, mask (B, L) bool)``.

    Args:
        d_model, n_layers, pool, expand, ff_expand, dropout, unet: the backbone
            (:class:`apps.sashimi.model.SaShiMi`).
        layer: the SSM layer spec, ``{name: s4, d_state: 64, ...}`` (a causal layer).
        quantization, sample_rate: None (default) takes the data's at setup; a value must match it.
        bits: levels are ``2**bits`` (must match the data).  The three are stored in the checkpoint
            so that ``ssm sashimi generate`` decodes the way the model was trained.
        sample_every_n_epochs: log generated audio every N validation epochs (0: never).
        sample_seconds, n_samples: length and number of the logged clips.
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`; default lr 4e-3, no weight decay).
    """

    network_attr = "model"  # what ``--model.compile true`` compiles

    def __init__(
        self,
        d_model: int = 64,
        n_layers: int = 8,
        pool: Sequence[int] = (4, 4),
        expand: int = 2,
        ff_expand: int = 2,
        layer: LayerSpec = SASHIMI_LAYER,
        dropout: float = 0.0,
        unet: bool = False,
        quantization: str | None = None,
        bits: int = 8,
        sample_rate: int | None = None,
        sample_every_n_epochs: int = 5,
        sample_seconds: float = 1.0,
        n_samples: int = 2,
        optim: OptimConfig = GENERATOR_OPTIM, compile: bool = False,
        monitor: str = "val/nll",
        monitor_mode: str = "min",
    ) -> None:
        super().__init__(optim, default=GENERATOR_OPTIM, monitor=monitor, monitor_mode=monitor_mode, compile=compile)
        self.save_hyperparameters()
        self.quantization, self.bits, self.sample_rate = quantization or "mu-law", bits, sample_rate or 16000
        self._adopt = {"quantization": quantization is None, "sample_rate": sample_rate is None}
        self.model = SaShiMi(
            n_classes=2**bits, d_model=d_model, n_layers=n_layers, pool=pool, expand=expand, ff_expand=ff_expand,
            layer=layer, dropout=dropout, unet=unet,
        )
        self.sample_every_n_epochs, self.sample_seconds, self.n_samples = sample_every_n_epochs, sample_seconds, n_samples
        #: per-clip NLL sums and sample counts of an evaluation epoch
        self.results = SampleResults()

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        for key in ("quantization", "bits", "sample_rate"):
            mine, theirs = getattr(self, key), getattr(data, key, getattr(self, key))
            if self._adopt.get(key):
                setattr(self, key, theirs)
            elif mine != theirs:
                raise UserError(f"model.{key} is {mine!r} but data.{key} is {theirs!r}; set both to the same value")

    @property
    def start_token(self) -> int:
        """The silence level: the first input of every sequence."""
        return silence_level(self.quantization, self.bits)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["waveform"] = {"quantization": self.quantization, "bits": self.bits, "sample_rate": self.sample_rate}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key, value in checkpoint.get("waveform", {}).items():
            setattr(self, key, value)

    def forward(self, tokens: Tensor) -> Tensor:
        """Teacher-forced logits (B, L, 2**bits) for the clip ``tokens`` (B, L)."""
        return self.model(shift_right(tokens, self.start_token))[0]

    def nll(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Mean negative log-likelihood in nats per (unpadded) sample."""
        total, count = self.clip_nll(batch)
        return total.sum() / count.sum().clamp(min=1)

    def clip_nll(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Per clip: summed negative log-likelihood in nats (B,) and the number of unpadded samples (B,)."""
        tokens, mask = batch
        logits = self(tokens)
        loss = F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")  # (B, L)
        mask = mask.to(loss.dtype)
        return (loss * mask).sum(1), mask.sum(1)

    def _shared(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        loss = self.nll(batch)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, prog_bar=False, on_step=on_step, on_epoch=True, batch_size=batch[0].shape[0])
        self.log(f"{split}/nll", loss / math.log(2), prog_bar=True, on_step=on_step, on_epoch=True,
                 batch_size=batch[0].shape[0])
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared(batch, "train")

    def _eval_step(self, batch: tuple[Tensor, Tensor]) -> None:
        total, count = self.clip_nll(batch)
        self.results.add(nll=total.double(), count=count.double())

    def _eval_end(self, split: str) -> None:
        rows = self.results.gather(self.trainer, split)
        if rows:
            loss = float(rows["nll"].sum() / rows["count"].sum().clamp(min=1))
            self.log(f"{split}/loss", loss, sync_dist=True)
            self.log(f"{split}/nll", loss / math.log(2), prog_bar=True, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")
        every = self.sample_every_n_epochs
        if not every or self.trainer.sanity_checking or (self.current_epoch + 1) % every:
            return
        if not self.trainer.is_global_zero:
            return
        length = max(1, int(self.sample_seconds * self.sample_rate))
        generator = torch.Generator(device=self.device).manual_seed(self.current_epoch)
        tokens, _ = sample(self.model, self.n_samples, length, start_token=self.start_token,
                           generator=generator, progress=False)
        audio = dequantize(tokens, self.quantization, self.bits)
        for logger in self.loggers:
            writer = getattr(logger, "experiment", None)
            if hasattr(writer, "add_audio"):
                for i, clip in enumerate(audio):
                    writer.add_audio(f"samples/{i}", clip[None].cpu(), self.global_step, sample_rate=self.sample_rate)
