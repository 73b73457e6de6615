"""ssmcore: structured state-space layers for PyTorch.

Every layer follows one contract (channels last, batch first)::

    y, next_state = layer(x, state=None, rate=1.0)   # x, y: (B, L, H)
    state = layer.default_state(batch_size)
    y_t, state = layer.step(x_t, state)               # x_t, y_t: (B, H)
    k = layer.kernel(L, rate=1.0)                      # (C, H, L), convolutional layers
"""

from ssmcore.layers.base import ConvSSMLayer, SSMLayer
from ssmcore.layers.s4d import S4D
from ssmcore.optim import param_groups
from ssmcore.registry import layer_names, make_layer

__all__ = ["ConvSSMLayer", "SSMLayer", "S4D", "make_layer", "layer_names", "param_groups"]
__version__ = "0.1.0"
