"""CCNN as the s4nd app's mixer: trained at one resolution, zero-shot at others, from the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from apps.common.cli import main
from apps.s4nd.model import ConvNeXtNet, IsotropicNet

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "s4nd" / "tiny.yaml")


def test_ccnn_kernels_are_tied_to_the_training_grid_not_the_first_batch():
    spec = {"name": "ccnn", "d_state": 8}
    iso = IsotropicNet(in_channels=1, num_classes=3, train_resolution=14, d_model=8, n_layers=1, layer=spec)
    iso(torch.randn(1, 28, 28, 1))  # the first forward at another resolution
    refs = [tuple(int(v) for v in m.l_ref) for m in iso.modules() if hasattr(m, "l_ref")]
    assert refs and all(r == tuple(iso.train_grid) for r in refs)
    nxt = ConvNeXtNet(in_channels=1, num_classes=3, train_resolution=16, dims=(8, 16), depths=(1, 1), layer=spec)
    grids = [tuple(g) for g in nxt.grids(nxt.train_size)]
    stage_refs = [[tuple(int(v) for v in m.l_ref) for m in stage.modules() if hasattr(m, "l_ref")]
                  for stage in nxt.stages]
    assert [refs[0] for refs in stage_refs] == grids


def test_ccnn_mixer_fits_and_runs_zero_shot(image_folder, runs_dir, capsys):
    assert main(["s4nd", "fit", "-c", TINY, "--data.root", str(image_folder), "--model.num_classes", "3",
                 "--data.resolution", "8", "--data.eval_resolutions", "[4, 8, 16]", "--trainer.max_epochs", "1",
                 "--model.layer", "{name: ccnn, d_state: 8}"]) == 0
    best = runs_dir / "s4nd" / "tiny" / "checkpoints" / "best.ckpt"
    capsys.readouterr()
    assert main(["s4nd", "zero-shot", "--ckpt", str(best), "--resolutions", "4,8,16", "--batch-size", "8"]) == 0
    rows = list(csv.DictReader(open(runs_dir / "s4nd" / "tiny" / "zero-shot" / "zero_shot.csv")))
    assert [float(r["rate"]) for r in rows] == [2.0, 1.0, 0.5]
    assert all(0 <= float(r["CCNN (best) acc"]) <= 100 for r in rows)
