"""The SSM layer as one value in every app: ``model.layer: {name: s4d, d_state: 64, ...}``.

``--model.layer.name s5 --model.layer.d_state 32`` override one key; :func:`layer_spec` checks the
spec against the layer class's signature (values that arrive as text become the types the layer
takes) and turns a mistake into one line naming the recipe key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apps.common.errors import UserError
from ssmcore.registry import LayerSpecError, causal_layer_names, layer_names, sequence_defaults
from ssmcore.registry import layer_spec as _checked_spec

#: a layer spec: the registry name and that layer's options
LayerSpec = str | dict[str, Any]


class LayerError(UserError, ValueError):
    """A layer spec that cannot be built; the message names the recipe key (``model.layer.d_state: ...``)."""


def layer_spec(spec: str | Mapping[str, Any] | None, key: str = "model.layer", default: str = "s4d",
               sequence: bool = True, **defaults: Any) -> LayerSpec:
    """The checked spec (``{"name": ..., **options}``, values coerced to the layer's types).

    ``spec`` may be a bare name; None means ``default``.  ``defaults`` are options the app sets unless
    the spec does (``bidirectional=True`` for a bidirectional model).  ``sequence``: the app runs the layer
    over one sequence axis (every app but s4nd's grids), so a layer over N-D grids (S4ND) gets ``dim: 1`` unless
    the spec sets it (:func:`ssmcore.registry.sequence_defaults`): any layer is interchangeable by name.
    Raises:
        LayerError: an unknown layer or option, or a bad value, naming ``key`` (``model.layer.d_state: ...``).
    """
    spec = default if spec is None else spec
    name = spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, Mapping) else None
    if sequence and isinstance(name, str) and name.lower() in layer_names():
        defaults = {**sequence_defaults(name), **defaults}
    try:
        return _checked_spec(spec, **defaults)
    except LayerSpecError as e:
        raise LayerError(f"{key}.{e.key}: {e.reason}") from None


def causal_layer_spec(spec: str | Mapping[str, Any] | None, key: str = "model.layer", **defaults: Any) -> LayerSpec:
    """:func:`layer_spec` for a model that steps: the layer must run recurrently and be causal."""
    checked = layer_spec(spec, key, **defaults)
    causal = causal_layer_names()
    if checked["name"] not in causal:
        raise LayerError(f"{key}.name: {checked['name']!r} cannot generate; choose a causal layer: {', '.join(causal)}")
    if checked.get("bidirectional"):
        raise LayerError(f"{key}.bidirectional: a model that steps needs a causal layer; set it to false")
    return checked


def legacy_layer_spec(layer: str | Mapping[str, Any] | None, *option_maps: Mapping[str, Any] | None,
                      **flat: Any) -> dict[str, Any] | None:
    """One spec from the older spellings: a name plus option mappings (``layer_kwargs``, ``layer_options``)
    and flattened options (``d_state``, ``bidirectional``); None values of ``flat`` are left out."""
    if layer is None and not any(option_maps) and not any(v is not None for v in flat.values()):
        return None
    spec: dict[str, Any] = dict(layer) if isinstance(layer, Mapping) else {"name": layer or "s4d"}
    for options in option_maps:
        spec.update(options or {})
    spec.update({k: v for k, v in flat.items() if v is not None})
    return spec
