"""Fixtures of the s4nd app tests: a tiny ImageFolder tree written in a few milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = 3


def write_image_folder(root: Path, side: int = 16, per_split: dict[str, int] | None = None, mode: str = "L") -> Path:
    """``root/{train,val,test}/<class>/<i>.png``: class c is a bright bar at row band c (easy to learn)."""
    per_split = per_split or {"train": 8, "val": 4, "test": 4}
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 40, size=(side, side)).astype(np.uint8)
                band = side // CLASSES
                img[c * band : (c + 1) * band, 2:-2] = 220
                if mode == "RGB":
                    img = np.repeat(img[..., None], 3, axis=-1)
                Image.fromarray(img, mode=mode).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


@pytest.fixture(autouse=True)
def _runs_in_tmp(runs_dir: Path) -> Path:
    """Every s4nd test runs with runs under tmp_path (``runs_dir``, tests/apps/conftest.py)."""
    return runs_dir
