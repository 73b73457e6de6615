"""Layers by name or by spec.

A layer spec is one value: the registry name plus that layer's options, e.g.
``{"name": "s4d", "d_state": 64, "bidirectional": True}``.  Both calls build the same layer::

    make_layer({"name": "s4d", "d_state": 64}, d_model=128)
    make_layer("s4d", d_model=128, d_state=64)

Option values are checked and coerced against the layer class's ``__init__`` signature (the
options a subclass forwards through ``**kwargs`` are found by walking its base classes), so a
value that arrives as text (``"16"`` from a command line) becomes the ``int`` the layer expects,
and an unknown option or a bad value is a :class:`LayerSpecError` naming the option.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

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
    "sgconv": "ssmcore.layers.sgconv:SGConv",
    "gss": "ssmcore.layers.gss:GSS",
    "ema": "ssmcore.layers.ema:EMA",
    "mega": "ssmcore.layers.mega:Mega",
    "liquid_s4": "ssmcore.layers.liquid_s4:LiquidS4",
    "ccnn": "ssmcore.layers.ccnn:CCNN",
}

#: options a container (a backbone) sets for each layer itself; a spec does not carry them
CONTAINER_OPTIONS = ("d_model",)


class LayerSpecError(ValueError):
    """A layer spec that cannot be built: ``key`` is the offending option (``name`` for the layer name)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"layer.{key}: {reason}")
        self.key, self.reason = key, reason


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
    key = str(name).lower()
    if key not in LAYERS:
        raise LayerSpecError("name", f"unknown layer {name!r}; choose one of {', '.join(sorted(LAYERS))}")
    module, cls = LAYERS[key].split(":")
    return getattr(importlib.import_module(module), cls)


def can_step(name: str) -> bool:
    """Whether the layer registered under ``name`` runs recurrently (``step()``) when causal.

    Read from the class: its ``can_step`` attribute where it declares one, otherwise whether it
    implements ``ssm_step`` (the recurrent step of :class:`ssmcore.layers.base.SSMLayer`).
    """
    cls = layer_class(name)
    flag = getattr(cls, "can_step", None)
    if isinstance(flag, bool):
        return flag
    from ssmcore.layers.base import SSMLayer

    return getattr(cls, "ssm_step", None) is not SSMLayer.ssm_step


def causal_layer_names() -> list[str]:
    """The registered layers that can generate step by step (derived from the classes)."""
    return [name for name in layer_names() if can_step(name)]


def dt_layer_names() -> list[str]:
    """The registered layers whose ``forward`` takes per-step time steps ``dt`` (irregular sampling)."""
    return [name for name in layer_names() if getattr(layer_class(name), "has_dt", False)]


@cache
def layer_options(cls: type) -> dict[str, tuple[Any, Any]]:
    """``{option: (type hint, default)}`` of ``cls(...)``, base-class options forwarded by ``**kwargs`` included.

    The default is ``inspect.Parameter.empty`` for a required option.
    """
    options: dict[str, tuple[Any, Any]] = {}
    for klass in cls.__mro__:
        if klass in (nn.Module, object) or "__init__" not in vars(klass):
            continue
        init = vars(klass)["__init__"]
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 -- an unresolvable annotation: fall back to the defaults' types
            hints = {}
        forwards = False
        for name, p in inspect.signature(init).parameters.items():
            if name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                forwards = True
                continue
            if name not in options:
                options[name] = (hints.get(name, Any), p.default)
        if not forwards:
            break
    return options


def sequence_defaults(name: str) -> dict[str, Any]:
    """Options that make layer ``name`` run over one sequence axis (B, L, H): ``dim=1`` for a layer over N-D grids
    (S4ND, 2-D by default), nothing for the others.  Backbones over sequences pass them as defaults, so a spec
    that sets ``dim`` itself still wins."""
    return {"dim": 1} if "dim" in layer_options(layer_class(str(name).lower())) else {}


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(value: Any, hint: Any, default: Any) -> Any:
    """``value`` as type ``hint``; raises ValueError/TypeError with a short reason."""
    if hint is Any or hint is inspect.Parameter.empty:
        if default is None or default is inspect.Parameter.empty:
            return value
        hint = type(default)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in members:
                return None
        errors = []
        for member in members:
            if member is type(None):
                continue
            try:
                return _coerce(value, member, inspect.Parameter.empty)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise ValueError(" or ".join(dict.fromkeys(errors)) or f"cannot be {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"expected one of {', '.join(map(repr, typing.get_args(hint)))}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError(f"expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return [_coerce(v, item, inspect.Parameter.empty) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"expected true or false, got {value!r}")
    if hint in (int, float):
        return _number(value, hint)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _number(value: Any, kind: type) -> int | float:
    """``value`` as an ``int`` (whole floats and integer text too) or a ``float`` (numbers and numeric text)."""
    what = "an integer" if kind is int else "a number"
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ValueError(f"expected {what}, got {value!r}")
    if kind is float:
        return float(number)
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(f"expected {what}, got {value!r}")
    return int(number)


def layer_spec(spec: str | Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """The checked spec ``{"name": ..., **options}`` with every option coerced to the layer's types.

    ``spec`` is a name or a mapping with a ``name`` key; ``defaults`` fill in options the spec does
    not set (a container's choices, e.g. ``bidirectional=True``) and are checked the same way.
    Raises:
        LayerSpecError: no or an unknown name, an option the layer does not take, a bad value.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise LayerSpecError("name", f"a layer is a name or a mapping with a name, got {spec!r}")
    if not spec.get("name"):
        raise LayerSpecError("name", "missing: give the layer's registry name (e.g. name: s4d)")
    name = str(spec["name"]).lower()
    cls = layer_class(name)
    options = layer_options(cls)
    merged = {**defaults, **{k: v for k, v in spec.items() if k != "name"}}
    out: dict[str, Any] = {"name": name}
    for key, value in merged.items():
        if key not in options:
            known = ", ".join(k for k in options if k not in CONTAINER_OPTIONS)
            raise LayerSpecError(key, f"{name} has no option {key!r}; its options are {known}")
        hint, default = options[key]
        try:
            out[key] = _coerce(value, hint, default)
        except (TypeError, ValueError) as e:
            raise LayerSpecError(key, f"{e} (layer {name})") from None
    return out


def make_layer(spec: str | Mapping[str, Any], d_model: int | None = None, **options: Any) -> nn.Module:
    """Build a layer from a spec (``{"name": "s4d", "d_state": 64}``) or a name plus options.

    ``d_model`` is set by the caller (a backbone knows each layer's width).  With a mapping spec,
    ``options`` are defaults the spec's own values override (``SequenceModel`` passes its
    ``dropout`` this way, and ``layer.dropout`` in the spec wins); with a name they are the options.
    Raises:
        LayerSpecError (a ValueError): see :func:`layer_spec`.
    """
    if isinstance(spec, Mapping) and "d_model" in spec:
        raise LayerSpecError("d_model", "is set by the model that holds the layer; remove it from the layer spec")
    checked = layer_spec(spec, **options)
    name = checked.pop("name")
    if d_model is not None:
        checked["d_model"] = d_model
    return layer_class(name)(**checked)
