"""Metrics and baselines: sample CRPS against the Gaussian closed form, baselines on known signals."""

from __future__ import annotations

import math

import torch

from apps.sssd.evaluate import MetricSums, crps_from_samples, linear_fill, locf_fill, mean_fill, write_metrics
from tests.apps.sssd.helpers import gaussian_crps


def test_crps_from_samples_matches_gaussian_closed_form():
    g = torch.Generator().manual_seed(0)
    sigma = 0.7
    mu = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64)
    y = torch.tensor([0.0, 2.5, -2.3, -1.0], dtype=torch.float64)
    samples = mu + sigma * torch.randn(40000, 4, generator=g, dtype=torch.float64)
    estimate = crps_from_samples(samples, y)
    assert torch.allclose(estimate, gaussian_crps(mu, sigma, y), rtol=0.02, atol=2e-3)


def test_crps_of_one_sample_is_absolute_error_and_of_identical_samples_too():
    y = torch.tensor([1.0, -1.0], dtype=torch.float64)
    x = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    assert torch.allclose(crps_from_samples(x, y), (x[0] - y).abs())
    assert torch.allclose(crps_from_samples(x.repeat(5, 1), y), (x[0] - y).abs())


def test_baselines_on_known_signals():
    L = 10
    ramp = torch.arange(L, dtype=torch.float64).reshape(1, L, 1)
    observed = torch.zeros(1, L, 1, dtype=torch.bool)
    observed[0, [2, 5, 9]] = True
    fallback = torch.zeros(1, dtype=torch.float64)
    lin = linear_fill(ramp * observed, observed, fallback)[0, :, 0]
    assert torch.allclose(lin, torch.tensor([2.0, 2, 2, 3, 4, 5, 6, 7, 8, 9], dtype=torch.float64))
    locf = locf_fill(ramp * observed, observed, fallback)[0, :, 0]
    assert locf.tolist() == [2, 2, 2, 2, 2, 5, 5, 5, 5, 9]
    mean = mean_fill(ramp * observed, observed, fallback)[0, :, 0]
    assert mean[0] == (2 + 5 + 9) / 3 and mean[2] == 2
    # a channel with nothing observed falls back
    none = torch.zeros_like(observed)
    assert (linear_fill(ramp, none, torch.tensor([7.0], dtype=torch.float64)) == 7).all()


def test_metric_sums_give_mse_mae_mre_on_the_selected_entries():
    target = torch.tensor([1.0, 2.0, float("nan"), 4.0])
    point = torch.tensor([2.0, 2.0, 0.0, 2.0])
    where = torch.tensor([True, True, False, True])
    sums = MetricSums()
    sums.add(point, target, where)
    r = sums.result()
    assert r["entries"] == 3 and math.isclose(r["MSE"], 5 / 3) and math.isclose(r["MAE"], 1.0)
    assert math.isclose(r["MRE"], 3 / 7) and math.isclose(r["RMSE"], math.sqrt(5 / 3)) and r["CRPS"] == r["MAE"]


def test_a_second_test_keeps_the_first_tests_tables(tmp_path):
    """``ssm sssd test`` of last.ckpt then best.ckpt wrote both into test_metrics.md/.csv, the second over the
    first; now the second goes to test_metrics-v2.md/.csv and the first is kept."""
    sums = MetricSums()
    sums.count = 4
    first = write_metrics({("rm", 0.5): {"SSSD": sums.result()}}, tmp_path)
    assert [p.name for p in first] == ["test_metrics.md", "test_metrics.csv"]
    before = [p.read_text() for p in first]
    sums.count = 8
    second = write_metrics({("rm", 0.9): {"SSSD": sums.result()}}, tmp_path)
    assert [p.name for p in second] == ["test_metrics-v2.md", "test_metrics-v2.csv"]
    assert [p.read_text() for p in first] == before and "| rm | 0.9 |" in second[0].read_text()
