"""ssmcore: structured state-space layers for PyTorch.

Every layer follows one contract (channels last, batch first)::

    y, next_state = layer(x, state=None, rate=1.0)   # x, y: (B, L, H)
    state = layer.default_state(batch_size)
    y_t, state = layer.step(x_t, state)               # x_t, y_t: (B, H)
    k = layer.kernel(L, rate=1.0)                      # (C, H, L), convolutional layers
    rec = layer.recurrence(rate=1.0)                   # the discrete terms step() runs (can_step layers)

Kernels and recurrences are cached without autograd while the parameters are unchanged.
Layers by name: ``make_layer("s4d", d_model=H, ...)``; see :data:`ssmcore.registry.LAYERS`.
"""

from ssmcore._version import __version__
from ssmcore.blocks import FeedForward, ResidualBlock, SequenceModel
from ssmcore.layers.base import ConvSSMLayer, Recurrence, SSMLayer
from ssmcore.layers.dlr import DLR
from ssmcore.layers.dss import DSS
from ssmcore.layers.ptd import S4PTD, S5PTD
from ssmcore.layers.s4 import S4
from ssmcore.layers.s4d import S4D
from ssmcore.layers.s4nd import S4ND
from ssmcore.layers.s5 import S5
from ssmcore.optim import param_groups
from ssmcore.pooling import AvgPool, DownPool, UpPool
from ssmcore.registry import layer_class, layer_names, make_layer

__all__ = [
    "__version__",
    "AvgPool",
    "ConvSSMLayer",
    "DLR",
    "DSS",
    "DownPool",
    "FeedForward",
    "Recurrence",
    "ResidualBlock",
    "S4",
    "S4D",
    "S4ND",
    "S4PTD",
    "S5",
    "S5PTD",
    "SSMLayer",
    "SequenceModel",
    "UpPool",
    "layer_class",
    "layer_names",
    "make_layer",
    "param_groups",
]
