"""Generative metrics: IS = 1 for identical predictions, FID = 0 for identical sets (float64), and
``ssm sashimi score`` on a folder of clips and the real test set."""

from __future__ import annotations

import csv
import shutil
import warnings

import numpy as np
import pytest

from apps.common.cli import main
from apps.speech.metrics import am_score, frechet_distance, inception_score, modified_inception_score
from tests.apps.speech.speech_sets import tiny_checkpoint, tiny_set


def test_inception_scores_bounds():
    rng = np.random.default_rng(0)
    same = np.tile(rng.dirichlet(np.ones(10)), (50, 1))
    assert inception_score(same) == pytest.approx(1.0, abs=1e-12)
    assert modified_inception_score(same) == pytest.approx(1.0, abs=1e-12)
    onehot = np.eye(10)[np.arange(100) % 10]  # confident and balanced: the maximum, the class count
    assert inception_score(onehot) == pytest.approx(10.0, rel=1e-6)
    assert modified_inception_score(onehot) > 1e3  # distinct confident predictions diverge strongly
    uniform = np.full(10, 0.1)
    assert am_score(onehot, uniform) == pytest.approx(0.0, abs=1e-6)  # balanced and confident: best AM
    assert am_score(same, uniform) > am_score(onehot, uniform)


def test_frechet_distance_zero_for_identical_sets_and_mean_shift():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((200, 8)) @ rng.standard_normal((8, 8))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(8, dtype=np.float64)
    assert frechet_distance(feats, feats + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(feats[:1], feats)
    with warnings.catch_warnings():  # fewer samples than features: singular covariances, regularised quietly
        warnings.simplefilter("error")
        assert frechet_distance(feats[:5], feats[:5]) == pytest.approx(0.0, abs=1e-4)
        assert frechet_distance(feats[:5], feats[:5] + shift) == pytest.approx(float((shift**2).sum()), rel=1e-4)


def test_score_cli_on_samples_and_the_real_test_set(tmp_path_factory, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path_factory)
    data = tiny_set(tmp_path_factory, per_word=30, name="learn")
    samples = tmp_path / "samples"
    samples.mkdir()
    for i, line in enumerate((data / "testing_list.txt").read_text().split()):  # "generated" = the real test clips
        shutil.copy(data / line, samples / f"sample_{i:03d}.wav")
    (samples / "broken.wav").write_bytes(b"nope")
    out = tmp_path / "scores.md"
    assert main(["sashimi", "score", "--classifier", str(ckpt), "--samples", str(samples), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    # the tiny classifier knows three words and sees 9 clips of 16 features: both said, in the report too
    assert "not the ten SC09 digits" in printed and "FID is unreliable with fewer clips" in printed
    assert "FID is unreliable" in out.read_text()
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [r["set"].split(" (")[0] for r in rows] == ["samples", "real test set", "real validation set vs test"]
    gen, real = rows[0], rows[1]
    assert int(gen["clips"]) == int(real["clips"]) == 9  # the broken file was skipped
    assert float(real["FID"]) == pytest.approx(0.0, abs=1e-6) and float(gen["FID"]) == pytest.approx(0.0, abs=1e-6)
    assert float(gen["IS"]) == pytest.approx(float(real["IS"]), rel=1e-6)
    assert 1.0 <= float(real["IS"]) <= 3.0 and float(real["classifier accuracy (%)"]) >= 0
    assert main(["speech", "score", "--classifier", str(ckpt), "--samples", str(tmp_path / "none")]) == 2
    assert "--samples folder not found" in capsys.readouterr().err
