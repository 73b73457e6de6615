"""One file per layer; see :mod:`ssmcore.registry` for the names."""

from ssmcore.layers.base import ConvSSMLayer, SSMLayer
from ssmcore.layers.dlr import DLR
from ssmcore.layers.dss import DSS
from ssmcore.layers.ptd import S4PTD, S5PTD
from ssmcore.layers.s4 import S4
from ssmcore.layers.s4d import S4D
from ssmcore.layers.s4nd import S4ND
from ssmcore.layers.s5 import S5

__all__ = ["ConvSSMLayer", "DLR", "DSS", "S4", "S4D", "S4ND", "S4PTD", "S5", "S5PTD", "SSMLayer"]
