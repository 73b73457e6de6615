"""End to end: prepared videos -> feature cache -> fit -> checkpoint; errors as one line."""

import csv
from pathlib import Path

from apps.common.cli import main
from apps.vis4mer.prepare import digit_sequence

TINY = str(Path(__file__).resolve().parents[3] / "recipes" / "vis4mer" / "tiny.yaml")


def test_tiny_fit_from_prepared_videos_to_a_checkpoint(moving_mnist, runs_dir, capsys):
    code = main(["vis4mer", "fit", "-c", TINY, "--data.root", str(moving_mnist), "--model.d_input", "192",
                 "--data.l_secs", "4", "--trainer.max_epochs", "1"])
    assert code == 0
    checkpoints = runs_dir / "vis4mer" / "tiny" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file() and (checkpoints / "best.ckpt").is_file()
    rows = list(csv.DictReader(open(next((runs_dir / "vis4mer" / "tiny" / "csv").rglob("metrics.csv")))))
    videos = [float(r["val/videos"]) for r in rows if r.get("val/videos")]
    assert videos and videos[-1] == 2.0  # 2 val videos of 8 s, 2 spans each, aggregated per video
    assert "checkpoint:" in capsys.readouterr().out
    code = main(["vis4mer", "test", "-c", TINY, "--data.root", str(moving_mnist), "--model.d_input", "192",
                 "--data.task", "seven_count", "--data.l_secs", "4", "--model.decoder", "meanpool"])
    assert code == 0


def test_user_errors_are_one_line_with_exit_2(moving_mnist, tmp_path, runs_dir, capsys):
    assert main(["vis4mer", "fit", "-c", TINY, "--data.root", str(moving_mnist), "--model.d_input", "7"]) == 2
    assert "--model.d_input 192" in capsys.readouterr().err
    assert main(["vis4mer", "fit", "-c", TINY, "--data.root", str(tmp_path)]) == 2
    assert "no feature cache" in capsys.readouterr().err
    assert main(["vis4mer", "fit", "-c", TINY, "--data.root", str(tmp_path), "--data.features",
                 str(moving_mnist / "features"), "--model.d_input", "192"]) == 2
    assert "lvu_1.0/first_digit/train.csv" in capsys.readouterr().err
    assert main(["vis4mer", "extract-features", "--videos", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert main(["vis4mer", "prepare", "moving-mnist", "--out", str(moving_mnist)]) == 0  # prepared: kept
    assert "--force" in capsys.readouterr().out


def test_sequences_hide_the_first_digit_from_counts():
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(50):
        seq = digit_sequence(rng)
        assert sorted(set(seq)) == list(range(10)) and seq.count(7) == 1 + len(seq) - 10
