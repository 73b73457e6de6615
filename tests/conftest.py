"""Test-wide settings: one intra-op thread (tiny shapes run faster without thread hand-offs,
and the suite does not fight other processes for the cores)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
