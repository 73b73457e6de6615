"""``ssm speech export``: a torch.export program of the classifier that reproduces it; never overwrites."""

from __future__ import annotations

import torch

from apps.common.cli import main
from apps.speech.export import InferenceClassifier
from apps.speech.module import load_speech_classifier
from tests.apps.speech.speech_sets import tiny_checkpoint


def test_export_writes_a_program_that_matches_the_classifier(tmp_path_factory, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path_factory)
    out = tmp_path / "exported"
    assert main(["speech", "export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    path = out / "model.pt2"
    assert str(path) in capsys.readouterr().out
    program = torch.export.load(path).module()
    classifier, _ = load_speech_classifier(ckpt)
    torch.manual_seed(0)
    x = torch.randn(3, 16000, 1) * 0.1  # another batch size than the example's
    with torch.no_grad():
        expected = classifier.net((x - classifier.input_mean) / classifier.input_std, rate=1.0)
        reference = InferenceClassifier(classifier).eval()(x)
    assert torch.allclose(reference, expected)
    got = program(x)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-4

    before = path.read_bytes()
    assert main(["speech", "export", "--ckpt", str(ckpt), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["model.pt2"]  # no temporary file left


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["speech", "export", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
