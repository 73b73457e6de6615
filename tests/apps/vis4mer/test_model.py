"""Decoder shapes at each stage, the pooling, and the SSM parameter group."""

import pytest
import torch

from apps.vis4mer.model import MeanPoolBaseline, ViS4merDecoder, halve_tokens
from apps.vis4mer.module import VideoClassifier


def test_each_stage_halves_tokens_and_width():
    decoder = ViS4merDecoder(d_input=48, num_outputs=5, d_model=64, n_stages=3, layer={"name": "s4", "d_state": 8})
    outs = decoder.stage_outputs(torch.randn(2, 120, 48))
    assert [tuple(o.shape) for o in outs] == [(2, 120, 64), (2, 60, 32), (2, 30, 16), (2, 15, 8)]
    assert decoder(torch.randn(2, 120, 48)).shape == (2, 5)
    # odd lengths round up: 11 -> 6 -> 3 -> 2
    assert [o.shape[1] for o in decoder.stage_outputs(torch.randn(1, 11, 48))] == [11, 6, 3, 2]


def test_paper_setting_shapes_at_11820_tokens():
    decoder = ViS4merDecoder(d_input=1024, num_outputs=4, d_model=1024, n_stages=3, layer={"name": "s4", "d_state": 64})
    assert decoder.stages[0].mixer.d_state == 64 and type(decoder.stages[0].mixer).__name__ == "S4"
    widths = [stage.down.out_features for stage in decoder.stages]
    assert widths == [512, 256, 128] and decoder.head.in_features == 128


def test_halve_tokens_is_avgpool2():
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    expected = torch.nn.functional.avg_pool1d(x.transpose(1, 2), 2).transpose(1, 2)
    torch.testing.assert_close(halve_tokens(x), expected)
    torch.testing.assert_close(halve_tokens(x[:, :9])[:, -1], x[:, 8])


@pytest.mark.parametrize("layer", ["s4d", "s5"])
def test_any_registry_layer_and_attention_fit_the_stage(layer):
    x = torch.randn(1, 16, 8)
    assert ViS4merDecoder(d_input=8, num_outputs=3, d_model=32, n_stages=2, layer={"name": layer, "d_state": 4})(x).shape == (1, 3)
    assert ViS4merDecoder(d_input=8, num_outputs=3, d_model=32, n_stages=2, mixer="attention")(x).shape == (1, 3)


def test_the_decoder_reads_order_the_mean_pool_cannot():
    torch.manual_seed(0)
    baseline = MeanPoolBaseline(d_input=4, num_outputs=2, d_model=8).eval()
    x = torch.randn(1, 6, 4)
    torch.testing.assert_close(baseline(x), baseline(x.flip(1)))  # blind to order by construction
    decoder = ViS4merDecoder(d_input=4, num_outputs=2, d_model=16, n_stages=2, layer={"name": "s4", "d_state": 8}).eval()
    assert (decoder(x) - decoder(x.flip(1))).abs().max() > 1e-3


def test_ssm_parameters_get_their_own_group():
    module = VideoClassifier(task="first_digit", d_input=8, d_model=16, n_stages=2, layer={"name": "s4", "d_state": 4},
                             optim={"lr": 1e-2, "ssm_lr": 1e-4})
    from ssmcore.optim import param_groups

    optim = module.optim
    groups = param_groups(module, optim.lr, optim.weight_decay, optim.ssm_lr, optim.ssm_weight_decay)
    ssm = [g for g in groups if g["lr"] == 1e-4]
    assert ssm and all(g["weight_decay"] == 0.0 for g in ssm)
    n_ssm = sum(p.numel() for g in ssm for p in g["params"])
    expected = sum(p.numel() for s in module.net.stages for n, p in s.mixer.named_parameters()
                   if n.split(".")[-1] in type(s.mixer).ssm_parameter_names)
    assert n_ssm == expected > 0
