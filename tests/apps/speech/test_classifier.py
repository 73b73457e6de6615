"""The raw-waveform SSM classifier: it learns a tiny task, rescales every layer's rate at another
sample rate (or not, on request), and rejects data that does not fit it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from apps.common.audio import resample
from apps.common.cli import load_app, main
from apps.common.errors import UserError
from apps.common.lightning import run_lightning
from apps.speech.data import SpeechCommandsData
from apps.speech.model import SpeechNet
from apps.speech.module import SpeechClassifier, load_speech_classifier
from ssmcore.layers.base import SSMLayer
from tests.apps.speech.speech_sets import TINY_RECIPE, WORDS, tiny_checkpoint, tiny_set


def _metrics(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(next(run.rglob("metrics.csv")))))


def test_tiny_classifier_learns_above_chance(tmp_path_factory):
    ckpt = tiny_checkpoint(tmp_path_factory)  # 6 epochs of 72 clips, about 10 s
    rows = _metrics(ckpt.parent.parent / "csv")
    val = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert max(val) >= 0.6  # 3 classes, unseen voices: chance is 1/3
    epoch_s = [float(r["time/train_epoch_s"]) for r in rows if r.get("time/train_epoch_s")]
    assert len(epoch_s) == len(val) and all(0 < t < 60 for t in epoch_s)  # the EpochTimer callback
    model, data = load_speech_classifier(ckpt)
    assert float(model.train_sample_rate) == 16000 and bool(model.has_input_stats)
    assert data["words"] == WORDS


def test_layers_before_the_pooling_get_the_rate_and_after_it_rate_1(tmp_path_factory):
    seen: list[float] = []
    net = SpeechNet(d_input=1, num_classes=3, d_model=8, n_layers=3, layer={"name": "s4d", "d_state": 8}, pool=[1, 4, 1])
    for m in net.modules():
        if isinstance(m, SSMLayer):
            m.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["rate"]), with_kwargs=True)
    logits = net(torch.randn(2, 64, 1), rate=2.0)
    # the window of 4 becomes 2 samples at rate 2, so the pooled sequence is back at the training resolution
    assert logits.shape == (2, 3) and seen == [2.0, 2.0, 1.0]
    assert net.features(torch.randn(2, 64, 1)).shape == (2, 8)
    model = SpeechClassifier(num_classes=3, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 8}, train_rate=16000)
    assert model.rate_for(8000) == 2.0 and model.rate_for(4000) == 4.0
    assert model.use_sample_rate(8000, "mfcc") == 1.0  # MFCC frames stay 10 ms apart at any sample rate
    frozen = SpeechClassifier(num_classes=3, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 8}, train_rate=16000,
                              rate_change=False)
    assert frozen.rate_for(8000) == 1.0


def test_pool_expand_widens_the_blocks_after_each_pooling():
    net = SpeechNet(d_input=1, num_classes=3, d_model=8, n_layers=3, layer={"name": "s4d", "d_state": 8}, pool=[4, 2, 1],
                    pool_expand=2)
    widths = [stage.d_model for stage in net.stages]
    assert widths == [8, 16, 32] and net.head.in_features == 32
    assert net(torch.randn(2, 64, 1), rate=2.0).shape == (2, 3)
    assert net.features(torch.randn(2, 64, 1)).shape == (2, 32)
    with pytest.raises(UserError, match="model.pool_expand must be >= 1"):
        SpeechNet(d_input=1, num_classes=3, d_model=8, n_layers=1, pool_expand=0)


def test_pooling_window_is_a_duration():
    assert [SpeechNet.pool_window(16, r) for r in (1.0, 2.0, 4.0, 0.5)] == [16, 8, 4, 32]
    assert SpeechNet.pool_window(1, 3.0) == 1
    with pytest.raises(UserError, match="model.pool window 16 .* 5.33333 samples at rate 3"):
        SpeechNet.pool_window(16, 3.0)
    with pytest.raises(UserError, match="model.pool window 4"):
        SpeechNet.pool_window(4, 8.0)


@pytest.mark.parametrize("pool_mode", ["mean", "abs"])
def test_pooled_features_agree_across_sample_rates(pool_mode):
    # a smooth (band-limited, < 500 Hz) signal at 16 kHz and its 8 kHz resampling give nearly the same
    # pooled features at rate 1 and rate 2: the SSM step and the pooling window both scale with the rate
    torch.manual_seed(0)
    net = SpeechNet(d_input=1, num_classes=3, d_model=8, n_layers=2, pool=[16, 1], norm="layer", pool_mode=pool_mode,
                    layer={"name": "s4d", "d_state": 16, "dt_min": 1e-3, "dt_max": 1e-2}).double().eval()
    t = torch.arange(4096, dtype=torch.float64) / 16000
    freqs, phases = torch.tensor([60.0, 170.0, 330.0]), torch.tensor([0.3, 1.1, 2.0])
    wave = torch.sin(2 * torch.pi * freqs[:, None] * t + phases[:, None]).sum(0)
    x16 = wave[None, :, None]
    x8 = resample(wave, 16000, 8000)[None, :, None]
    with torch.no_grad():
        f16, f8 = net.features(x16, rate=1.0), net.features(x8, rate=2.0)
        naive = net.features(x8, rate=1.0)
    err = (f16 - f8).norm() / f16.norm()
    assert err < 0.05, err
    assert (f16 - naive).norm() / f16.norm() > 4 * err  # without the rate change they differ clearly


def test_test_verb_at_8khz_sets_rate_2(tmp_path_factory, tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path_factory)
    data = tiny_set(tmp_path_factory, per_word=30, name="learn")
    base = ["speech", "test", "-c", TINY_RECIPE, "--data.root", str(data), "--data.words", str(WORDS),
            "--model.num_classes", "3", "--ckpt_path", str(ckpt)]
    for extra, rate in ((["--data.sample_rate", "8000"], 2.0), (["--data.sample_rate", "8000", "--model.rate_change",
                                                                  "false"], 1.0)):
        root = tmp_path / f"rate{rate}"
        assert main([*base, *extra, "--trainer.default_root_dir", str(root)]) == 0
        rows = _metrics(root / "csv")
        assert float(next(r["test/rate"] for r in rows if r.get("test/rate"))) == rate
        assert 0 <= float(next(r["test/acc"] for r in rows if r.get("test/acc"))) <= 1


def test_test_verb_normalises_another_folder_with_the_checkpoints_statistics(tmp_path_factory, tmp_path):
    """``ssm speech test --ckpt_path CKPT --data.root OTHER`` feeds OTHER's clips scaled by the statistics the
    model was trained with (kept in the checkpoint), not by OTHER's own training split's."""
    ckpt = tiny_checkpoint(tmp_path_factory)
    other = tiny_set(tmp_path_factory, per_word=10)  # another set: its own statistics differ
    cli = run_lightning("speech", load_app("speech"), "test", [
        "-c", TINY_RECIPE, "--data.root", str(other), "--data.words", str(WORDS), "--model.num_classes", "3",
        "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "t")])
    mean, std = cli.datamodule.normalization()
    assert bool(cli.model.has_input_stats)
    torch.testing.assert_close(mean, cli.model.input_mean.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(std, cli.model.input_std.cpu(), rtol=0, atol=0)
    loader = cli.trainer.test_dataloaders
    fed = (loader[0] if isinstance(loader, list) else loader).dataset  # what the test actually read
    torch.testing.assert_close(fed.std, cli.model.input_std.cpu(), rtol=0, atol=0)
    own = SpeechCommandsData(str(other), words=WORDS).normalization()
    assert not torch.equal(own[1], std)


def test_class_count_and_input_mismatch_are_one_line_errors(tmp_path_factory, tmp_path, capsys):
    data = tiny_set(tmp_path_factory)
    args = ["speech", "fit", "-c", TINY_RECIPE, "--data.root", str(data), "--data.words", str(WORDS),
            "--trainer.default_root_dir", str(tmp_path / "r")]
    assert main([*args, "--model.num_classes", "10"]) == 2  # the data has 3
    assert "model.num_classes is 10 but" in capsys.readouterr().err
    assert main([*args, "--model.num_classes", "3", "--data.features", "mfcc"]) == 2
    assert "model.d_input is 1 but the data gives 20" in capsys.readouterr().err
    model = SpeechClassifier(num_classes=3, d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 8}, train_rate=8000)
    with pytest.raises(Exception, match="model.train_rate is 8000 Hz"):
        model.check_data(SpeechCommandsData(root=str(data), words=WORDS), fitting=True)


def test_bad_pool_and_bad_checkpoint(tmp_path):
    with pytest.raises(UserError, match="model.pool_mode: unknown 'max'"):
        SpeechNet(1, 3, d_model=8, n_layers=2, pool=[4, 1], pool_mode="max")
    with pytest.raises(Exception, match="model.pool needs 2 factors"):
        SpeechNet(1, 3, d_model=8, n_layers=2, pool=[4])
    bad = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(Exception, match="not a Speech Commands classifier"):
        load_speech_classifier(bad)
    with pytest.raises(Exception, match="checkpoint not found"):
        load_speech_classifier(tmp_path / "missing.ckpt")


def test_batch_norm_on_the_contiguous_tensor_matches_the_transposed_view():
    from ssmcore.blocks import FeatureNorm

    torch.manual_seed(0)
    norm = FeatureNorm(6, "batch").double()
    ref = torch.nn.BatchNorm1d(6).double()
    x = torch.randn(3, 50, 6, dtype=torch.float64) * 2 + 1
    y = norm(x)
    y_ref = ref(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm.norm.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm.norm.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)


def test_calibrated_batch_norms_make_eval_match_training_statistics():
    torch.manual_seed(0)
    model = SpeechClassifier(num_classes=3, d_model=8, n_layers=2, layer={"name": "s4d", "d_state": 8}, pool=[4, 1],
                             calibrate_batches=1)
    for m in model.net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.fill_(5.0)  # statistics that lag the model, as at a high learning rate
            m.running_var.fill_(100.0)
    x = torch.randn(4, 256, 1) * 3
    with torch.no_grad():
        batch_stats = model.net.train()(x)
        stale = model.net.eval()(x)
        model.calibrate_norms([(x, torch.zeros(4))], batches=1)
        calibrated = model.net(x)
    assert not model.net.training
    assert (stale - batch_stats).abs().max() > 0.1
    torch.testing.assert_close(calibrated, batch_stats, rtol=1e-3, atol=1e-3)  # unbiased vs biased variance only
