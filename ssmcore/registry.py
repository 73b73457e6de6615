"""Layers by name: ``make_layer("s4d", d_model=128, d_state=64)``."""

from __future__ import annotations

import importlib

from torch import nn

#: name -> "module:Class"; imported on first use
LAYERS: dict[str, str] = {
    "s4": "ssmcore.layers.s4:S4",
    "s4d": "ssmcore.layers.s4d:S4D",
    "dss": "ssmcore.layers.dss:DSS",
    "s4nd": "ssmcore.layers.s4nd:S4ND",
    "s5": "ssmcore.layers.s5:S5",
    "dlr": "ssmcore.layers.dlr:DLR",
    "s4_ptd": "ssmcore.layers.ptd:S4PTD",
    "s5_ptd": "ssmcore.layers.ptd:S5PTD",
    "liquid_s4": "ssmcore.layers.liquid_s4:LiquidS4",
    "ccnn": "ssmcore.layers.ccnn:CCNN",
}


def layer_names() -> list[str]:
    """Every registered layer name whose module is present."""
    names = []
    for name in LAYERS:
        try:
            layer_class(name)
        except ImportError:
            continue
        names.append(name)
    return names


def layer_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``."""
    key = name.lower()
    if key not in LAYERS:
        raise ValueError(f"unknown layer {name!r}; choose one of {', '.join(sorted(LAYERS))}")
    module, cls = LAYERS[key].split(":")
    return getattr(importlib.import_module(module), cls)


def make_layer(name: str, d_model: int, **kwargs) -> nn.Module:
    """Build the layer registered under ``name`` with ``d_model`` features and its own options."""
    return layer_class(name)(d_model=d_model, **kwargs)
