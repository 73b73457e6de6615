"""``--model.compile true``: the app's network is compiled in place when a Trainer sets the model up."""

from __future__ import annotations

from apps.sashimi.module import WaveformGenerator
from apps.smoke.module import DelayedRecallModule


def test_compile_flag_compiles_the_network_in_place_and_is_not_saved():
    plain = DelayedRecallModule()
    module = DelayedRecallModule(compile=True)
    assert "compile" not in module.hparams
    assert plain.net._compiled_call_impl is None
    module.configure_model()
    plain.configure_model()
    assert module.net._compiled_call_impl is not None  # nn.Module.compile: the module itself, not a wrapper
    assert plain.net._compiled_call_impl is None
    assert module.state_dict().keys() == plain.state_dict().keys()  # checkpoints keep their keys
    compiled = module.net._compiled_call_impl
    module.configure_model()  # once only
    assert module.net._compiled_call_impl is compiled


def test_sashimi_compiles_its_model():
    assert WaveformGenerator.network_attr == "model"
    assert isinstance(getattr(WaveformGenerator(), WaveformGenerator.network_attr), type(WaveformGenerator().model))
