"""CSDI's normalised quantile CRPS and CRPS-sum against references built here from their definitions."""

from __future__ import annotations

import math

import torch

from apps.sssd.evaluate import MetricSums
from apps.sssd.metrics import QUANTILE_LEVELS, crps_sum, normalised_crps, quantile_crps_terms, quantile_loss
from tests.apps.sssd.helpers import gaussian_crps


def pinball(y: float, p: float, q: float) -> float:
    """2 rho_q(y - p), rho_q(u) = u (q - 1{u < 0})."""
    u = y - p
    return 2 * u * (q - (1.0 if u < 0 else 0.0))


def test_levels_are_the_19_of_csdi():
    assert len(QUANTILE_LEVELS) == 19
    assert QUANTILE_LEVELS[0] == 0.05 and QUANTILE_LEVELS[-1] == 0.95
    assert all(abs(b - a - 0.05) < 1e-12 for a, b in zip(QUANTILE_LEVELS, QUANTILE_LEVELS[1:]))


def test_quantile_loss_on_hand_made_cases():
    # under-prediction costs q, over-prediction 1 - q, both doubled
    for y, p, q in [(3.0, 1.0, 0.1), (3.0, 1.0, 0.9), (-1.0, 2.0, 0.25), (0.5, 0.5, 0.3)]:
        got = quantile_loss(torch.tensor(p, dtype=torch.float64), torch.tensor(y, dtype=torch.float64), q)
        assert abs(float(got) - pinball(y, p, q)) < 1e-12
    assert abs(pinball(3.0, 1.0, 0.1) - 0.4) < 1e-12 and abs(pinball(-1.0, 2.0, 0.25) - 4.5) < 1e-12


def test_quantile_terms_of_hand_made_samples():
    # samples 0..4: torch/numpy "linear" quantile of level q is 4 q; the reference sums the pinball by hand
    samples = torch.arange(5, dtype=torch.float64).reshape(5, 1)
    for y in (-1.0, 1.3, 2.0, 7.5):
        want = sum(pinball(y, 4 * q, q) for q in QUANTILE_LEVELS) / 19
        got = quantile_crps_terms(samples, torch.tensor([y], dtype=torch.float64))
        assert abs(float(got[0]) - want) < 1e-12


def test_normalised_crps_is_summed_terms_over_summed_abs_target():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(30, 2, 6, 3, generator=g, dtype=torch.float64)
    target = 2 + torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    where = torch.rand(2, 6, 3, generator=g) < 0.5
    num = 0.0
    for b, t, c in where.nonzero().tolist():
        draws = samples[:, b, t, c].sort().values
        for q in QUANTILE_LEVELS:  # linear interpolation between order statistics, from its definition
            h = (len(draws) - 1) * q
            lo = math.floor(h)
            quant = float(draws[lo] + (h - lo) * (draws[min(lo + 1, len(draws) - 1)] - draws[lo]))
            num += pinball(float(target[b, t, c]), quant, q) / 19
    want = num / float(target[where].abs().sum())
    assert abs(normalised_crps(samples, target, where) - want) < 1e-10 * max(1.0, want)


def test_normalised_crps_of_gaussian_samples_approaches_the_closed_form_crps():
    # 19 levels approximate the CRPS integral: for Gaussian draws the exact-quantile version is within a few %
    g = torch.Generator().manual_seed(1)
    mu = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64)
    y = torch.tensor([0.3, 2.5, -2.3, -1.0], dtype=torch.float64)
    sigma = 0.7
    samples = mu + sigma * torch.randn(40000, 4, generator=g, dtype=torch.float64)
    terms = quantile_crps_terms(samples, y)
    # the same sum with the exact Gaussian quantiles mu + sigma Phi^-1(q): only Monte Carlo error between them
    exact = sum(quantile_loss(mu + sigma * torch.special.ndtri(torch.tensor(q, dtype=torch.float64)), y, q)
                for q in QUANTILE_LEVELS) / 19
    assert torch.allclose(terms, exact, rtol=0.01, atol=2e-3)
    closed = gaussian_crps(mu, sigma, y)
    assert torch.allclose(terms, closed, rtol=0.08, atol=0.02)
    where = torch.ones(4, dtype=torch.bool)
    assert abs(normalised_crps(samples, y, where) - float(closed.sum() / y.abs().sum())) < 0.05


def test_crps_sum_scores_the_sum_over_target_channels():
    g = torch.Generator().manual_seed(2)
    samples = torch.randn(50, 5, 3, generator=g, dtype=torch.float64)  # (S, L, C)
    target = torch.randn(5, 3, generator=g, dtype=torch.float64)
    where = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    steps = [0, 1, 3, 4]  # step 2 has no target entry
    s = torch.stack([(samples[:, t] * where[t]).sum(-1) for t in steps], 1)
    y = torch.stack([(target[t] * where[t]).sum() for t in steps])
    want = float(quantile_crps_terms(s, y).sum()) / float(y.abs().sum())
    assert abs(crps_sum(samples, target, where) - want) < 1e-12
    # with one channel, CRPS-sum is the normalised CRPS
    one = where[:, :1]
    assert abs(crps_sum(samples[..., :1], target[:, :1], one) - normalised_crps(samples[..., :1], target[:, :1], one)) < 1e-12


def test_metric_sums_accumulate_ncrps_and_crps_sum_batch_by_batch():
    g = torch.Generator().manual_seed(3)
    samples = torch.randn(20, 4, 8, 2, generator=g, dtype=torch.float64)
    target = 1 + torch.randn(4, 8, 2, generator=g, dtype=torch.float64)
    where = torch.rand(4, 8, 2, generator=g) < 0.6
    point = samples.median(0).values
    whole, parts = MetricSums(), MetricSums()
    whole.add(point, target, where, samples)
    for b in range(4):
        parts.add(point[b:b + 1], target[b:b + 1], where[b:b + 1], samples[:, b:b + 1])
    r, p = whole.result(), parts.result()
    assert abs(r["NCRPS"] - normalised_crps(samples, target, where)) < 1e-12
    assert abs(r["CRPS-sum"] - crps_sum(samples, target, where)) < 1e-12
    for key in ("NCRPS", "CRPS-sum", "CRPS", "MSE"):
        assert abs(r[key] - p[key]) < 1e-12
    # a point estimate: NCRPS is its MRE, CRPS-sum that of the summed error
    baseline = MetricSums()
    baseline.add(point, target, where)
    b = baseline.result()
    assert abs(b["NCRPS"] - b["MRE"]) < 1e-12
    err = ((point - target) * where).sum(-1).abs().sum() / ((target * where).sum(-1)).abs().sum()
    assert abs(b["CRPS-sum"] - float(err)) < 1e-12
