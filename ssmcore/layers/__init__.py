"""One file per layer; see :mod:`ssmcore.registry` for the names."""

from ssmcore.layers.base import ConvSSMLayer, SSMLayer
from ssmcore.layers.dss import DSS
from ssmcore.layers.s4d import S4D
from ssmcore.layers.s4nd import S4ND

__all__ = ["ConvSSMLayer", "DSS", "S4D", "S4ND", "SSMLayer"]
