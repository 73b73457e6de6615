"""The plain model format (config.json + model.safetensors): every app's model round-trips with identical
outputs, loads without pickle, ``export-weights`` writes it, a ``--ckpt`` verb reads it, bad folders are refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from apps.common.checkpoint import load_module
from apps.common.cli import main
from apps.common.errors import UserError
from apps.common.pretrained import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, save_pretrained
from apps.lra.module import LRAModule
from apps.pendulum.module import PendulumModule
from apps.s4nd.module import ImageClassifier
from apps.sashimi.module import WaveformGenerator
from apps.smoke.module import DelayedRecallModule
from apps.speech.module import SpeechClassifier
from apps.sssd.module import SSSDModule
from apps.synthetic.module import SyntheticModule
from apps.vis4mer.module import VideoClassifier

FIXTURES = Path(__file__).parent / "fixtures"
SPEC = {"name": "s4d", "d_state": 4}


def _sssd_out(m: SSSDModule) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 2, generator=g)  # (B, L, C)
    mask = torch.rand(2, 16, 2, generator=g) > 0.5
    return m.net(x, x * mask, mask, torch.tensor([3, 7]))


#: app -> (a small model, its output on a fixed input)
MODELS = {
    "smoke": (lambda: DelayedRecallModule(vocab=4, d_model=8, n_layers=1, layer=SPEC),
              lambda m: m.net(torch.arange(16).remainder(4)[None])),
    "synthetic": (lambda: SyntheticModule(task="shift", num_shifts=2, d_model=8, n_layers=1, layer=SPEC),
                  lambda m: m(torch.randn(2, 16, 3, generator=torch.Generator().manual_seed(0)), 8)),  # shift: 3 inputs
    "speech": (lambda: SpeechClassifier(num_classes=3, d_model=8, n_layers=1, layer=SPEC, train_rate=16000),
               lambda m: m(torch.randn(2, 64, 1, generator=torch.Generator().manual_seed(0)))),
    "sashimi": (lambda: WaveformGenerator(d_model=8, n_layers=1, pool=[2], layer=SPEC, quantization="mu-law",
                                          bits=4, sample_rate=8000),
                lambda m: m(torch.arange(16).remainder(16)[None])),
    "s4nd": (lambda: ImageClassifier(layer={"name": "s4nd", "d_state": 4}, num_classes=3, train_resolution=8,
                                     d_model=8, n_layers=1),
             lambda m: m(torch.rand(2, 8, 8, 1, generator=torch.Generator().manual_seed(0)))),
    "sssd": (lambda: SSSDModule(channels=2, res_channels=8, skip_channels=8, n_layers=1, layer=SPEC,
                                embed_dim_in=8, embed_dim_mid=8, embed_dim_out=8, diffusion_steps=10),
             _sssd_out),
    "lra": (lambda: LRAModule(task="listops", d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 4,
                                                                          "bidirectional": True}),
            lambda m: m({"x": torch.arange(1, 13).remainder(15)[None] + 1, "lengths": torch.tensor([12])})),
    "pendulum": (lambda: PendulumModule(frame_size=4, d_model=8, n_layers=1, layer={"name": "s5", "d_state": 4},
                                        hidden=8),
                 lambda m: m(torch.rand(2, 10, 16, generator=torch.Generator().manual_seed(0)),
                             torch.cumsum(torch.rand(2, 10, generator=torch.Generator().manual_seed(1)), 1))),
    "vis4mer": (lambda: VideoClassifier(d_input=6, d_model=8, n_stages=1, layer=SPEC, dropout=0.0),
                lambda m: m(torch.randn(2, 16, 6, generator=torch.Generator().manual_seed(0)))),
}


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Weights and buffers away from their initial values, so a round trip that dropped any would show."""
    torch.manual_seed(1)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point() or t.is_complex():
                t.add_(0.01 * torch.randn_like(t))
    return model.eval()


@pytest.mark.parametrize("app", list(MODELS))
def test_round_trip_gives_identical_outputs(app, tmp_path):
    build, run = MODELS[app]
    torch.manual_seed(0)
    model = _trained_like(build())
    out = model.save_pretrained(tmp_path / "model", datamodule={"root": Path("data/x"), "batch_size": 4})
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["app"] == app and config["ssm_suite_version"] and config["datamodule"]["root"] == "data/x"
    loaded = type(model).from_pretrained(out)
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        assert torch.equal(run(loaded), run(model))
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert type(from_pretrained(out)) is type(model)  # the class named in config.json


def test_sashimi_keeps_its_waveform_settings(tmp_path):
    model = MODELS["sashimi"][0]()
    loaded = WaveformGenerator.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert (loaded.quantization, loaded.bits, loaded.sample_rate) == ("mu-law", 4, 8000)


def test_loading_runs_no_pickle(tmp_path, monkeypatch):
    out = MODELS["smoke"][0]().save_pretrained(tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert isinstance(DelayedRecallModule.from_pretrained(out), DelayedRecallModule)


def test_export_weights_verb_and_a_ckpt_verb_reading_the_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = FIXTURES / "smoke_v0.ckpt"
    assert main(["smoke", "export-weights", "--ckpt", str(ckpt), "--out", "exported"]) == 0
    printed = capsys.readouterr().out
    assert "exported/config.json" in printed and "exported/model.safetensors" in printed
    from_ckpt, _ = load_module(ckpt, DelayedRecallModule)
    from_dir, _ = load_module(tmp_path / "exported", DelayedRecallModule)
    tokens = torch.arange(12).remainder(4)[None]
    with torch.no_grad():
        assert torch.equal(from_ckpt.net(tokens), from_dir.net(tokens))
    # a verb that takes --ckpt reads either form: export again from the folder into a second one
    assert main(["smoke", "export-weights", "--ckpt", "exported", "--out", "again"]) == 0
    assert load_file("again/model.safetensors").keys() == load_file("exported/model.safetensors").keys()
    # an empty folder made for it is fine; a non-empty one is refused and left alone
    (tmp_path / "empty").mkdir()
    assert main(["smoke", "export-weights", "--ckpt", str(ckpt), "--out", "empty"]) == 0
    before = (tmp_path / "exported" / WEIGHTS_NAME).read_bytes()
    capsys.readouterr()
    assert main(["smoke", "export-weights", "--ckpt", str(ckpt), "--out", "exported"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exported already exists" in err and "choose a new --out" in err
    assert (tmp_path / "exported" / WEIGHTS_NAME).read_bytes() == before


def test_speech_zero_shot_loader_reads_the_folder(tmp_path):
    from apps.speech.module import load_speech_classifier

    ckpt = FIXTURES / "speech_classifier_v0.ckpt"
    model, options = load_speech_classifier(ckpt)
    out = model.save_pretrained(tmp_path / "m", datamodule=options)
    again, options_again = load_speech_classifier(out)
    assert options_again == json.loads(json.dumps(options, default=str))
    x = torch.randn(1, 256, model.hparams.d_input)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_folders_are_one_line_errors(tmp_path, capsys):
    good = MODELS["smoke"][0]().save_pretrained(tmp_path / "good")
    out = ["--out", str(tmp_path / "new")]
    # missing config.json
    (tmp_path / "noconfig").mkdir()
    (tmp_path / "noconfig" / WEIGHTS_NAME).write_bytes((good / WEIGHTS_NAME).read_bytes())
    err = _error(capsys, ["smoke", "export-weights", "--ckpt", str(tmp_path / "noconfig"), *out])
    assert "noconfig/config.json is missing" in err and "export-weights" in err
    # missing weights
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / CONFIG_NAME).write_text((good / CONFIG_NAME).read_text())
    err = _error(capsys, ["smoke", "export-weights", "--ckpt", str(tmp_path / "noweights"), *out])
    assert "noweights/model.safetensors is missing" in err
    # a truncated weights file
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / CONFIG_NAME).write_text((good / CONFIG_NAME).read_text())
    (tmp_path / "torn" / WEIGHTS_NAME).write_bytes((good / WEIGHTS_NAME).read_bytes()[:40])
    err = _error(capsys, ["smoke", "export-weights", "--ckpt", str(tmp_path / "torn"), *out])
    assert "torn/model.safetensors is not a readable safetensors file" in err
    # the wrong app: a smoke model given to the speech app
    err = _error(capsys, ["speech", "export-weights", "--ckpt", str(good), *out])
    assert "good/config.json does not describe" in err and "smoke model" in err and "ssm speech export-weights" in err
    # shape mismatch: weights of another size than config.json says
    bigger = MODELS["smoke"][0]()
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / CONFIG_NAME).write_text((good / CONFIG_NAME).read_text())
    config = json.loads((good / CONFIG_NAME).read_text())
    config["init_args"]["d_model"] = 12
    (tmp_path / "mixed" / CONFIG_NAME).write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in bigger.state_dict().items()}, str(tmp_path / "mixed" / WEIGHTS_NAME))
    err = _error(capsys, ["smoke", "export-weights", "--ckpt", str(tmp_path / "mixed"), *out])
    assert "mixed/model.safetensors: its weights do not fit the model config.json describes" in err
    assert "size mismatch" in err
    # not JSON
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / CONFIG_NAME).write_text("{not json")
    err = _error(capsys, ["smoke", "export-weights", "--ckpt", str(tmp_path / "badjson"), *out])
    assert "badjson/config.json is not readable JSON" in err
    assert not (tmp_path / "new").exists()


def test_save_pretrained_refuses_a_file_and_a_non_json_value(tmp_path):
    model = MODELS["smoke"][0]()
    (tmp_path / "file").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        model.save_pretrained(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"
    with pytest.raises(UserError, match="not a JSON value"):
        save_pretrained(model, tmp_path / "x", datamodule={"transform": object()})
    assert not list(tmp_path.glob(".x.*"))
