"""Every DLR task generator: documented shapes, values in [-1, 1], and the task's definition."""

from __future__ import annotations

import math

import pytest
import torch

from apps.synthetic.data import SyntheticData
from apps.synthetic.tasks import TASKS, generate, shift_delays, solve_size, task_dims

L = 64


def sample(task: str, batch: int = 3, length: int = L, seed: int = 0, **kw):
    return generate(task, batch, length, torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize(
    ("task", "x_shape", "y_shape"),
    [
        ("shift", (3, L, 3), (3, L, 8)),
        ("cumsum", (3, L, 3), (3, L, 1)),
        ("cummax", (3, L, 3), (3, L, 1)),
        ("reverse", (3, 2 * L, 3), (3, L, 1)),
        ("sort", (3, 2 * L, 3), (3, L, 1)),
        ("masked_select", (3, L + 32, 4), (3, 32, 1)),
        ("masked_select_fixed", (3, L + 32, 4), (3, 32, 1)),
        ("context_shift", (3, L, 3), (3, L, 1)),
        ("solve", (3, 7 * 7 + 14, 3), (3, 7, 1)),
        ("solve_fixed", (3, 7 * 7 + 14, 3), (3, 7, 1)),
        ("mips", (3, L, 14), (3, L, 4)),
    ],
)
def test_shapes_ranges_and_positions(task, x_shape, y_shape):
    x, y = sample(task)
    assert tuple(x.shape) == x_shape and tuple(y.shape) == y_shape
    assert task_dims(task) == (x_shape[-1], y_shape[-1])
    assert x.dtype == y.dtype == torch.float32 and torch.isfinite(y).all()
    assert x[..., :-2].abs().max() <= 1.0 + 1e-6
    angle = 2 * math.pi * torch.arange(x.shape[1]) / x.shape[1]
    torch.testing.assert_close(x[0, :, -2], angle.cos())
    torch.testing.assert_close(x[0, :, -1], angle.sin())


def test_all_eleven_tasks_are_listed():
    assert len(TASKS) == 11
    assert [t.label for t in TASKS.values()] == [
        "Shift",
        "CumSum",
        "CumMax",
        "Reverse",
        "Sort",
        "MaskedSelect",
        "MaskedSelect-Fixed",
        "ContextShift",
        "Solve",
        "Solve-Fixed",
        "MIPS",
    ]


def test_shift_outputs_are_the_delayed_input():
    x, y = sample("shift", num_shifts=4)
    u = x[..., 0]
    for j, d in enumerate(shift_delays(L, 4)):
        assert torch.equal(y[:, d:, j], u[:, : L - d]) and not y[:, :d, j].any()
    assert shift_delays(L, 4) == [0, 16, 32, 48]


def test_cumsum_and_cummax():
    x, y = sample("cumsum")
    torch.testing.assert_close(y[..., 0] * torch.arange(1, L + 1).sqrt(), x[..., 0].cumsum(-1))
    x, y = sample("cummax")
    assert torch.equal(y[..., 0], torch.cummax(x[..., 0], -1).values)


def test_reverse_and_sort_read_then_answer():
    x, y = sample("reverse")
    assert not x[:, L:, 0].any()
    assert torch.equal(y[..., 0], x[:, :L, 0].flip(-1))
    x, y = sample("sort")
    assert (y[:, 1:, 0] >= y[:, :-1, 0]).all()
    assert torch.equal(y[..., 0], x[:, :L, 0].sort(-1).values)


def test_masked_select_copies_the_marked_values_in_order():
    x, y = sample("masked_select", n_select=5)
    values, marker = x[:, :L, 0], x[:, :L, 1]
    assert (marker.sum(-1) == 5).all() and not x[:, L:, :2].any()
    for b in range(3):
        assert torch.equal(y[b, :, 0], values[b][marker[b] == 1])
    assert not torch.equal(marker[0], marker[1])  # new positions per sample


def test_masked_select_fixed_keeps_its_positions():
    x1, _ = sample("masked_select_fixed", n_select=5, seed=0)
    x2, _ = sample("masked_select_fixed", n_select=5, seed=1)
    assert torch.equal(x1[:, :, 1], x2[:, :, 1]) and torch.equal(x1[0, :, 1], x1[2, :, 1])
    assert not torch.equal(x1[:, :, 0], x2[:, :, 0])


def test_context_shift_reads_its_shift_from_the_header():
    x, y = sample("context_shift", batch=8)
    v = x[..., 0]
    for b in range(8):
        s = round((math.atan2(float(v[b, 1]), float(v[b, 0])) % (2 * math.pi)) * L / (2 * math.pi)) % L
        assert torch.equal(y[b, s:, 0], v[b, : L - s]) and not y[b, :s, 0].any()


@pytest.mark.parametrize("task", ["solve", "solve_fixed"])
def test_solve_emits_the_solution(task):
    x, y = sample(task, batch=4)
    n = solve_size(L)
    A = x[:, : n * n, 0].reshape(4, n, n)
    b = x[:, n * n : n * n + n, 0]
    torch.testing.assert_close((A @ y).squeeze(-1), b, atol=1e-5, rtol=1e-5)
    assert not x[:, n * n + n :, 0].any()
    same_A = torch.equal(A[0], A[1])
    assert same_A == (task == "solve_fixed")


def test_mips_returns_the_value_of_the_best_key_so_far():
    x, y = sample("mips", batch=2, length=16, mips_dim=3)
    q, k, v = x[..., :3], x[..., 3:6], x[..., 6:9]
    for t in range(16):
        j = int((q[0, t] @ k[0, : t + 1].T).argmax())
        torch.testing.assert_close(y[0, t], v[0, j])
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(2, 16))


def test_bad_options_are_value_errors():
    with pytest.raises(ValueError, match="unknown 'nope'"):
        sample("nope")
    with pytest.raises(ValueError, match="num_shifts"):
        sample("shift", num_shifts=L + 1)
    with pytest.raises(ValueError, match="n_select"):
        SyntheticData(task="masked_select", length=16, n_select=32)


def test_training_batches_are_fresh_each_epoch_and_validation_is_fixed():
    data = SyntheticData(task="cumsum", length=32, batch_size=4, steps_per_epoch=2, val_size=8)
    data.setup("fit")
    first, second = list(data.train_dataloader()), list(data.train_dataloader())
    assert len(first) == 2 and tuple(first[0][0].shape) == (4, 32, 3)
    assert not torch.equal(first[0][0], second[0][0]) and not torch.equal(first[0][0], first[1][0])
    again = SyntheticData(task="cumsum", length=32, batch_size=4, steps_per_epoch=2, val_size=8)
    again.setup("fit")
    assert torch.equal(data.val_set.tensors[0], again.val_set.tensors[0])
    assert torch.equal(next(iter(again.train_dataloader()))[0], first[0][0])  # (seed, epoch) reproduces
