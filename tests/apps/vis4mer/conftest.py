"""Shared fixtures: a small Moving-MNIST stand-in (12 videos of 8 s) and its feature cache."""

from pathlib import Path

import pytest

from apps.vis4mer.features import extract_features
from apps.vis4mer.prepare import prepare_moving_mnist


@pytest.fixture(scope="session")
def moving_mnist(tmp_path_factory) -> Path:
    """A prepared dataset with its linear-patch feature cache under ``ROOT/features``."""
    root = tmp_path_factory.mktemp("moving_mnist")
    prepare_moving_mnist(root, videos=12, seconds=8, fps=4, canvas=32, progress=False)
    videos = sorted((root / "videos").glob("*.mp4"))
    extract_features(videos, root / "features", "linear", fps=1.0, image_size=16, patch=8, progress=False)
    return root

