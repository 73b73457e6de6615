"""The raw-waveform SSM classifier: it learns a tiny task, rescales every layer's rate at another
sample rate (or not, on request), and rejects data that does not fit it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from apps.common.cli import main
from apps.sashimi.classifier import SpeechClassifier, SpeechNet, load_speech_classifier
from apps.sashimi.speech import SpeechCommandsData
from ssmcore.layers.base import SSMLayer
from tests.apps.sashimi.speech_sets import TINY_RECIPE, WORDS, tiny_checkpoint, tiny_set


def _metrics(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(next(run.rglob("metrics.csv")))))


def test_tiny_classifier_learns_above_chance(tmp_path_factory):
    ckpt = tiny_checkpoint(tmp_path_factory)  # 6 epochs of 72 clips, about 10 s
    rows = _metrics(ckpt.parent.parent / "csv")
    val = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert max(val) >= 0.6  # 3 classes, unseen voices: chance is 1/3
    model, data = load_speech_classifier(ckpt)
    assert float(model.train_sample_rate) == 16000 and bool(model.has_input_stats)
    assert data["words"] == WORDS


def test_every_layer_gets_the_rate(tmp_path_factory):
    seen: list[float] = []
    net = SpeechNet(1, 3, d_model=8, n_layers=3, d_state=8, pool=[2, 1, 1])
    for m in net.modules():
        if isinstance(m, SSMLayer):
            m.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["rate"]), with_kwargs=True)
    logits = net(torch.randn(2, 64, 1), rate=2.0)
    assert logits.shape == (2, 3) and seen == [2.0, 2.0, 2.0]
    assert net.features(torch.randn(2, 64, 1)).shape == (2, 8)
    model = SpeechClassifier(num_classes=3, d_model=8, n_layers=1, d_state=8, train_rate=16000)
    assert model.rate_for(8000) == 2.0 and model.rate_for(4000) == 4.0
    assert model.use_sample_rate(8000, "mfcc") == 1.0  # MFCC frames stay 10 ms apart at any sample rate
    frozen = SpeechClassifier(num_classes=3, d_model=8, n_layers=1, d_state=8, train_rate=16000, rate_change=False)
    assert frozen.rate_for(8000) == 1.0


def test_test_verb_at_8khz_sets_rate_2(tmp_path_factory, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path_factory)
    data = tiny_set(tmp_path_factory, per_word=30, name="learn")
    base = ["sashimi", "test", "-c", TINY_RECIPE, "--data.root", str(data), "--data.words", str(WORDS),
            "--model.num_classes", "3", "--ckpt_path", str(ckpt)]
    for extra, rate in ((["--data.sample_rate", "8000"], 2.0), (["--data.sample_rate", "8000", "--model.rate_change",
                                                                  "false"], 1.0)):
        root = tmp_path / f"rate{rate}"
        assert main([*base, *extra, "--trainer.default_root_dir", str(root)]) == 0
        rows = _metrics(root / "csv")
        assert float(next(r["test/rate"] for r in rows if r.get("test/rate"))) == rate
        assert 0 <= float(next(r["test/acc"] for r in rows if r.get("test/acc"))) <= 1


def test_class_count_and_input_mismatch_are_one_line_errors(tmp_path_factory, tmp_path, capsys):
    data = tiny_set(tmp_path_factory)
    args = ["sashimi", "fit", "-c", TINY_RECIPE, "--data.root", str(data), "--data.words", str(WORDS),
            "--trainer.default_root_dir", str(tmp_path / "r")]
    assert main([*args, "--model.num_classes", "10"]) == 2  # the data has 3
    assert "model.num_classes is 10 but" in capsys.readouterr().err
    assert main([*args, "--model.num_classes", "3", "--data.features", "mfcc"]) == 2
    assert "model.d_input is 1 but the data gives 20" in capsys.readouterr().err
    model = SpeechClassifier(num_classes=3, d_model=8, n_layers=1, d_state=8, train_rate=8000)
    with pytest.raises(Exception, match="model.train_rate is 8000 Hz"):
        model.check_data(SpeechCommandsData(root=str(data), words=WORDS), fitting=True)


def test_bad_pool_and_bad_checkpoint(tmp_path):
    with pytest.raises(Exception, match="model.pool needs 2 factors"):
        SpeechNet(1, 3, d_model=8, n_layers=2, pool=[4])
    bad = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(Exception, match="not a Speech Commands classifier"):
        load_speech_classifier(bad)
    with pytest.raises(Exception, match="checkpoint not found"):
        load_speech_classifier(tmp_path / "missing.ckpt")
