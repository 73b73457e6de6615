"""LightningModule of SSSD (Lopez Alcaraz & Strodthoff 2022): conditional diffusion training on masked
series, and ``ssm sssd test``: sampled imputations scored against baselines, one row per mask ratio.

Validation and test draw their masks, diffusion steps and noise from generators of each series' own
(seeded by its index in the split) while the batch runs as one, and gather every series' sums from every DDP process
(:mod:`apps.common.distributed`): the figures do not depend on batching or on the number of processes.

Against the published SSSD code (``model.variant: official`` reproduces its network and, by default, its one
mask per batch and unstandardised values; ``model.mask_alignment: aligned`` its mnr / bm draw; the table is in
data/README.md, "sssd"), two faults of the reference are deliberately not copied in either variant: its
training input at observed entries is ``(sqrt(abar_t) + sqrt(1 - abar_t)) x0`` (1.01 to 1.41 x x0) while its
sampler shows clean x0 (here clean in both), and its aligned mnr / bm blocks hide fewer than k steps whenever
k does not divide L (here only on request).  Not reproduced either: its unshuffled fixed batches and Dropout2d.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from apps.common.distributed import SampleResults
from apps.common.errors import UserError
from apps.common.layers import LayerSpec
from apps.common.optim import OptimConfig
from apps.common.training import TaskModule
from apps.sssd.data import REGULAR_TOLERANCE
from apps.sssd.diffusion import (
    LOSS_ON,
    SAMPLERS,
    diffusion_loss,
    impute_samples,
    make_sampler,
    make_scheduler,
)
from apps.sssd.evaluate import (
    BASELINE_FILLS,
    MetricSums,
    add_baselines,
    linear_fill,
    summary_lines,
    time_positions,
    write_metrics,
)
from apps.sssd.masks import MASK_ALIGNMENTS, MASK_TYPES, batch_masks
from apps.sssd.model import SSSD_LAYER, SSSDS4, VARIANTS
from apps.sssd.point import BLEND_SERIES, POINTS, calibrate_blend, interpolation, point_estimate
from ssmcore.blocks import time_steps as steps_from_times
from ssmcore.registry import dt_layer_names

#: the paper's optimiser: Adam(W) at 2e-4, no schedule
SSSD_OPTIM = OptimConfig(lr=2e-4, weight_decay=0.0, scheduler="constant")


def trained_unconditionally(hparams, length: int) -> bool:
    """Whether a model's training masks included "nothing observed" (ratio 1, or ``mask_length`` = the window):
    only such a model may sample series with no observed value (``ssm sssd generate``, or ``impute`` of a
    series that is entirely NaN)."""
    if hparams.get("mask_length") is not None:
        return length > 0 and int(hparams["mask_length"]) >= length
    ratios = hparams.get("mask_ratio")
    ratios = ratios if isinstance(ratios, (list, tuple)) else [ratios]
    return any(r is not None and float(r) >= 1.0 for r in ratios)


def irregular_message(layer: LayerSpec, where: str, problem: str) -> str:
    """The one line refusing irregular time stamps for a layer that cannot take per-step time steps."""
    name = layer.get("name", "s4") if isinstance(layer, dict) else str(layer)
    return (f"{where}: the time stamps are irregular ({problem}) and model.layer {name!r} cannot take per-step "
            f"time steps; use model.layer.name {' or '.join(dt_layer_names())} (its steps follow the time stamps), "
            "or model the rows as evenly spaced: data.time_column: none (and data.drop_columns: [<the column>] "
            "if it is numeric)")


class SSSDModule(TaskModule):
    """SSSD^S4 imputation / forecasting model.

    Args:
        channels: series channels (linked from ``data.channels``).
        res_channels, skip_channels, n_layers: denoiser size (paper: 256, 256, 36).
        layer: the bidirectional SSM's spec (``{name: s4, d_state: 64}`` in the paper).
        dropout: dropout after each SSM.
        interp_cond: also condition on the linear interpolation of the observed values (PriSTI-style; not in
            the paper, off by default).
        interp_residual: diffuse the residual of the entries to impute after linear interpolation of the
            observed ones, scaled to unit variance per channel, instead of the values themselves (as CorrDiff,
            Mardani et al. 2023, diffuses the residual of a regression mean); not in the paper, off by default.
        diffusion_steps, beta_start, beta_end: the DDPM schedule (paper: 200, 1e-4, 0.02).
        loss_on: ``missing`` (loss on imputed entries, the paper's default) or ``all``.
        mask: training mask type, ``rm``, ``mnr``, ``bm`` or ``tf``.
        mask_ratio: missing fraction, or a list to draw from per series.
        mask_length: missing steps per channel (overrides ``mask_ratio``; ``tf``: the horizon).
            A ratio of 1 (or ``mask_length`` = L) hides every entry: an unconditional model, that
            ``ssm sssd generate`` samples new series from (a list such as ``[0.5, 1.0]`` trains both at once).
        mask_alignment: where ``mnr`` / ``bm`` blocks start: ``free`` (anywhere, the default) or ``aligned``
            (at multiples of the block length, the published code's draw; see :mod:`apps.sssd.masks`).
        mask_per: ``series`` (a training mask per series) or ``batch`` (one per batch, as the published
            training loop); default ``batch`` for ``variant: official``, else ``series``.
        standardise: standardise each channel with the training split's mean and std (default), or feed the
            values as stored (the published code; its MuJoCo set is scaled to [0, 1]); default false for
            ``variant: official``.
        variant: ``ours`` or ``official``, the published SSSD^S4 network (frozen A, dt, P, B; GELU + Linear
            at the end of each S4 layer; weight-normed convolutions; :mod:`apps.sssd.model`) and, through the
            defaults of ``mask_per`` and ``standardise``, its training.
        test_mask, test_ratios: the masks ``ssm sssd test`` scores (default: the training mask and ratio).
        test_samples: imputations per series at test (the point estimate from them, all of them for CRPS).
        point: the point estimate of ``ssm sssd predict`` (``shrunk``, ``mean`` or ``median``;
            :mod:`apps.sssd.point`), as ``ssm sssd impute --point``.
        sampler, sampler_steps: ``ddpm`` (ancestral, every step), ``ddim`` or ``dpm`` with that many steps.
        sample_batch_size: series x samples denoised at once.
        optim: the optimiser (:class:`apps.common.optim.OptimConfig`).

    Time stamps (``data.time_column``): batches then carry each window's times beside its values, and a layer that
    takes per-step time steps (S5, S5-PTD) gets ``dt`` = the steps in units of the training series' median step
    (the ``time_unit`` buffer, kept in the checkpoint): a regular series gives dt = 1 everywhere, which is passed
    as no ``dt`` at all, so it trains and samples exactly as without the time column.  Other layers (S4, the
    default) refuse irregular stamps with a message; regular ones change nothing.  With irregular stamps every
    linear interpolation is in time, between the observations' stamps: the start of ``interp_residual`` and
    ``interp_cond``, the one the ``shrunk`` point estimate falls back to, and the ``linear`` baseline of the test.
    """

    def __init__(
        self,
        channels: int = 14,
        res_channels: int = 64,
        skip_channels: int = 64,
        n_layers: int = 4,
        layer: LayerSpec = SSSD_LAYER,
        dropout: float = 0.0,
        interp_cond: bool = False,
        interp_residual: bool = False,
        embed_dim_in: int = 128,
        embed_dim_mid: int = 512,
        embed_dim_out: int = 512,
        diffusion_steps: int = 200,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        loss_on: str = "missing",
        mask: str = "rm",
        mask_ratio: float | list[float] = 0.8,
        mask_length: int | None = None,
        test_mask: str | None = None,
        test_ratios: list[float] | None = None,
        test_samples: int = 10,
        sampler: str = "ddpm",
        sampler_steps: int | None = None,
        sample_batch_size: int = 256,
        mask_alignment: str = "free",
        mask_per: str | None = None,
        standardise: bool | None = None,
        variant: str = "ours",
        point: str = "shrunk",
        optim: OptimConfig = SSSD_OPTIM, compile: bool = False,
    ) -> None:
        super().__init__(optim, default=SSSD_OPTIM, compile=compile)
        official = variant == "official"
        mask_per = mask_per or ("batch" if official else "series")
        for key, value, choices in (("mask", mask, MASK_TYPES), ("test_mask", test_mask or mask, MASK_TYPES),
                                    ("loss_on", loss_on, LOSS_ON), ("sampler", sampler, SAMPLERS),
                                    ("mask_alignment", mask_alignment, MASK_ALIGNMENTS),
                                    ("mask_per", mask_per, ("series", "batch")), ("variant", variant, VARIANTS),
                                    ("point", point, POINTS)):
            if value not in choices:
                raise ValueError(f"model.{key}: unknown {value!r}; choose one of {', '.join(choices)}")
        if test_samples < 1:
            raise ValueError(f"model.test_samples must be at least 1, got {test_samples}")
        if official and interp_residual:
            raise ValueError("model.interp_residual is not part of the published SSSD; set it to false with "
                             "model.variant: official")
        self.save_hyperparameters()
        self.hparams.mask_per = mask_per
        self.hparams.standardise = (not official) if standardise is None else standardise
        self.net = SSSDS4(in_channels=channels, res_channels=res_channels, skip_channels=skip_channels,
                          n_layers=n_layers, layer=layer, embed_dim_in=embed_dim_in, embed_dim_mid=embed_dim_mid,
                          embed_dim_out=embed_dim_out, dropout=dropout, interp_cond=interp_cond, variant=variant)
        self.noise_scheduler = make_scheduler(diffusion_steps, beta_start, beta_end)
        # per-channel standardisation, saved in the checkpoint; set from the training split at fit start
        self.register_buffer("data_mean", torch.zeros(channels))
        self.register_buffer("data_std", torch.ones(channels))
        self.register_buffer("stats_ready", torch.tensor(False))
        self.register_buffer("res_scale", torch.ones(channels))  # residual std per channel (interp_residual)
        self.register_buffer("train_length", torch.tensor(0))  # the training window length, for inference
        # the training series' median time step (data.time_column's units), 0 without time stamps
        self.register_buffer("time_unit", torch.tensor(0.0, dtype=torch.float64))
        self.written_paths: list[Path] = []
        #: per-series validation / test sums of an epoch, gathered over every DDP process at its end
        self.results = SampleResults()
        self.point_blends: dict = {}  # per test ratio, set from the validation split when a test starts

    # -- standardisation ---------------------------------------------------------------------------
    def set_stats(self, mean: np.ndarray | Tensor, std: np.ndarray | Tensor) -> None:
        """Store the per-channel statistics (C,) used to standardise inputs and invert outputs."""
        self.data_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.data_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        self.stats_ready.fill_(True)

    def standardise(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Raw (B, L, C) with NaN -> (standardised with NaN set to 0, available mask)."""
        available = ~torch.isnan(raw)
        x = (torch.nan_to_num(raw) - self.data_mean) / self.data_std
        return torch.where(available, x, torch.zeros_like(x)), available

    def destandardise(self, x: Tensor) -> Tensor:
        """Back to data units: (..., C) -> (..., C)."""
        return x * self.data_std + self.data_mean

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints from before time stamps were fed have no ``time_unit``: they trained without them."""
        state = checkpoint.get("state_dict")
        if isinstance(state, dict) and "time_unit" not in state:
            state["time_unit"] = torch.tensor(0.0, dtype=torch.float64)

    # -- time stamps -------------------------------------------------------------------------------
    def time_steps(self, times: Tensor | None, unit: float | None = None, where: str = "data.time_column") -> Tensor | None:
        """The per-step time steps ``dt`` (B, L) float32 that the denoiser's SSMs take, from time stamps ``times``
        (B, L) (float64, each window's own; the first step gets 1): the steps divided by ``unit`` (default: the
        training series' median step, ``time_unit``).  None when there are no stamps or the steps are all
        ``unit`` (a regular series: exactly the model without ``dt``).  A layer that cannot take them (S4) gets
        None for evenly spaced stamps at any step, and irregular ones are a :class:`UserError` naming ``where``."""
        unit = unit or float(self.time_unit)
        if times is None or unit <= 0:
            return None
        dt = steps_from_times(times.double(), unit)
        if float((dt - 1).abs().max()) <= REGULAR_TOLERANCE:
            return None
        if not self.net.has_dt:  # evenly spaced rows at another step are rows to such a layer: fine
            steps = dt[:, 1:]
            if steps.numel() == 0 or float((steps / steps.median() - 1).abs().max()) <= REGULAR_TOLERANCE:
                return None
            raise UserError(irregular_message(self.hparams.layer, where, f"steps from {float(steps.min()):.3g} "
                                              f"to {float(steps.max()):.3g} times the step {unit:.4g}"))
        return dt.float()

    def setup(self, stage: str) -> None:
        """Refuse, before any work, irregular time stamps that the layer cannot take (one line, exit 2)."""
        dm = getattr(getattr(self, "_trainer", None), "datamodule", None)
        if dm is None or not hasattr(dm, "irregular_steps") or self.net.has_dt:
            return
        problem = dm.irregular_steps()
        if problem:
            where = f"data.time_column {dm.hparams.time_column!r} of {dm.hparams.path}"
            raise UserError(irregular_message(self.hparams.layer, where, problem))

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if not bool(self.stats_ready) and dm is not None and hasattr(dm, "stats"):
            C = self.hparams.channels
            self.set_stats(*(dm.stats() if self.hparams.standardise else (np.zeros(C), np.ones(C))))
            self.train_length.fill_(int(dm.splits["train"].shape[1]))
            unit = dm.time_unit() if hasattr(dm, "time_unit") else None
            self.time_unit.fill_(unit or 0.0)
            if self.hparams.variant == "official":  # a fresh model (not a resume): the published C~ start
                self.net.init_official_C(int(self.train_length))
            if self.hparams.interp_residual:
                train_times = (getattr(dm, "time_splits", None) or {}).get("train")
                dt = None if train_times is None else self.time_steps(torch.from_numpy(np.ascontiguousarray(train_times[:1024])))
                self.res_scale.copy_(self.residual_scale(torch.from_numpy(dm.splits["train"][:1024]).to(self.device),
                                                         None if dt is None else dt.to(self.device)))

    @torch.no_grad()
    def residual_scale(self, raw: Tensor, dt: Tensor | None = None) -> Tensor:
        """Per-channel std (C,) of the standardised series minus their linear interpolation (in time with the
        series' time steps ``dt`` (N, L), :meth:`time_steps`), on the entries the training masks hide in ``raw``
        (N, L, C)."""
        x, available = self.standardise(raw)
        cond = self._masks(x.shape, self.hparams.mask, self.hparams.mask_ratio, torch.Generator().manual_seed(0))
        cond &= available
        hidden = available & ~cond
        err = torch.where(hidden, x - linear_fill(x, cond, torch.zeros_like(self.data_mean), time_positions(dt)), 0.0)
        count = hidden.sum((0, 1)).clamp_min(1)
        return (err.square().sum((0, 1)) / count).sqrt().clamp_min(1e-3)

    def _diffused(self, x: Tensor, cond_mask: Tensor, dt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """What the diffusion runs on (the series, or its scaled residual after interpolation, in time when the
        series have time steps ``dt``) and the offset."""
        if not self.hparams.interp_residual:
            return x, torch.zeros_like(x)
        interp = linear_fill(x, cond_mask, torch.zeros_like(self.data_mean), time_positions(dt))
        return (x - interp) / self.res_scale, interp

    # -- training ----------------------------------------------------------------------------------
    def _masks(self, shape: torch.Size, kind: str, ratio, generator: torch.Generator | None,
               shared: bool = False) -> Tensor:
        B, L, C = shape
        return batch_masks(kind, B, L, C, ratio, self.hparams.mask_length, generator,
                           alignment=self.hparams.get("mask_alignment", "free"), shared=shared).to(self.device)

    def _loss(self, raw: Tensor, generator: torch.Generator | None = None, dt: Tensor | None = None) -> Tensor:
        x, available = self.standardise(raw)
        shared = self.hparams.get("mask_per", "series") == "batch"
        cond_mask = self._masks(x.shape, self.hparams.mask, self.hparams.mask_ratio, generator, shared) & available
        target, _ = self._diffused(x, cond_mask, dt)
        return diffusion_loss(self.net, target, available, cond_mask, self.noise_scheduler, self.hparams.loss_on,
                              generator, cond_values=x, dt=dt)

    def _batch(self, batch) -> tuple[Tensor, Tensor | None]:
        """A loader's batch as (values (B, L, C), dt (B, L) or None): see :meth:`time_steps`."""
        return batch[0], self.time_steps(batch[1] if len(batch) > 1 else None)

    def training_step(self, batch, batch_idx):
        raw, dt = self._batch(batch)
        loss = self._loss(raw, dt=dt)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        raw, dt = self._batch(batch)
        index = self.results.next_indices(self.trainer, "val", len(raw))
        # the same masks, steps and noise every epoch, whatever the batching or the number of processes:
        # series i draws them all from its own generator (seed 1000 + i), the batch runs as one
        gens = [torch.Generator().manual_seed(1000 + i) for i in index.tolist()]
        x, available = self.standardise(raw)
        cond_mask = self._series_masks(x.shape, self.hparams.mask, self.hparams.mask_ratio, gens) & available
        target, _ = self._diffused(x, cond_mask, dt)
        sums = diffusion_loss(self.net, target, available, cond_mask, self.noise_scheduler, self.hparams.loss_on,
                              gens, cond_values=x, per_row=True, dt=dt)
        counted = available & ~cond_mask if self.hparams.loss_on == "missing" else available
        self.results.add(loss=sums.detach().double(), count=counted.sum(dim=(1, 2)))

    def _series_masks(self, shape: torch.Size, kind: str, ratio, generators: list[torch.Generator]) -> Tensor:
        """Conditioning masks (B, L, C), series b's drawn from ``generators[b]`` alone."""
        _, L, C = shape
        alignment = self.hparams.get("mask_alignment", "free")
        return torch.cat([batch_masks(kind, 1, L, C, ratio, self.hparams.mask_length, g, alignment=alignment)
                          for g in generators]).to(self.device)

    def on_validation_epoch_end(self) -> None:
        rows = self.results.gather(self.trainer, "val")
        if rows:
            self.log("val/loss", float(rows["loss"].sum() / rows["count"].sum().clamp_min(1)), prog_bar=True, sync_dist=True)

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, raw: Tensor, cond_mask: Tensor, n_samples: int, sampler: str | None = None,
               steps: int | None = None, generator=None, on_step=None, dt: Tensor | None = None) -> Tensor:
        """Imputations in data units: raw (B, L, C) with NaN, cond_mask (B, L, C) -> (S, B, L, C).

        Entries where ``cond_mask`` is True (and not NaN) are returned unchanged; ``dt`` (B, L): the series' time
        steps (:meth:`time_steps`), None for a regular series."""
        x, available = self.standardise(raw)
        cond_mask = cond_mask & available
        target, offset = self._diffused(x, cond_mask, dt)
        samples = impute_samples(self.net, target, cond_mask, self.noise_scheduler, n_samples, cond_values=x,
                                 batch_size=self.hparams.sample_batch_size, sampler=sampler or self.hparams.sampler,
                                 steps=steps or self.hparams.sampler_steps, loss_on=self.hparams.loss_on,
                                 generator=generator, on_step=on_step, dt=dt)
        samples = offset + samples * self.res_scale if self.hparams.interp_residual else samples
        return torch.where(cond_mask, raw, self.destandardise(samples))

    def on_predict_start(self) -> None:
        """The blend of the ``shrunk`` point estimate of ``predict``, fitted on the validation split at the training
        masks (as :meth:`on_test_start`; 1 without a validation split)."""
        self.predict_blend = self._split_blends("val", [(None, None)])[0]

    def _split_blends(self, name: str, masks: list[tuple[str | None, object]]) -> list[float]:
        """:func:`apps.sssd.point.calibrate_blend` on the datamodule's split ``name`` for each (mask kind, ratio) of
        ``masks`` (None: the training ones), with a progress bar: each is a sampling pass over up to
        :data:`apps.sssd.point.BLEND_SERIES` series, as long as a test of as many series.  1.0 without the split."""
        dm = getattr(self.trainer, "datamodule", None)
        splits = getattr(dm, "splits", None) or {}
        val = splits.get(name)
        if val is None or len(val) == 0:
            return [1.0] * len(masks)
        times = (getattr(dm, "time_splits", None) or {}).get(name)
        raw = torch.from_numpy(np.ascontiguousarray(val)).to(self.device)
        times = None if times is None else torch.from_numpy(np.ascontiguousarray(times))
        h = self.hparams
        S, n = h.test_samples, min(len(val), BLEND_SERIES)
        steps = len(make_sampler(h.sampler, self.noise_scheduler, h.sampler_steps).timesteps)
        per_fit = -(-n * S // h.sample_batch_size) * steps
        with Progress(disable=not self.trainer.is_global_zero) as progress:
            task = progress.add_task(f"point estimate's blend: {n} {name} series x {S} samples, {h.sampler}-{steps}",
                                     total=per_fit * len(masks))
            return [calibrate_blend(self, raw, S, kind=kind, ratio=ratio, times=times,
                                    on_step=lambda: progress.advance(task)) for kind, ratio in masks]

    def predict_step(self, batch, batch_idx):
        """The point estimate (``model.point``, ``shrunk`` by default, as ``ssm sssd impute``) of ``test_samples``
        imputations of each batch's NaN entries, data units (B, L, C)."""
        raw, dt = self._batch(batch)
        observed = ~torch.isnan(raw)
        samples = self.sample(raw, observed, self.hparams.test_samples, dt=dt)
        return point_estimate(samples, interpolation(raw, observed, self.data_mean, time_positions(dt)), ~observed,
                              self.hparams.get("point", "shrunk"), self.data_std, getattr(self, "predict_blend", 1.0))

    # -- test: one row per mask ratio --------------------------------------------------------------
    def _test_settings(self) -> tuple[str, list]:
        h = self.hparams
        ratios = h.test_ratios or (h.mask_ratio if isinstance(h.mask_ratio, list) else [h.mask_ratio])
        return h.test_mask or h.mask, list(ratios)

    #: the methods of each test row: SSSD then every baseline, in :func:`apps.sssd.evaluate.add_baselines`' order
    TEST_METHODS = ("SSSD", "SSSD median", *BASELINE_FILLS)

    def on_test_start(self) -> None:
        """The blends of the point estimate (:mod:`apps.sssd.point`), one per test ratio, fitted on the validation
        split at the test mask and ratio, never on the test split."""
        splits = getattr(getattr(self.trainer, "datamodule", None), "splits", None) or {}
        val = splits.get("val")
        kind, ratios = self._test_settings()
        self.point_blends = dict(zip(ratios, self._split_blends("val", [(kind, r) for r in ratios])))
        print(f"point estimate: blends {', '.join(f'{v:.3g}' for v in self.point_blends.values())}, fitted on "
              f"{len(val) if val is not None else 0} validation series", flush=True)
    #: the running sums of :class:`apps.sssd.evaluate.MetricSums`, one column each
    SUM_FIELDS = MetricSums.FIELDS

    def test_step(self, batch, batch_idx):
        kind, ratios = self._test_settings()
        raw, dt = self._batch(batch)
        index = self.results.next_indices(self.trainer, "test", len(raw)).tolist()
        available = ~torch.isnan(raw)
        S = self.hparams.test_samples
        rows = [[] for _ in index]  # per series: per ratio, per method, the MetricSums fields
        for ratio in ratios:
            # series i's mask, and each of its S imputations, draw from generators of their own (seeded by the
            # series' index in the split): the figures do not depend on batching or the number of processes;
            # the whole batch is sampled at once
            key = round(ratio * 1e6) << 32
            masks = [torch.Generator().manual_seed(key + i) for i in index]
            cond_mask = self._series_masks(raw.shape, kind, ratio, masks) & available
            target = available & ~cond_mask
            noise = [torch.Generator().manual_seed(((key + i) * 7919 + s + 1) % (1 << 62)) for s in range(S) for i in index]
            samples = self.sample(raw, cond_mask, S, generator=noise, dt=dt)  # (S, B, L, C)
            interp = interpolation(raw, cond_mask, self.data_mean, time_positions(dt))
            for b in range(len(index)):
                one = slice(b, b + 1)
                sums = {"SSSD": MetricSums(), "SSSD median": MetricSums()}
                point = point_estimate(samples[:, one], interp[one], target[one], "shrunk", self.data_std,
                                       self.point_blends.get(ratio, 1.0))  # apps.sssd.point
                sums["SSSD"].add(point, raw[one], target[one], samples[:, one])
                sums["SSSD median"].add(samples[:, one].median(0).values, raw[one], target[one], samples[:, one])
                add_baselines(sums, raw[one], cond_mask[one], target[one], self.data_mean,
                              None if dt is None else time_positions(dt[one]))
                rows[b].append([[float(getattr(sums[m], f)) for f in self.SUM_FIELDS] for m in self.TEST_METHODS])
        self.results.add(sums=torch.tensor(rows, dtype=torch.float64))  # (B, ratios, methods, fields)

    def _test_results(self) -> dict[tuple[str, float], dict[str, dict[str, float]]]:
        """The metrics of every (mask, ratio) and method over the whole test split, from every process."""
        rows = self.results.gather(self.trainer, "test")
        if not rows:
            return {}
        kind, ratios = self._test_settings()
        totals = rows["sums"].sum(0)  # (ratios, methods, fields)
        results = {}
        for r, ratio in enumerate(ratios):
            by = {}
            for m, method in enumerate(self.TEST_METHODS):
                sums = MetricSums()
                for f, field in enumerate(self.SUM_FIELDS):
                    setattr(sums, field, float(totals[r, m, f]))
                sums.count = int(sums.count)
                by[method] = sums.result()
            results[(kind, ratio)] = by
        return results

    def on_test_epoch_end(self) -> None:
        results = self._test_results()
        for (kind, ratio), by in results.items():
            for method, values in by.items():
                for metric in ("MSE", "MAE", "CRPS", "NCRPS", "CRPS-sum"):
                    self.log(f"test/{method}_{metric}@{kind}{ratio:g}", values[metric], sync_dist=True)
        if self.trainer.is_global_zero:
            self.written_paths = write_metrics(results, self.trainer.default_root_dir)
            print("\n".join(summary_lines(results)), flush=True)
