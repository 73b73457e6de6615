"""The SaShiMi backbone: the paper's shape, causality, and step() == forward() for every causal layer."""

from __future__ import annotations

import pytest
import torch

from apps.sashimi.model import SaShiMi, shift_right
from apps.sashimi.native import available as native_available
from apps.sashimi.stepper import FastStepper

LAYERS = ["s4", "s4d", "s5", "dlr"]


def _small(layer: str = "s4", unet: bool = False, dtype: torch.dtype = torch.float32) -> SaShiMi:
    torch.manual_seed(0)
    model = SaShiMi(n_classes=32, d_model=8, n_layers=2, pool=(2, 2), layer={"name": layer, "d_state": 8}, unet=unet)
    with torch.no_grad():  # larger C / dt than the init, so that the state carries real signal
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.to(dtype).eval()


def test_default_is_the_paper_model():
    model = SaShiMi()
    backbone = model.backbone
    assert model.pool == (4, 4) and model.n_classes == 256 and model.embedding.embedding_dim == 64
    assert [len(backbone.center)] + [len(s["blocks"]) for s in backbone.up] == [16, 16, 16]  # 8 (SSM + FF) pairs
    assert type(backbone.center[0].layer).__name__ == "S4" and backbone.center[0].prenorm
    assert backbone.center[0].layer.d_model == 256 and backbone.up[0]["blocks"][0].layer.d_model == 64
    assert backbone.center[0].layer.transform == "exp"  # the stable (tied P = Q, Re Lambda < 0) parameterisation
    assert backbone.decoder.out_features == 256 and not backbone.unet


@pytest.mark.parametrize("unet", [False, True])
def test_no_output_depends_on_a_later_input(unet):
    model = _small("s4", unet=unet, dtype=torch.float64)
    L = 24
    tokens = torch.randint(0, 32, (1, L))
    base = model(tokens)[0]
    for t in [0, 3, 4, 7, 8, 13, 23]:  # window edges of both pooling levels, and inside them
        changed = tokens.clone()
        changed[0, t] = (changed[0, t] + 7) % 32
        out = model(changed)[0]
        # FFT convolution leaves float64 rounding (~1e-16) before t; a leak would be of order 1
        assert t == 0 or (out[:, :t] - base[:, :t]).abs().max() < 1e-10, f"position < {t} saw input {t}"
        assert (out[:, t] - base[:, t]).abs().max() > 1e-3  # the input itself is used (skip path)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


BACKENDS = ["module", "torch", "native"]  # `make system-deps` provides the C compiler the native step needs


@pytest.mark.parametrize("layer", LAYERS)
def test_stepping_the_whole_model_gives_the_forward_logits(layer):
    model = _small(layer, unet=layer == "s4")
    L = 40
    tokens = torch.randint(0, 32, (3, L))
    with torch.no_grad():
        full = model(shift_right(tokens, 16))[0]  # (B, L, K)
        runs = [_ModuleSteps(model)] + [FastStepper(model, backend=b).start(model.default_state(3)) for b in BACKENDS]
        for run in runs:
            logits = [run.step(torch.full((3,), 16))]
            logits += [run.step(tokens[:, t]) for t in range(L - 1)]
            assert _rel(torch.stack(logits, 1), full) < 1e-4, type(run).__name__


@pytest.mark.parametrize("layer", ["s4", "s4d"])
def test_fused_recurrence_is_exact_in_float64(layer):
    """The Woodbury / diagonal terms are algebraically exact: float64 stepping matches to ~1e-10."""
    model = _small(layer, unet=True, dtype=torch.float64)
    tokens = torch.randint(0, 32, (2, 33))
    with torch.no_grad():
        full = model(shift_right(tokens, 16))[0]
        run = FastStepper(model, backend="torch").start(model.default_state(2))
        out = [run.step(torch.full((2,), 16))] + [run.step(tokens[:, t]) for t in range(32)]
    assert _rel(torch.stack(out, 1), full) < 1e-10


def test_native_step_splits_the_batch_over_threads_without_changing_it():
    model = _small("s4")
    tokens = torch.randint(0, 32, (5, 20))
    outs = []
    for threads in (1, 2):
        run = FastStepper(model, backend="native", threads=threads).start(model.default_state(5))
        outs.append(torch.stack([run.step(tokens[:, t]) for t in range(20)], 1))
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-6)


def test_auto_backend_choice():
    # S5's state is shared across features: the fused torch path runs its MIMO recurrence (the C step does not)
    assert FastStepper(_small("s5")).backend == "torch"
    assert FastStepper(_small("s5"), backend="native").backend == "torch"
    assert FastStepper(_small("s4", dtype=torch.float64)).backend == "torch"
    assert native_available()
    assert FastStepper(_small("s4")).backend == "native"


class _ModuleSteps:
    def __init__(self, model: SaShiMi) -> None:
        self.model, self.state = model, model.default_state(3)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        out, self.state = self.model.step(token, self.state)
        return out


@pytest.mark.parametrize("prefix", [1, 6, 11])
def test_a_prefix_in_convolution_mode_then_steps_matches_the_forward(prefix):
    model = _small("s4")
    L = 24
    tokens = torch.randint(0, 32, (2, L))
    with torch.no_grad():
        full = model(shift_right(tokens, 16))[0]
        inputs = torch.cat([torch.full((2, 1), 16), tokens[:, :prefix]], 1)
        head, state = model(inputs, state=model.default_state(2))
        run = FastStepper(model).start(state)
        tail = [run.step(tokens[:, t]) for t in range(prefix, L - 1)]
        out = torch.cat([head, torch.stack(tail, 1)], 1)
    assert _rel(out, full) < 1e-4


def test_step_cache_follows_parameter_updates():
    model = _small("s4")
    tokens = torch.randint(0, 32, (2, 12))
    run = FastStepper(model)
    with torch.no_grad():
        first = [run.start(model.default_state(2)).step(tokens[:, 0])]  # builds the precomputed terms
        for p in model.parameters():
            p.mul_(1.1)
        full = model(shift_right(tokens, 16))[0]
        r = run.start(model.default_state(2))
        out = [r.step(torch.full((2,), 16))] + [r.step(tokens[:, t]) for t in range(11)]
    assert _rel(torch.stack(out, 1), full) < 1e-4 and first


@pytest.mark.parametrize("prefix", [0, 5])
def test_s5_fast_generation_equals_its_forward(prefix):
    """S5 steps through the fused path on its public MIMO recurrence, exactly, from a prefix state too."""
    model = _small("s5", unet=True)
    L = 30
    tokens = torch.randint(0, 32, (2, L))
    with torch.no_grad():
        full = model(shift_right(tokens, 16))[0]
        stepper = FastStepper(model)
        assert stepper.backend == "torch"
        inputs = torch.cat([torch.full((2, 1), 16), tokens[:, :prefix]], 1)
        head, state = model(inputs, state=model.default_state(2))
        run = stepper.start(state)
        tail = [run.step(tokens[:, t]) for t in range(prefix, L - 1)]
        out = torch.cat([head, torch.stack(tail, 1)], 1)
    assert _rel(out, full) < 1e-4
    with torch.no_grad():  # the terms follow a parameter change
        model.backbone.center[0].layer.log_step.add_(0.3)
        full = model(shift_right(tokens, 16))[0]
        run = stepper.start(model.default_state(2))
        out = [run.step(torch.full((2,), 16))] + [run.step(tokens[:, t]) for t in range(L - 1)]
    assert _rel(torch.stack(out, 1), full) < 1e-4


def test_steppers_read_only_public_terms():
    """The fused and native steppers use the layers' public recurrence(), not private internals."""
    import inspect

    from apps.sashimi import native, recurrent, stepper

    for module in (stepper, native, recurrent):
        source = inspect.getsource(module)
        for private in ("_step_terms", "output[0]", "norm.norm", "_block_params", "step_terms("):
            assert private not in source, (module.__name__, private)


def test_a_non_causal_or_unknown_layer_is_refused():
    with pytest.raises(ValueError, match="causal"):
        SaShiMi(layer="s4nd")
    with pytest.raises(ValueError, match="unknown layer"):
        SaShiMi(layer="transformer")
