"""One file per layer; see :mod:`ssmcore.registry` for the names."""

from ssmcore.layers.base import ConvSSMLayer, SSMLayer
from ssmcore.layers.s4d import S4D

__all__ = ["ConvSSMLayer", "SSMLayer", "S4D"]
