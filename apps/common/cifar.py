"""CIFAR-10 (Krizhevsky 2009) from its python version, read without running code from the files.

The layout is what ``cifar-10-python.tar.gz`` unpacks to (and what torchvision reads):
``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch}``, each a pickled dict with ``data``
(N, 3072) uint8 rows (1024 red, 1024 green, 1024 blue values of a 32 x 32 image, row-major) and
``labels`` (N ints 0-9).

A pickle can name any importable function, and plain ``pickle.load`` calls it.  These files are
read with :class:`SafeUnpickler`, which resolves only the few numpy names that rebuild an array
(and ``_codecs.encode`` for bytes written by Python 3 at protocol 2), so a tampered file is an
error, never code that runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from apps.common.errors import UserError

#: the folder of the python version of CIFAR-10
CIFAR_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
#: side of a CIFAR image
CIFAR_SIDE = 32

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global is refused (``UnpicklingError``)."""

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle's hook
        if (module, name) in _ALLOWED:
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                module = "numpy._core." + module.removeprefix("numpy.core.")  # numpy 2's name, without its warning
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (only numpy arrays are allowed)")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    fix = "replace it with the file from cifar-10-python.tar.gz"
    try:
        with open(path, "rb") as f:
            batch = SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, OSError) as e:
        raise UserError(f"not a CIFAR-10 batch: {path} ({type(e).__name__}: {e}); {fix}") from e
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise UserError(f"not a CIFAR-10 batch: {path} has no 'data' and 'labels' entries; {fix}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    n = len(labels)
    if data.dtype != np.uint8 or data.shape != (n, 3 * CIFAR_SIDE * CIFAR_SIDE) or labels.ndim != 1 \
            or not np.issubdtype(labels.dtype, np.integer) or (n and (labels.min() < 0 or labels.max() > 9)):
        raise UserError(f"not a CIFAR-10 batch: {path} holds data {data.dtype} {data.shape} and {n} labels "
                        f"(expected uint8 (N, 3072) and N labels 0-9); {fix}")
    return data, labels


def load_cifar10(root: Path, train: bool) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from its python version: ``(images (N, 32, 32, 3) uint8, labels (N,) long)``.

    ``train``: the five training batches (50000 images), else ``test_batch`` (10000).
    Missing or damaged files are a UserError naming them; nothing is downloaded.
    """
    folder = Path(root) / CIFAR_FOLDER
    names = TRAIN_BATCHES if train else TEST_BATCHES
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise UserError(f"CIFAR-10 not found: {folder} lacks {', '.join(missing)} (unpack cifar-10-python.tar.gz "
                        f"into {root}; nothing is downloaded)")
    batches = [_read_batch(folder / n) for n in names]
    data = np.concatenate([b[0] for b in batches]).reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)
    labels = np.concatenate([b[1] for b in batches]).astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels)


def write_tiny_cifar(root: Path, n: int = 20, seed: int = 0) -> Path:
    """Write a tiny MADE-UP ``root/cifar-10-batches-py`` (random images, ``n`` per batch) for tests.

    Not CIFAR-10: uniform random pixels with labels ``i % 10``, pickled the way the real batches are
    (a dict with ``batch_label``, ``data``, ``labels``, ``filenames``).  Refuses an existing folder.
    """
    folder = Path(root) / CIFAR_FOLDER
    if folder.exists():
        raise UserError(f"{folder} already exists; the tiny writer never overwrites: choose another folder")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in TRAIN_BATCHES + TEST_BATCHES:
        batch = {"batch_label": f"tiny made-up {name}",
                 "data": rng.integers(0, 256, (n, 3 * CIFAR_SIDE * CIFAR_SIDE), dtype=np.uint8),
                 "labels": [i % 10 for i in range(n)],
                 "filenames": [f"tiny_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder
