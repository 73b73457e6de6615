"""The one checkpoint loader: allow-listed weights_only reading, clear refusals, and old checkpoints via the key map."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from apps.common.checkpoint import load_module, read_checkpoint, upgrade_hparams
from apps.common.cli import main
from apps.common.errors import UserError
from apps.smoke.module import DelayedRecallModule

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[3]


class _CreatesAFile:
    """Unpickling this would create ``target`` (what a malicious checkpoint could do)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_checkpoint_whose_unpickling_creates_a_file_is_refused(tmp_path):
    target = tmp_path / "created-by-unpickling"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _CreatesAFile(target)}}, path)
    with pytest.raises(UserError, match=f"checkpoint {path} holds .* refused without unpickling") as e:
        read_checkpoint(path)
    assert len(str(e.value).splitlines()) == 1
    assert not target.exists()
    with pytest.raises(UserError, match="refused"):
        load_module(path, DelayedRecallModule)
    assert not target.exists()
    torch.load(path, weights_only=False)  # the crafted file is real: a plain load creates the file
    assert target.exists()


@pytest.mark.parametrize("content", [b"", b"model: s4d\nthis is a text file\n", "truncated"], ids=["empty", "text", "truncated"])
def test_unreadable_files_get_one_line_naming_them(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    if content == "truncated":
        full = (FIXTURES / "smoke_v0.ckpt").read_bytes()
        content = full[: len(full) // 2]
    path.write_bytes(content)
    with pytest.raises(UserError) as e:
        read_checkpoint(path)
    assert str(path) in str(e.value) and len(str(e.value).splitlines()) == 1
    with pytest.raises(UserError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_key_map_moves_old_layer_and_optimiser_fields():
    old = {"d_model": 8, "layer": "s4d", "layer_kwargs": {"d_state": 4}, "lr": 0.01, "ssm_lr": 0.003, "vocab": 4}
    new = upgrade_hparams(DelayedRecallModule, old)
    assert new["layer"] == {"name": "s4d", "d_state": 4}
    assert new["optim"] == {"lr": 0.01, "ssm_lr": 0.003}
    assert "layer_kwargs" not in new and "lr" not in new
    assert upgrade_hparams(DelayedRecallModule, new) == new  # current checkpoints pass unchanged


def test_old_smoke_checkpoint_loads_through_the_key_map():
    """A checkpoint made by `ssm smoke fit` before the layer and optimiser became one value each."""
    module, blob = load_module(FIXTURES / "smoke_v0.ckpt", DelayedRecallModule)
    assert blob["hyper_parameters"]["layer_kwargs"] == {"d_state": 4}
    assert module.hparams.layer == {"name": "s4d", "d_state": 4}
    assert module.optim.lr == 0.01 and module.optim.ssm_lr == 0.003
    for name, tensor in blob["state_dict"].items():
        assert torch.equal(module.state_dict()[name], tensor)
    logits = module.net(torch.zeros(2, 16, dtype=torch.long))
    assert logits.shape == (2, 16, 4) and torch.isfinite(logits).all()


def test_old_checkpoint_tests_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    ckpt = tmp_path / "old.ckpt"
    shutil.copy(FIXTURES / "smoke_v0.ckpt", ckpt)
    recipe = str(ROOT / "recipes" / "smoke" / "tiny.yaml")
    assert main(["smoke", "test", "-c", recipe, "--data.length", "16", "--data.delay", "2",
                 "--ckpt_path", str(ckpt)]) == 0
    assert "test done" in capsys.readouterr().out


def test_old_speech_classifier_with_flattened_layer_options_loads():
    """Before the change the classifier spelled its layer ``layer`` + ``d_state`` + ``bidirectional`` + ``layer_kwargs``."""
    from apps.speech.module import load_speech_classifier

    model, data = load_speech_classifier(FIXTURES / "speech_classifier_v0.ckpt")
    assert model.hparams.layer == {"name": "s4d", "d_state": 4, "bidirectional": True, "dt_min": 0.001, "dt_max": 0.01}
    assert model.optim.lr == 0.02 and model.optim.ssm_lr == 0.005 and model.optim.weight_decay == 0.0
    assert data["words"] == ["yes", "no", "up"] and float(model.train_sample_rate) == 16000.0
    assert model(torch.randn(2, 64, 1)).shape == (2, 3)


@pytest.mark.parametrize(("mixer", "expected"), [
    ("s4nd", {"name": "s4nd", "d_state": 16, "bandlimit": 0.5, "dt_min": 0.01, "dt_max": 0.1, "align_rate": False}),
    ("conv2d", {"name": "conv2d", "d_state": 16, "kernel_size": None}),
])
def test_key_map_of_the_s4nd_mixer_options(mixer, expected):
    from apps.s4nd.module import ImageClassifier

    old = {"backbone": "isotropic", "mixer": mixer, "d_state": 16, "bandlimit": 0.5, "dt_min": 0.01, "dt_max": 0.1,
           "align_rate": False, "conv_kernel": None, "d_model": 8, "n_layers": 1, "lr": 0.01, "ssm_lr": 0.003}
    new = upgrade_hparams(ImageClassifier, old)
    assert new["layer"] == expected and new["optim"] == {"lr": 0.01, "ssm_lr": 0.003}
    model = ImageClassifier(**new)
    assert model(torch.zeros(1, 8, 8, 1)).shape == (1, 10)


def test_ckpt_path_of_a_crafted_checkpoint_is_refused_by_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    target = tmp_path / "created-by-unpickling"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _CreatesAFile(target)}}, evil)
    recipe = str(ROOT / "recipes" / "smoke" / "tiny.yaml")
    assert main(["smoke", "test", "-c", recipe, "--ckpt_path", str(evil)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {evil} holds" in err and "refused" in err
    assert not target.exists()


def test_a_checkpoint_with_an_option_this_version_lacks_is_one_line(tmp_path, capsys):
    """A checkpoint saved by another version (an option added there) is refused in one line, not a traceback."""
    from apps.speech.module import load_speech_classifier

    blob = torch.load(FIXTURES / "speech_classifier_v0.ckpt", map_location="cpu", weights_only=True)
    blob["hyper_parameters"]["future_option"] = 0.5
    ckpt = tmp_path / "newer.ckpt"
    torch.save(blob, ckpt)
    with pytest.raises(UserError, match=rf"{ckpt}: its hyper-parameters do not build SpeechClassifier \(.*"
                                        r"'future_option'\): it was saved by another version of ssm-suite") as e:
        load_speech_classifier(ckpt)
    assert len(str(e.value).splitlines()) == 1
    assert main(["speech", "zero-shot", "--ckpt", str(ckpt), "--out", str(tmp_path / "zs")]) == 2
    assert "its hyper-parameters do not build SpeechClassifier" in capsys.readouterr().err
    assert not (tmp_path / "zs").exists()


def _foreign(tmp_path: Path, hparams: dict, data: dict | None = None) -> Path:
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": hparams, "datamodule_hyper_parameters": data or {}}, path)
    return path


def test_another_apps_checkpoint_is_named_as_such_by_every_verb(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    s4nd = _foreign(tmp_path, {"backbone": "isotropic", "num_classes": 10, "train_resolution": 14},
                    {"dataset": "imagefolder", "resolution": 14})
    recipe = str(ROOT / "recipes" / "smoke" / "tiny.yaml")
    assert main(["smoke", "test", "-c", recipe, "--ckpt_path", str(s4nd)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"checkpoint {s4nd} was written by `ssm s4nd`, not `ssm smoke`" in err
    assert "pass a checkpoint of `ssm smoke fit`" in err
    assert not (tmp_path / "runs").exists()  # refused before the run wrote anything
    from apps.sashimi.module import WaveformGenerator

    with pytest.raises(UserError, match=r"it was written by `ssm s4nd`; pass a checkpoint of `ssm sashimi fit`"):
        load_module(s4nd, WaveformGenerator)


def test_a_checkpoint_no_app_fits_says_which_options_are_foreign(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    ckpt = _foreign(tmp_path, {"d_model": 8, "warp_factor": 9})
    recipe = str(ROOT / "recipes" / "smoke" / "tiny.yaml")
    assert main(["smoke", "validate", "-c", recipe, "--ckpt_path", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {ckpt}: its hyper-parameters name 'warp_factor', which DelayedRecallModule" in err
    assert "another app or another version of ssm-suite" in err


def test_a_checkpoint_of_another_app_is_named_by_a_ckpt_verb_too(tmp_path, capsys):
    """``ssm pendulum export-weights --ckpt <a smoke checkpoint>`` said the checkpoint was "saved by another version of
    ssm-suite" and to "remove the unknown option from the checkpoint's hyper_parameters"; it is another app's."""
    smoke = {"vocab": 4, "d_model": 8, "n_layers": 1, "layer": {"name": "s4d", "d_state": 8}, "dropout": 0.0,
             "optim": {"lr": 0.01}}
    ckpt = tmp_path / "smoke.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": smoke}, ckpt)
    assert main(["pendulum", "export-weights", "--ckpt", str(ckpt), "--out", str(tmp_path / "weights")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{ckpt} is not a PendulumModule" in err
    assert "it was written by `ssm smoke`; pass a checkpoint of `ssm pendulum fit`" in err
    assert "remove the unknown option" not in err
    assert not (tmp_path / "weights").exists()
