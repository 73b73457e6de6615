"""Sequential MNIST-5k and the PTD paper's Fourier-mode noise."""

from __future__ import annotations

import math

import torch

from apps.synthetic.sequential_mnist import SequentialMNIST, fourier_noise, to_sequences


def test_sequences_are_row_major_pixels():
    images = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 28, 28)
    seq = to_sequences(images)
    assert tuple(seq.shape) == (2, 784, 1) and seq[0, 29, 0] == images[0, 1, 1]
    pooled = to_sequences(images, downsample=2)
    assert tuple(pooled.shape) == (2, 196, 1) and pooled[0, 0, 0] == images[0, :2, :2].mean()


def test_fourier_noise_is_one_scaled_cosine_per_sequence():
    x = torch.zeros(3, 100, 1)
    noisy = fourier_noise(x, omega=0.5, amplitude=0.1, g=torch.Generator().manual_seed(0))
    t = torch.arange(100, dtype=torch.float32)
    for b in range(3):
        a = noisy[b, 0, 0] / 0.1  # cos(0) = 1
        assert 0 <= a <= 1
        torch.testing.assert_close(noisy[b, :, 0], 0.1 * a * torch.cos(0.5 * t))
    assert math.isclose(
        float(fourier_noise(x, 1.0, g=torch.Generator().manual_seed(0)).abs().max()), 0.1, abs_tol=0.1
    )


def test_splits_partition_mnist5k():
    data = SequentialMNIST(downsample=4, train_size=4000, val_size=500)
    data.setup()
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes == {"train": 4000, "val": 500, "test": 500}
    x, y = data.splits["test"].tensors
    assert tuple(x.shape) == (500, 49, 1) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert set(y.tolist()) == set(range(10))
