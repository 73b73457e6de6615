import math

import pytest
import torch

from ssmcore.blocks import FeedForward, ResidualBlock, SequenceModel
from ssmcore.layers.s4d import S4D
from ssmcore.pooling import AvgPool, DownPool, UpPool
from tests.ssmcore.helpers import (
    check_causal,
    check_chunked_matches_whole,
    check_step_matches_forward,
    rel_err,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Stepping runs many tiny ops; intra-op threads only add overhead (and contend on shared CPUs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_batchnorm_stats(model: torch.nn.Module, H: int) -> None:
    """A few training-mode passes so BatchNorm running statistics are not the identity."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(2.0 * torch.randn(4, 32, H) + 0.5)
    model.eval()


def _step_all(model: torch.nn.Module, x: torch.Tensor, state) -> tuple[torch.Tensor, object]:
    ys = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y_t, state = model.step(x[:, t], state)
            ys.append(y_t)
    return torch.stack(ys, dim=1), state


# ------------------------------------------------------------------ flat backbone
def test_sequence_model_step_matches_forward():
    torch.manual_seed(0)
    model = SequenceModel(d_model=16, n_layers=2, layer="s4d", d_state=16)
    check_step_matches_forward(model, L=512, batch=2)


def test_sequence_model_chunked_and_causal():
    torch.manual_seed(0)
    model = SequenceModel(d_model=8, n_layers=2, d_state=16, ff_expand=2)
    check_chunked_matches_whole(model, L=300, chunks=4)
    check_causal(model)


@pytest.mark.parametrize("prenorm", [True, False])
def test_batchnorm_step_matches_forward(prenorm):
    torch.manual_seed(0)
    model = SequenceModel(d_model=8, n_layers=2, d_state=8, norm="batch", prenorm=prenorm)
    _train_batchnorm_stats(model, 8)
    assert not torch.allclose(model.center[0].norm.norm.running_var, torch.ones(8))
    check_step_matches_forward(model, L=64)
    check_chunked_matches_whole(model, L=64, chunks=3)


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_norm_variants_step_matches_forward(norm):
    torch.manual_seed(0)
    model = SequenceModel(d_model=8, n_layers=1, d_state=8, norm=norm, prenorm=False, ff_expand=0)
    check_step_matches_forward(model, L=64)


def test_rate_passes_to_every_ssm_layer():
    torch.manual_seed(0)
    model = SequenceModel(d_model=8, n_layers=2, d_state=8).double().eval()
    x = torch.randn(2, 64, 8, dtype=torch.float64)
    with torch.no_grad():
        y_rate, _ = model(x, rate=0.5)
        assert rel_err(y_rate, model(x)[0]) > 1e-3
        for m in model.modules():
            if isinstance(m, S4D):  # rate r: the step dt * r, and r times the input per step
                m.log_dt += math.log(0.5)
                m.C *= 0.5
        y_dt, _ = model(x)
    assert rel_err(y_rate, y_dt) < 1e-12
    with torch.no_grad():
        y_step, _ = _step_all(model, x, model.default_state(2))
    assert rel_err(y_step, y_dt) < 1e-10


def test_shapes_encoder_decoder_and_block_counts():
    model = SequenceModel(d_model=8, n_layers=3, d_input=3, d_output=5, d_state=8, ff_expand=0)
    y, state = model(torch.randn(2, 20, 3))
    assert y.shape == (2, 20, 5) and state is None
    assert len(model.center) == 3
    assert len(SequenceModel(d_model=8, n_layers=3, d_state=8, ff_expand=4).center) == 6
    y_t, _ = model.eval().step(torch.randn(2, 3), model.default_state(2))
    assert y_t.shape == (2, 5)
    with pytest.raises(ValueError, match=r"expects \(batch, length, 3\)"):
        model(torch.randn(2, 20, 8))


def test_residual_block_wraps_feedforward_and_layer():
    torch.manual_seed(0)
    block = ResidualBlock(6, FeedForward(6, expand=3), norm="layer").eval()
    x = torch.randn(2, 10, 6)
    y, state = block(x)
    assert state is None and y.shape == x.shape
    assert block.default_state(2) is None
    y_steps, _ = _step_all(block, x, None)
    assert rel_err(y_steps, y) < 1e-6
    block = ResidualBlock(6, S4D(6, d_state=8), norm="none", prenorm=True)
    check_step_matches_forward(block, L=64)


# ------------------------------------------------------------------ pooling
def test_downpool_shapes_and_step_matches_forward():
    torch.manual_seed(0)
    down = DownPool(6, pool=4, expand=2)
    x = torch.randn(2, 16, 6)
    with torch.no_grad():
        y, _ = down(x)
        assert y.shape == (2, 4, 12)
        state = down.default_state(2)
        outs = []
        for t in range(16):
            y_t, state = down.step(x[:, t], state)
            assert (y_t is not None) == (t % 4 == 3)
            if y_t is not None:
                outs.append(y_t)
    assert rel_err(torch.stack(outs, dim=1), y) < 1e-6
    # window t uses inputs 4t .. 4t + 3
    x2 = x.clone()
    x2[:, 5] += 1
    y2, _ = down(x2)
    assert torch.equal(y2[:, 0], y[:, 0]) and not torch.allclose(y2[:, 1], y[:, 1])


def test_avgpool_step_matches_forward():
    x = torch.randn(2, 9, 5)
    pool = AvgPool(3)
    y, _ = pool(x)
    assert torch.allclose(y, x.reshape(2, 3, 3, 5).mean(2))
    state = pool.default_state(2)
    outs = []
    for t in range(9):
        y_t, state = pool.step(x[:, t], state)
        if y_t is not None:
            outs.append(y_t)
    assert torch.allclose(torch.stack(outs, dim=1), y, atol=1e-6)


def test_uppool_shapes_step_matches_forward():
    torch.manual_seed(0)
    up = UpPool(12, pool=4, expand=2)
    x = torch.randn(2, 5, 12)  # 5 pooled inputs -> 20 output steps
    with torch.no_grad():
        y, _ = up(x)
        assert y.shape == (2, 20, 6)
        assert torch.equal(y[:, :4], torch.zeros(2, 4, 6))  # first window: nothing before it
        state = up.default_state(2)
        outs = []
        for t in range(20):
            last_of_window = t % 4 == 3
            y_t, state = up.step(x[:, t // 4] if last_of_window else None, state)
            outs.append(y_t)
    assert rel_err(torch.stack(outs, dim=1), y) < 1e-6
    with pytest.raises(ValueError, match="out of sync"):
        up.step(x[:, 0], up.default_state(2))
    with pytest.raises(ValueError, match="needs an input"):
        up.step(None, up.default_state(2)[:, :1])


def test_uppool_causal():
    torch.manual_seed(0)
    up = UpPool(8, pool=3, expand=2)
    x = torch.randn(1, 6, 8)
    for w in range(6):
        x2 = x.clone()
        x2[:, w] += torch.randn(8)
        with torch.no_grad():
            y, y2 = up(x)[0], up(x2)[0]
        # pooled input w summarises steps 3w .. 3w + 2; it may only reach steps from 3(w + 1) on
        assert torch.equal(y[:, : 3 * (w + 1)], y2[:, : 3 * (w + 1)])
        if w < 5:
            assert not torch.allclose(y[:, 3 * (w + 1) : 3 * (w + 2)], y2[:, 3 * (w + 1) : 3 * (w + 2)])


def test_down_up_pool_pair_is_causal():
    torch.manual_seed(0)
    down, up = DownPool(4, pool=4, expand=2), UpPool(8, pool=4, expand=2)
    x = torch.randn(1, 32, 4)
    with torch.no_grad():
        y = up(down(x)[0])[0]
        for t in (0, 3, 4, 13, 30):
            x2 = x.clone()
            x2[:, t] += 1
            y2 = up(down(x2)[0])[0]
            assert torch.equal(y[:, : t + 1], y2[:, : t + 1]), f"output up to {t} sees input {t}"


# ------------------------------------------------------------------ SaShiMi U-Net
def _sashimi(**kw) -> SequenceModel:
    torch.manual_seed(0)
    return SequenceModel(d_model=4, n_layers=1, d_state=8, pool=(4, 2), pool_expand=2, **kw).eval()


def test_sashimi_shapes_step_and_causal():
    model = _sashimi(d_input=1, d_output=3)
    assert model.center[0].d_model == 16 and model.up[0]["blocks"][0].d_model == 4
    x = torch.randn(2, 64, 1)
    with torch.no_grad():
        y, _ = model(x)
    assert y.shape == (2, 64, 3)
    y_steps, _ = _step_all(model, x, model.default_state(2))
    assert rel_err(y_steps, y) < 1e-4
    # odd length: trailing steps that fill no window still get outputs
    with torch.no_grad():
        y_odd, _ = model(x[:, :61])
    assert rel_err(y_odd, y[:, :61]) < 1e-5
    check_causal(_sashimi(), L=64, t=37)


def test_sashimi_chunks_of_any_length_and_prime_then_step():
    model = _sashimi()
    x = torch.randn(2, 64, 4)
    with torch.no_grad():
        y, _ = model(x)
        state = model.default_state(2)
        pieces = []
        for a, b in [(0, 5), (5, 6), (6, 27), (27, 40)]:
            y_p, state = model(x[:, a:b], state=state)
            pieces.append(y_p)
    y_steps, state = _step_all(model, x[:, 40:50], state)  # steps continue from a forward
    with torch.no_grad():
        y_rest, _ = model(x[:, 50:], state=state)  # and a forward continues from steps
    assert rel_err(torch.cat([*pieces, y_steps, y_rest], dim=1), y) < 1e-4


def test_the_layer_is_one_value_and_its_own_dropout_wins():
    model = SequenceModel(d_model=8, n_layers=1, layer={"name": "s4d", "d_state": 16, "dropout": 0.3}, dropout=0.1)
    ssm = model.center[0].layer
    assert type(ssm).__name__ == "S4D" and ssm.d_state == 16 and ssm.dropout.p == 0.3
    assert model.center[0].dropout.p == 0.1  # the residual dropout is the model's
    same = SequenceModel(d_model=8, n_layers=1, layer="s4d", d_state=16, dropout=0.1)
    assert same.center[0].layer.dropout.p == 0.1
    with pytest.raises(ValueError, match="needs a name"):
        SequenceModel(d_model=8, n_layers=1, layer={"d_state": 16})


def test_a_grid_layer_runs_over_the_sequence_axis_unless_its_spec_says_otherwise():
    """S4ND (2-D by default) by name in a sequence backbone runs over the one axis (dim 1); it failed at the
    first forward with an error about 2-D grids."""
    model = SequenceModel(d_model=8, n_layers=1, layer={"name": "s4nd", "d_state": 4}, d_input=2, d_output=3)
    assert model.center[0].layer.dim == 1
    y, _ = model(torch.randn(2, 16, 2))
    assert y.shape == (2, 16, 3) and torch.isfinite(y).all()
    assert SequenceModel(d_model=8, n_layers=1, layer="s4nd").center[0].layer.dim == 1
    assert SequenceModel(d_model=8, n_layers=1, layer={"name": "s4nd", "dim": 2}).center[0].layer.dim == 2
