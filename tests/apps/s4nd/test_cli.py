"""``ssm s4nd`` end to end on a tiny ImageFolder: fit logs one metric per resolution, zero-shot writes its
table and plot, progressive resizing follows its schedule, mistakes are one line with exit code 2."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from apps.common.cli import main
from apps.s4nd.progressive import ProgressiveResizing

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "s4nd" / "tiny.yaml")


def _fit(image_folder: Path, *extra: str) -> int:
    return main(["s4nd", "fit", "-c", TINY, "--data.root", str(image_folder), "--model.num_classes", "3",
                 "--data.resolution", "8", "--data.eval_resolutions", "[4, 8, 16]", *extra])


def _metrics(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(next((run / "csv").rglob("metrics.csv")))))


def test_fit_logs_each_resolution_then_zero_shot_writes_table_and_plot(image_folder, runs_dir, capsys):
    assert _fit(image_folder, "--trainer.max_epochs", "1") == 0
    run = runs_dir / "s4nd" / "tiny"
    header = _metrics(run)[0].keys()
    assert {"val/acc@4", "val/acc@8", "val/acc@16", "val/acc", "train/epoch_time_s"} <= set(header)
    best = run / "checkpoints" / "best.ckpt"
    assert _fit(image_folder, "--model.layer", "{name: conv2d, d_state: 8}", "--trainer.max_epochs", "1",
                "--trainer.default_root_dir", str(runs_dir / "conv")) == 0
    baseline = runs_dir / "conv" / "checkpoints" / "best.ckpt"
    capsys.readouterr()
    assert main(["s4nd", "zero-shot", "--ckpt", str(best), "--resolutions", "4,8,16", "--baseline", str(baseline),
                 "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    folder = run / "zero-shot"
    for name in ("zero_shot.md", "zero_shot.csv", "zero_shot.png"):
        assert (folder / name).is_file() and str(folder / name) in out
    assert (folder / "zero_shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(folder / "zero_shot.csv")))
    assert [r["resolution"] for r in rows] == ["4", "8", "16"]
    assert [float(r["rate"]) for r in rows] == [2.0, 1.0, 0.5]
    assert {"S4ND (best) acc", "Conv2D baseline acc", "gap"} <= set(rows[0])
    assert all(0 <= float(r["S4ND (best) acc"]) <= 100 for r in rows)
    assert "| 16 | 0.5 |" in (folder / "zero_shot.md").read_text()
    # a checkpoint kept outside a run (here an exported folder): the outputs go beside it, not two levels up
    exported = runs_dir / "exports" / "s4nd_tiny"
    assert main(["s4nd", "export-weights", "--ckpt", str(best), "--out", str(exported)]) == 0
    assert main(["s4nd", "zero-shot", "--ckpt", str(exported), "--resolutions", "8", "--batch-size", "8"]) == 0
    assert (runs_dir / "exports" / "zero-shot" / "zero_shot.csv").is_file()
    assert not (runs_dir / "zero-shot").exists()


def test_progressive_resizing_follows_its_schedule(image_folder, runs_dir):
    callback = ProgressiveResizing({0: 4, 2: 8, 1: 6})
    assert [callback.resolution_at(e) for e in range(4)] == [4, 6, 8, 8]
    args = ["--trainer.max_epochs", "3", "--trainer.callbacks+=apps.s4nd.progressive.ProgressiveResizing",
            "--trainer.callbacks.schedule", "{0: 4, 1: 6, 2: 8}"]
    assert _fit(image_folder, *args) == 0
    rows = _metrics(runs_dir / "s4nd" / "tiny")
    by_epoch = {int(r["epoch"]): float(r["train/resolution"]) for r in rows if r.get("train/resolution")}
    assert by_epoch == {0: 4.0, 1: 6.0, 2: 8.0}


def test_progressive_schedule_must_start_at_epoch_0():
    from apps.common.errors import UserError

    with pytest.raises(UserError, match="epoch 0"):
        ProgressiveResizing({2: 14})


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.channels", "2"], "data.channels must be 1 (grey) or 3 (RGB), got 2"),
        (["--model.num_classes", "10"], "model.num_classes is 10 but"),
        (["--data.root", "nowhere/mnist5k"], "data.root not found: nowhere/mnist5k"),
        (["--model.layer.name", "attention"], "model.layer.name: unknown mixer 'attention'"),
        (["--model.layer", "{name: conv2d, bandlimit: 0.5}"], "model.layer.bandlimit: conv2d has no option"),
        (["--model.layer.bandlimit", "wide"], "model.layer.bandlimit: expected a number"),
        (["--data.resolution", "0"], "data.resolution (model.train_resolution) and data.eval_resolutions must be "
                                     "positive, got 0"),
    ],
    ids=["bad-channels", "class-count", "missing-root", "bad-mixer", "bad-conv-option", "bad-s4nd-value",
         "zero-resolution"],
)
def test_user_errors_are_one_line_with_exit_2(image_folder, args, expected, capsys):
    assert _fit(image_folder, *args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    line = err.splitlines()[-1]  # (pytest -p no:warnings lets Lightning's warnings reach stderr first)
    assert expected in line and line.startswith("ssm s4nd fit: error:"), err


def test_zero_shot_errors(tmp_path, capsys):
    assert main(["s4nd", "zero-shot", "--ckpt", str(tmp_path / "missing.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["s4nd", "zero-shot", "--ckpt", str(tmp_path / "x.ckpt"), "--resolutions", "7,big"]) == 2
    assert "--resolutions" in capsys.readouterr().err
