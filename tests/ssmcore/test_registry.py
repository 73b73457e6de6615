"""make_layer(spec): one value per layer, options checked and coerced against the class's signature."""

from __future__ import annotations

import pytest
import torch

from ssmcore import SequenceModel
from ssmcore.layers.s4d import S4D
from ssmcore.optim import param_groups
from ssmcore.registry import LAYERS, LayerSpecError, causal_layer_names, layer_options, layer_spec, make_layer


def test_spec_and_name_build_the_same_layer():
    torch.manual_seed(0)
    a = make_layer({"name": "s4d", "d_state": 8, "bidirectional": True}, d_model=4)
    torch.manual_seed(0)
    b = make_layer("s4d", d_model=4, d_state=8, bidirectional=True)
    assert isinstance(a, S4D) and a.d_state == 8 and a.bidirectional
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_text_values_are_coerced_to_the_signature_types():
    spec = layer_spec({"name": "S5", "d_state": "16", "bidirectional": "true", "dt_min": "1e-3", "activation": "null"})
    assert spec == {"name": "s5", "d_state": 16, "bidirectional": True, "dt_min": 0.001, "activation": None}
    assert make_layer(spec, d_model=4).d_state == 16


@pytest.mark.parametrize(("spec", "key", "reason"), [
    ({"name": "s4d", "d_state": "many"}, "d_state", "expected an integer"),
    ({"name": "s4d", "d_state": 1.5}, "d_state", "expected an integer"),
    ({"name": "s4d", "colour": "red"}, "colour", "s4d has no option 'colour'"),
    ({"name": "lstm"}, "name", "unknown layer 'lstm'"),
    ({"d_state": 8}, "name", "missing"),
    ({"name": "s4d", "bidirectional": "sometimes"}, "bidirectional", "expected true or false"),
    ({"name": "s4d", "d_model": 8}, "d_model", "set by the model"),
])
def test_bad_specs_name_the_key(spec, key, reason):
    with pytest.raises(LayerSpecError) as e:
        make_layer(spec, d_model=4)
    assert e.value.key == key and reason in str(e.value) and str(e.value).startswith(f"layer.{key}:")


def test_options_forwarded_by_kwargs_are_found_in_the_base_classes():
    class Wide(S4D):
        def __init__(self, d_model: int, width: int = 2, **kwargs) -> None:
            super().__init__(d_model, **kwargs)
            self.width = width

    options = layer_options(Wide)
    assert options["width"][1] == 2 and "d_state" in options and "dropout" in options
    assert options["d_state"][0] is int


def test_spec_values_win_over_the_container_defaults():
    """``layer.dropout`` and ``SequenceModel``'s own ``dropout`` no longer collide."""
    model = SequenceModel(d_model=4, n_layers=1, layer={"name": "s4d", "d_state": 4, "dropout": 0.25}, dropout=0.0)
    layer = model.center[0].layer
    assert isinstance(layer.dropout, torch.nn.Dropout) and layer.dropout.p == 0.25


def test_causal_layers_come_from_the_classes():
    causal = causal_layer_names()
    assert {"s4", "s4d", "s5", "dlr", "dss"} <= set(causal)
    assert "s4nd" not in causal and set(causal) <= set(LAYERS)


def test_ssm_lr_by_parameter_kind():
    layer = make_layer("s4", d_model=4, d_state=8)
    groups = {g["name"]: g for g in param_groups(layer, lr=1e-2, ssm_lr={"A": 1e-3, "dt": 2e-3})}
    assert groups["ssm_A"]["lr"] == 1e-3 and groups["ssm_dt"]["lr"] == 2e-3
    assert groups["ssm_B"]["lr"] == 1e-2 and groups["ssm_P"]["lr"] == 1e-2
    assert [p is layer.log_dt for p in groups["ssm_dt"]["params"]] == [True]
    assert all(g["weight_decay"] == 0.0 for name, g in groups.items() if name.startswith("ssm_"))
    single = param_groups(layer, lr=1e-2, ssm_lr=1e-3)
    assert sum(len(g["params"]) for g in single if g["name"] == "ssm") == sum(
        len(g["params"]) for name, g in groups.items() if name.startswith("ssm_"))
    with pytest.raises(ValueError, match="unknown parameter kind 'Q'"):
        param_groups(layer, lr=1e-2, ssm_lr={"Q": 1e-3})
