"""Test-wide settings: one intra-op thread (tiny shapes run faster without thread hand-offs,
and the suite does not fight other processes for the cores)."""

import pytest
import torch


@pytest.fixture
def strict_float32():
    """TF32 off for the test, so that float32 on a CUDA device means float32 (the CUDA tests' equivalences)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
