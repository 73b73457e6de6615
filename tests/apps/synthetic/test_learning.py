"""Learning check (DLR paper, Shift): a short CPU run at L = 512 with a DLR layer reaches R^2 > 0.99.

About 30 s of CPU time on one idle core (300 steps of batch 16).
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from apps.synthetic.data import SyntheticData
from apps.synthetic.module import SyntheticModule

#: one linear DLR layer with 512 modes on the roots of unity (its default init): a delta kernel at
#: any delay below 512 is then exactly representable; little decay (rho^2 = 5e-4)
SHIFT_LAYER = {"name": "dlr", "d_state": 512, "activation": None, "postact": "linear", "dt_min": 1e-3, "dt_max": 1e-3}


@pytest.mark.slow
def test_dlr_shift_at_512_reaches_r2_above_0_99():
    pl.seed_everything(0, verbose=False)
    data = SyntheticData(
        task="shift", length=512, num_shifts=2, batch_size=16, steps_per_epoch=75, val_size=64
    )
    model = SyntheticModule(
        task="shift",
        num_shifts=2,
        d_model=16,
        n_layers=1,
        layer=SHIFT_LAYER,
        ff_expand=0,
        norm="batch",
        optim={"lr": 1e-2, "ssm_lr": 1e-3},
    )
    trainer = pl.Trainer(
        max_steps=300,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data)
    r2 = trainer.validate(model, datamodule=data, verbose=False)[0]["val/r2"]
    assert r2 > 0.99, f"Shift L=512 with DLR reached only R^2 = {r2:.4f}"
