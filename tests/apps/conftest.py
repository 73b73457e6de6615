"""Fixtures every app's tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """Runs go under ``tmp_path/runs`` (``SSM_RUNS``) and relative paths resolve in ``tmp_path``."""
    monkeypatch.setenv("SSM_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"
