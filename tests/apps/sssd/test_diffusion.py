"""Diffusion: the scheduler is SSSD's DDPM, NaN never reaches the network or the loss, observed entries
come back unchanged from every sampler."""

from __future__ import annotations

import pytest
import torch

from apps.sssd.diffusion import diffusion_loss, impute, make_sampler, make_scheduler
from apps.sssd.model import SSSDS4
from apps.sssd.module import SSSDModule


def test_scheduler_reproduces_ddpm_forward_marginals():
    sched = make_scheduler()
    betas = torch.linspace(1e-4, 0.02, 200, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert sched.config.prediction_type == "epsilon" and not sched.config.clip_sample
    assert torch.allclose(sched.alphas_cumprod.double(), alpha_bar, rtol=1e-5)
    # q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), checked on samples
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 1.5)
    for t in (0, 50, 199):
        x_t = sched.add_noise(x0, torch.randn(x0.shape, generator=g), torch.full((20000,), t))
        mean, var = x_t.mean().item(), x_t.var().item()
        assert abs(mean - 1.5 * alpha_bar[t].sqrt().item()) < 0.02
        assert abs(var - (1 - alpha_bar[t]).item()) < 0.03 * max(1 - alpha_bar[t].item(), 0.01) + 1e-4
    # fixed_small: the posterior variance beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t
    t = 120
    beta_tilde = (1 - alpha_bar[t - 1]) / (1 - alpha_bar[t]) * betas[t]
    assert torch.allclose(sched._get_variance(t).double(), beta_tilde, rtol=1e-4)


class SpyNet(SSSDS4):
    """The denoiser, recording whether it ever received a non-finite value."""

    saw_nonfinite = False

    def forward(self, x_t, cond, mask, t, condition=None):
        for tensor in (x_t, cond, *(condition or [])):
            SpyNet.saw_nonfinite |= not torch.isfinite(tensor).all().item()
        return super().forward(x_t, cond, mask, t, condition)


def _module(**kw) -> SSSDModule:
    m = SSSDModule(channels=3, res_channels=8, skip_channels=8, n_layers=1, layer={"name": "s4d", "d_state": 4},
                   embed_dim_in=8, embed_dim_mid=16, embed_dim_out=16, **kw)
    m.net = SpyNet(in_channels=3, res_channels=8, skip_channels=8, n_layers=1, layer={"name": "s4d", "d_state": 4},
                   embed_dim_in=8, embed_dim_mid=16, embed_dim_out=16)
    torch.nn.init.normal_(m.net.out_conv.weight, std=0.1)  # a non-trivial output
    m.set_stats(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0]))
    return m


def test_nan_is_masked_never_fed_to_the_network_nor_a_target():
    torch.manual_seed(0)
    m = _module()
    raw = torch.randn(4, 16, 3)
    raw[0, 3:9, 1] = float("nan")
    raw[2, :, 0] = float("nan")
    SpyNet.saw_nonfinite = False
    loss = m._loss(raw)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    samples = m.sample(raw, torch.ones_like(raw, dtype=torch.bool), n_samples=2, sampler="ddim", steps=3)
    assert not SpyNet.saw_nonfinite
    assert torch.isfinite(samples).all()  # NaN entries are imputed, not propagated


def test_loss_counts_only_the_chosen_entries():
    torch.manual_seed(0)
    net = SSSDS4(in_channels=2, res_channels=8, skip_channels=8, n_layers=1, layer={"name": "s4d", "d_state": 4},
                 embed_dim_in=8, embed_dim_mid=16, embed_dim_out=16)
    sched = make_scheduler()
    x0 = torch.randn(2, 12, 2)
    available = torch.ones_like(x0, dtype=torch.bool)
    available[:, :4] = False
    cond = available.clone()
    cond[:, 8:] = False
    zero = diffusion_loss(net, x0, available, cond, sched, "missing", torch.Generator().manual_seed(0))
    # zero-initialised output: eps = 0, so the loss is the mean of noise^2 over the target entries
    g = torch.Generator().manual_seed(0)
    torch.randint(0, 200, (2,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    target = available & ~cond
    assert torch.allclose(zero, (noise[target] ** 2).mean())
    all_entries = diffusion_loss(net, x0, available, cond, sched, "all", torch.Generator().manual_seed(0))
    assert torch.allclose(all_entries, (noise[available] ** 2).mean())


@pytest.mark.parametrize("sampler,steps", [("ddpm", 7), ("ddim", 5), ("dpm", 4)])
@pytest.mark.parametrize("loss_on,residual", [("missing", False), ("all", False), ("missing", True)])
def test_observed_entries_come_back_unchanged(sampler, steps, loss_on, residual):
    torch.manual_seed(0)
    m = _module(loss_on=loss_on, interp_residual=residual)
    raw = torch.randn(3, 20, 3) * 5
    cond = torch.rand(3, 20, 3) > 0.5
    samples = m.sample(raw, cond, n_samples=2, sampler=sampler, steps=steps)
    assert samples.shape == (2, 3, 20, 3)
    assert torch.equal(samples[:, cond], raw[cond].expand(2, -1))
    assert not torch.equal(samples[0][~cond], samples[1][~cond])  # the rest is sampled


def test_samplers_take_any_step_count_within_the_schedule():
    sched = make_scheduler()
    for name in ("ddpm", "ddim", "dpm"):
        for steps in (1, 13, 200):
            assert len(make_sampler(name, sched, steps).timesteps) == steps
    with pytest.raises(ValueError, match="steps"):
        make_sampler("ddim", sched, 201)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("euler", sched, 10)


def test_impute_with_a_clean_condition_reimposes_observed_values_at_the_end():
    net = SSSDS4(in_channels=1, res_channels=4, skip_channels=4, n_layers=1, layer={"name": "s4d", "d_state": 2},
                 embed_dim_in=8, embed_dim_mid=8, embed_dim_out=8)
    x0 = torch.arange(10.0).reshape(1, 10, 1)
    cond = torch.zeros_like(x0, dtype=torch.bool)
    cond[0, ::3] = True
    out = impute(net, x0, cond, make_scheduler(), "ddim", 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[cond], x0[cond])


def test_residual_variant_with_a_silent_network_returns_the_interpolation_plus_its_noise_scale():
    """interp_residual: the diffusion runs on (x - interpolation) / scale, so a network that predicts no
    noise at all (zero output, as at initialisation) leaves DDIM's sample at interpolation + scale * noise."""
    torch.manual_seed(0)
    m = _module(interp_residual=True)
    torch.nn.init.zeros_(m.net.out_conv.weight)
    raw = torch.linspace(0, 1, 20).reshape(1, 20, 1).repeat(1, 1, 3)
    m.set_stats(torch.zeros(3), torch.ones(3))
    m.res_scale.fill_(1e-6)
    cond = torch.zeros(1, 20, 3, dtype=torch.bool)
    cond[0, ::4] = True
    cond[0, -1] = True
    samples = m.sample(raw, cond, n_samples=2, sampler="ddim", steps=5)
    assert torch.allclose(samples, raw.expand(2, -1, -1, -1), atol=1e-3)
    assert m.residual_scale(raw.repeat(8, 1, 1)).shape == (3,)


@pytest.mark.parametrize("sampler", ["ddpm", "dpm"])
def test_per_series_generators_make_a_series_draws_independent_of_its_batch(sampler):
    """With one generator per imputation, a series gets the same samples alone as in a batch (DDP, batching)."""
    from apps.sssd.diffusion import impute_samples

    torch.manual_seed(0)
    net = SSSDS4(in_channels=2, res_channels=8, skip_channels=8, n_layers=1, layer={"name": "s4d", "d_state": 4},
                 embed_dim_in=8, embed_dim_mid=16, embed_dim_out=16).eval()
    sched = make_scheduler(20)
    x0 = torch.randn(3, 12, 2)
    mask = torch.rand(3, 12, 2) > 0.5
    S = 2

    def gens(series):  # sample-major, a seed per (sample, series)
        return [torch.Generator().manual_seed(100 * s + b) for s in range(S) for b in series]

    together = impute_samples(net, x0, mask, sched, S, batch_size=4, sampler=sampler, steps=5, generator=gens([0, 1, 2]))
    alone = impute_samples(net, x0[1:2], mask[1:2], sched, S, sampler=sampler, steps=5, generator=gens([1]))
    assert torch.allclose(together[:, 1:2], alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one per row"):
        impute_samples(net, x0, mask, sched, S, sampler=sampler, steps=5, generator=gens([0, 1]))
