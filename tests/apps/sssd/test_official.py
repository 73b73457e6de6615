"""``model.variant: official``: the published SSSD^S4 network (frozen A, dt, P, B; GELU + Linear at the end of
each S4 layer; weight-normed convolutions; C~ = C (I - Abar^L) at the start), its training defaults (one mask
per batch, no standardisation) and the published code's aligned mnr / bm masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from apps.common.cli import main
from apps.sssd.masks import batch_masks, make_mask
from apps.sssd.model import SSSDS4
from apps.sssd.module import SSSDModule
from ssmcore.hippo import nplr
from ssmcore.layers.s4 import S4
from ssmcore.optim import param_groups

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "sssd" / "tiny.yaml")
OFFICIAL = str(ROOT / "recipes" / "sssd" / "mujoco_official_cpu.yaml")
SPEC = {"name": "s4", "d_state": 8}
FROZEN = ("log_dt", "Lambda_real", "Lambda_imag", "P", "B")


def _net(variant: str, **kw) -> SSSDS4:
    torch.manual_seed(0)
    return SSSDS4(3, 8, 8, 2, SPEC, 16, 16, 16, variant=variant, **kw)


def _s4_layers(net: nn.Module) -> list[S4]:
    return [m for m in net.modules() if isinstance(m, S4)]


def test_official_freezes_the_ssm_and_trains_c_d_and_the_projection():
    module = SSSDModule(channels=3, res_channels=8, skip_channels=8, n_layers=2, layer=SPEC, embed_dim_in=16,
                        embed_dim_mid=16, embed_dim_out=16, diffusion_steps=20, variant="official", mask_ratio=0.5)
    layers = _s4_layers(module.net)
    assert len(layers) == 4
    for layer in layers:
        for name in FROZEN:
            assert not getattr(layer, name).requires_grad
        assert layer.C.requires_grad and layer.D.requires_grad and layer.output.weight.requires_grad
    frozen = {id(getattr(layer, name)) for layer in layers for name in FROZEN}
    groups = param_groups(module, lr=1e-3, weight_decay=0.1, ssm_lr=1e-2)
    assert not any(id(p) in frozen for g in groups for p in g["params"])
    assert all(g["name"] != "ssm" for g in groups)  # nothing left to train with the SSM's own lr
    with torch.no_grad():  # the zero-initialised output conv would stop every gradient at the first step
        module.net.out_conv.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    raw = torch.randn(4, 16, 3, generator=torch.Generator().manual_seed(1))
    loss = module._loss(raw, torch.Generator().manual_seed(2))
    loss.backward()
    for layer in layers:
        for name in FROZEN:
            assert getattr(layer, name).grad is None
        assert layer.C.grad is not None and layer.C.grad.abs().sum() > 0
    optimizer.step()
    after = dict(module.named_parameters())
    for n, p in after.items():
        if n.rsplit(".", 1)[-1] in FROZEN:
            assert torch.equal(p, before[n]), n
    changed = [n for n, p in after.items() if not torch.equal(p, before[n])]
    assert any(n.endswith("ssm.C") for n in changed) and any(n.endswith("ssm.output.weight") for n in changed)


def test_ours_trains_every_ssm_parameter():
    net = _net("ours")
    for layer in _s4_layers(net):
        assert all(getattr(layer, name).requires_grad for name in FROZEN)


def test_block_structure_of_each_variant():
    official, ours = _net("official"), _net("ours")
    for layer in _s4_layers(official):  # SSM + D -> GELU -> Linear(H, H), no GLU
        assert isinstance(layer.activation, nn.GELU)
        assert type(layer.output) is nn.Linear and layer.output.in_features == layer.output.out_features == 16
    for layer in _s4_layers(ours):  # ssmcore's default: Linear(H, 2H) -> GLU
        assert isinstance(layer.output, nn.Sequential) and isinstance(layer.output[1], nn.GLU)
        assert layer.output[0].out_features == 32
    block = official.layers[0]
    for conv in (official.init_conv[0], block.conv, block.cond_conv, block.res_conv, block.skip_conv,
                 official.final_conv[0]):
        assert parametrize.is_parametrized(conv, "weight")  # weight-normed
    assert not parametrize.is_parametrized(official.out_conv)
    assert official.out_conv.weight.abs().sum() == 0  # zero-initialised output in both
    assert not any(parametrize.is_parametrized(m) for m in ours.modules())
    assert block.conv.kernel_size == (3,) and block.conv.padding == (1,)
    # the rest is shared: same parameter shapes apart from the convs' weight-norm split and the GLU width
    shapes = {n: p.shape for n, p in ours.named_parameters() if "conv" not in n and "output" not in n}
    assert shapes == {n: p.shape for n, p in official.named_parameters() if "conv" not in n and "output" not in n}


def test_official_refuses_what_the_published_model_lacks():
    with pytest.raises(ValueError, match="interp_cond"):
        _net("official", interp_cond=True)
    with pytest.raises(ValueError, match="interp_residual"):
        SSSDModule(channels=3, variant="official", interp_residual=True)
    with pytest.raises(ValueError, match="model.variant"):
        _net("paper")


def _dense_official_c_tilde(layer: S4, C_half: torch.Tensor, L: int) -> torch.Tensor:
    """C (I - Abar^L) from the paper's formulas in float64: A = Lambda - P^* P on the full conjugate system,
    Abar = (I - dt/2 A)^{-1} (I + dt/2 A)."""
    lam = torch.complex(-torch.exp(layer.Lambda_real.double()), layer.Lambda_imag.double())  # (H, M)
    P = torch.view_as_complex(layer.P.double())  # (r, H, M)
    lam_full = torch.cat([lam, lam.conj()], -1)
    P_full = torch.cat([P, P.conj()], -1)  # (r, H, N)
    dt = torch.exp(layer.log_dt.double())
    out = []
    for h in range(lam.shape[0]):
        A = torch.diag(lam_full[h]) - P_full[:, h].conj().T @ P_full[:, h]
        eye = torch.eye(A.shape[0], dtype=A.dtype)
        Abar = torch.linalg.solve(eye - dt[h] / 2 * A, eye + dt[h] / 2 * A)
        C = torch.cat([C_half[:, h], C_half[:, h].conj()], -1).to(A.dtype)  # (n_kernels, N)
        out.append(C @ (eye - torch.linalg.matrix_power(Abar, L)))
    return torch.stack(out, 1)[..., : lam.shape[1]]  # (n_kernels, H, M)


def test_official_c_start_is_the_length_corrected_random_c():
    net = _net("official")
    layers = _s4_layers(net)
    C0 = [torch.view_as_complex(layer.C.detach().clone()) for layer in layers]
    assert net.init_official_C(24) == 4
    for layer, C in zip(layers, C0):
        expected = _dense_official_c_tilde(layer, C, 24)
        got = torch.view_as_complex(layer.C.detach()).to(expected.dtype)
        assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4
        assert int(layer.l_ref) == 24


def test_aligned_masks_start_at_multiples_of_k():
    g = torch.Generator().manual_seed(0)
    L, C, k = 100, 4, 30
    starts, sizes = set(), set()
    for _ in range(200):
        for kind in ("mnr", "bm"):
            mask = make_mask(kind, L, C, k=k, generator=g, alignment="aligned")
            for c in range(C):
                missing = torch.where(~mask[:, c])[0]
                assert (missing.diff() == 1).all()
                starts.add(int(missing[0]))
                sizes.add(len(missing))
            if kind == "bm":
                assert (mask == mask[:, :1]).all()
    assert starts == {0, 30, 60, 90} and sizes == {30, 10}  # the last segment is 100 - 90 = 10 steps
    # the example: L = 100, k = 90 hides only 10 steps in about half the draws; free never does
    hidden = [int((~make_mask("bm", L, 1, k=90, generator=g, alignment="aligned")).sum()) for _ in range(400)]
    assert set(hidden) == {90, 10} and 150 < hidden.count(10) < 250
    free = {int((~make_mask("bm", L, 1, k=90, generator=g)).sum()) for _ in range(50)}
    assert free == {90}
    with pytest.raises(ValueError, match="alignment"):
        make_mask("mnr", L, C, k=5, alignment="left")


def test_one_mask_per_batch_when_shared():
    masks = batch_masks("rm", 8, 20, 3, 0.5, generator=torch.Generator().manual_seed(0), shared=True)
    assert masks.shape == (8, 20, 3) and (masks == masks[:1]).all()
    masks = batch_masks("rm", 8, 20, 3, 0.5, generator=torch.Generator().manual_seed(0))
    assert not (masks == masks[:1]).all()


def test_official_training_defaults_and_overrides():
    official = SSSDModule(channels=3, variant="official")
    assert official.hparams.mask_per == "batch" and official.hparams.standardise is False
    assert official.hparams.mask_alignment == "free"  # the aligned draw is an option, not the default
    ours = SSSDModule(channels=3)
    assert ours.hparams.mask_per == "series" and ours.hparams.standardise is True
    mixed = SSSDModule(channels=3, variant="official", mask_per="series", standardise=True)
    assert mixed.hparams.mask_per == "series" and mixed.hparams.standardise is True


def _series(n: int, L: int, C: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(L)[None, :, None]
    return (0.5 + 0.4 * np.sin(0.3 * t + rng.uniform(0, 6, (n, 1, C)))).astype(np.float32)


def test_cli_fit_official(tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "train.npy", _series(48, 24, 3, 0))
    np.save(tmp_path / "test.npy", _series(8, 24, 3, 1))
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    args = ["sssd", "fit", "-c", TINY, "--data.path", str(tmp_path / "train.npy"), "--data.test_path",
            str(tmp_path / "test.npy"), "--data.channels", "3", "--data.train_size", "48", "--data.val_size", "8",
            "--trainer.max_epochs", "1", "--model.n_layers", "1", "--model.variant", "official",
            "--model.mask", "mnr", "--model.mask_alignment", "aligned", "--model.mask_ratio", "0.5"]
    assert main(args) == 0
    ckpt = tmp_path / "runs" / "sssd" / "tiny" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp, sd = state["hyper_parameters"], state["state_dict"]
    assert hp["variant"] == "official" and hp["mask_per"] == "batch" and hp["standardise"] is False
    assert torch.equal(sd["data_mean"], torch.zeros(3)) and torch.equal(sd["data_std"], torch.ones(3))
    init = nplr("legs", 16)  # the frozen A, P and B are still their HiPPO-LegS start after training
    lam_imag = sd["net.layers.0.ssm_1.ssm.Lambda_imag"]
    assert torch.allclose(lam_imag, init["Lambda"].imag.float().expand_as(lam_imag))
    B = torch.view_as_complex(sd["net.layers.0.ssm_2.ssm.B"])
    assert torch.allclose(B, init["B"].to(torch.complex64).expand_as(B))
    assert int(sd["net.layers.0.ssm_1.ssm.l_ref"]) == 24
    # the fitted model imputes like any other
    series = _series(1, 24, 3, 2)[0]
    series[5:12, 1] = np.nan
    np.save(tmp_path / "in.npy", series)
    assert main(["sssd", "impute", "--ckpt", str(ckpt), "--input", str(tmp_path / "in.npy"), "--out",
                 str(tmp_path / "out.npy"), "--samples", "2", "--sampler", "ddim", "--steps", "3",
                 "--max-plots", "0"]) == 0
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (1, 24, 3, 3) and np.isfinite(out).all()


def test_official_recipe_parses():
    import yaml

    recipe = yaml.safe_load(Path(OFFICIAL).read_text())
    assert recipe["model"]["variant"] == "official" and "gradient_clip_val" not in recipe["trainer"]


def test_official_net_exports_and_reloads():
    """The weight-normed official network goes through torch.export and a state-dict round trip unchanged."""
    net = _net("official").eval()
    net.init_official_C(24)
    with torch.no_grad():
        net.out_conv.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    x, cond = torch.randn(2, 24, 3, generator=gen), torch.randn(2, 24, 3, generator=gen)
    mask, t = torch.rand(2, 24, 3, generator=gen) > 0.5, torch.tensor([1, 7])
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (x, cond, mask, t), dynamic_shapes=({0: batch},) * 4)
    with torch.no_grad():
        expected = net(x, cond, mask, t)
        assert expected.norm() > 0
        assert ((program.module()(x, cond, mask, t) - expected).norm() / expected.norm()).item() < 1e-4
        again = _net("official").eval()
        again.load_state_dict(net.state_dict())
        assert torch.equal(again(x, cond, mask, t), expected)
