"""The one checkpoint loader: read once, without running code, and upgrade older hyper-parameter names.

A checkpoint is read with ``torch.load(weights_only=True)``: tensors, containers and plain values, plus
the few allow-listed types in :data:`SAFE_GLOBALS`.  Anything else (a pickled object whose loading
could run code or write a file), an empty, truncated or text file, is refused with one line naming
the file.  :func:`upgrade_hparams` maps the spellings of checkpoints made before the layer and the
optimiser became one value each (``layer`` + ``layer_kwargs`` / ``layer_options``, flattened
``d_state`` / ``bidirectional``, flat ``lr`` / ``ssm_lr`` / ... fields) onto ``layer`` and ``optim``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from apps.common.errors import UserError
from apps.common.layers import legacy_layer_spec
from apps.common.optim import OPTIM_FIELDS

#: the types besides tensors and plain containers that our checkpoints may hold (data-only classes)
SAFE_GLOBALS: list[Any] = [pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath, pathlib.PureWindowsPath]
#: LightningModules that moved to another module path, as older checkpoints name them
MOVED_CLASSES = {"apps.sashimi.classifier.SpeechClassifier": "apps.speech.module.SpeechClassifier",
                 "apps.sashimi.generator.WaveformGenerator": "apps.sashimi.module.WaveformGenerator"}
#: the older spellings of layer options, folded into ``layer`` when the module no longer takes them
LEGACY_LAYER_KEYS = ("layer_kwargs", "layer_options", "d_state", "bidirectional")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``, read once with ``weights_only=True`` and :data:`SAFE_GLOBALS`.

    Raises:
        UserError: the file is missing, empty, not a PyTorch checkpoint (text, truncated), or needs a
            type outside the allow-list to load; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes); use another checkpoint (e.g. last.ckpt)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = found.group(1) if found else "a Python object"
        raise UserError(f"checkpoint {path} holds {what}, which is not an allowed type; refused without unpickling "
                        f"it (loading it could run code)") from None
    except Exception as e:  # noqa: BLE001 -- torch raises several types for a text, truncated or foreign file
        raise UserError(f"cannot read checkpoint {path}: not a complete PyTorch checkpoint "
                        f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'})"
                        ) from None
    if not isinstance(blob, dict):
        raise UserError(f"checkpoint {path} holds a {type(blob).__name__}, not a checkpoint dict")
    return blob


def read_model_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The one resolver behind every ``--ckpt``: a Lightning ``.ckpt`` file (:func:`read_checkpoint`) or a
    save_pretrained folder (:func:`apps.common.pretrained.read_pretrained`: config.json + model.safetensors,
    no pickle), as a checkpoint dict (``state_dict``, ``hyper_parameters``, ``datamodule_hyper_parameters``).
    """
    from apps.common.pretrained import is_pretrained_dir, read_pretrained

    if is_pretrained_dir(path):
        return read_pretrained(path, map_location=map_location)
    return read_checkpoint(path, map_location=map_location)


def module_class(hparams: dict[str, Any], default: type | None = None) -> type:
    """The LightningModule class a checkpoint's hyper-parameters name (``_class_path``), else ``default``."""
    class_path = hparams.get("_class_path")
    class_path = MOVED_CLASSES.get(class_path, class_path)
    if class_path:
        module, _, name = str(class_path).rpartition(".")
        if module.startswith("apps."):
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                raise UserError(f"the checkpoint holds a {class_path}, which this version of ssm-suite does not "
                                f"have") from None
    if default is None:
        raise UserError("the checkpoint does not say which model it holds")
    return default


def upgrade_hparams(cls: type, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` with older spellings mapped onto ``cls``'s parameters ``layer`` and ``optim`` (a new dict).

    Only keys that ``cls.__init__`` no longer takes are moved, so current checkpoints pass unchanged.  A class
    with app-specific older spellings maps them first in its static ``legacy_hparams(hparams) -> hparams``.
    """
    params = inspect.signature(cls.__init__).parameters
    out = dict(hparams)
    if hasattr(cls, "legacy_hparams"):
        out = cls.legacy_hparams(out)
    if "layer" in params:
        moved = {k: out.pop(k) for k in LEGACY_LAYER_KEYS if k in out and k not in params}
        option_maps = [moved.pop(k, None) for k in ("layer_kwargs", "layer_options")]
        layer = out.get("layer")
        if moved or any(option_maps) or isinstance(layer, str):
            out["layer"] = legacy_layer_spec(layer, *option_maps, **moved)
    if "optim" in params:
        moved = {k: out.pop(k) for k in OPTIM_FIELDS if k in out and k not in params}
        if moved:
            out["optim"] = {**moved, **(out.get("optim") or {})}
    return out


def options_it_lacks(cls: type, hparams: dict[str, Any]) -> list[str]:
    """The keys of ``hparams`` (LightningCLI's ``_...`` bookkeeping aside) that ``cls.__init__`` does not take."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    return [k for k in hparams if not str(k).startswith("_") and k not in params]


def app_that_wrote(blob: dict[str, Any], other_than: str) -> str | None:
    """The one app other than ``other_than`` whose LightningModule (and LightningDataModule) take every saved
    hyper-parameter of the checkpoint ``blob``, or None (no app, or several, fit).  Imports every app: for
    messages about a checkpoint that does not fit, not for the normal path."""
    from apps.common.cli import app_names, load_app

    hparams = dict(blob.get("hyper_parameters") or {})
    data = dict(blob.get("datamodule_hyper_parameters") or {})
    found = []
    for name in app_names():
        if name == other_than:
            continue
        try:
            mod = load_app(name)
        except Exception:  # noqa: BLE001 -- an app whose extra is missing cannot be the one
            continue
        module, datamodule = getattr(mod, "MODULE", None), getattr(mod, "DATAMODULE", None)
        if module is None or options_it_lacks(module, upgrade_hparams(module, hparams)):
            continue
        if data and (datamodule is None or options_it_lacks(datamodule, data)):
            continue
        found.append(name)
    return found[0] if len(found) == 1 else None


def _pass_instead(app: str, writer: str) -> str:
    """The fix for a checkpoint of app ``writer`` given to app ``app``."""
    return f"pass a checkpoint of `ssm {app} fit`, or run `ssm {writer}` on this one"


def foreign_checkpoint(path: str | os.PathLike, blob: dict[str, Any], cls: type) -> str | None:
    """One line for a checkpoint whose hyper-parameters name options ``cls`` does not take: which app wrote it
    when one app's model takes them all, else the options and the likely cause; None when ``cls`` takes them."""
    from apps.common.pretrained import app_of

    hparams = upgrade_hparams(cls, dict(blob.get("hyper_parameters") or {}))
    lacking = options_it_lacks(cls, hparams)
    if not lacking:
        return None
    app = app_of(cls)
    writer = app_that_wrote(blob, app)
    if writer:
        return (f"checkpoint {path} was written by `ssm {writer}`, not `ssm {app}` (its model options "
                f"{', '.join(map(repr, lacking[:3]))} are {writer}'s); {_pass_instead(app, writer)}")
    return (f"checkpoint {path}: its hyper-parameters name {', '.join(map(repr, lacking[:3]))}, which {cls.__name__} "
            f"(`ssm {app}`) does not take: it was saved by another app or another version of ssm-suite; pass a "
            f"checkpoint of `ssm {app} fit`")


def load_module(path: str | os.PathLike, cls: type, check: Callable[[dict[str, Any]], str | None] | None = None,
                kind: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The LightningModule saved at ``path`` (eval mode, CPU) and the checkpoint dict, from one read.

    ``path`` is a Lightning ``.ckpt`` or a save_pretrained folder (:func:`read_model_file`).

    ``cls`` is the expected class (a subclass named in the checkpoint is used instead); ``check``
    returns a reason when the checkpoint holds another model; ``kind`` names the model in messages
    (``a Speech Commands classifier``; default ``a <class name>``).
    Raises:
        UserError: unreadable file (see :func:`read_checkpoint`), not a fit checkpoint of ``cls``, hyper-parameters
            that do not build it (an option this version lacks), or weights that do not fit the model they describe.
    """
    from apps.common.pretrained import CONFIG_NAME, WEIGHTS_NAME, app_of

    blob = read_model_file(path)
    kind = kind or "a " + cls.__name__
    folder = "pretrained_config" in blob
    app = app_of(cls)
    if folder:  # a save_pretrained folder: the messages name its files
        what = f"{Path(path) / CONFIG_NAME} does not describe {kind}"
        fix = f"pass a folder written by `ssm {app} export-weights` (or a checkpoint of `ssm {app} fit`)"
    else:
        what = f"{path} is not {kind} checkpoint (from `ssm <app> fit`)"
        fix = ""
    if "state_dict" not in blob or not isinstance(blob.get("hyper_parameters"), dict):
        raise UserError(what)
    reason = check(blob) if check else None
    if reason:
        raise UserError(f"{what}: {reason}" + (f"; {fix}" if fix else ""))
    hparams = dict(blob["hyper_parameters"])
    klass = module_class(hparams, cls)
    if not issubclass(klass, cls):
        if folder:
            raise UserError(f"{what}: it holds a {app_of(klass)} model ({klass.__name__}); {fix}")
        raise UserError(f"{what}: it holds {klass.__name__}")
    hparams = {k: v for k, v in upgrade_hparams(klass, hparams).items() if not k.startswith("_")}
    try:
        module = klass(**hparams)
    except (TypeError, ValueError) as e:
        if folder:
            raise UserError(f"{what}: its init_args do not build the model ({e}); {fix}") from None
        writer = app_that_wrote(blob, app) if options_it_lacks(klass, hparams) else None
        if writer:
            raise UserError(f"{what}: it was written by `ssm {writer}`; {_pass_instead(app, writer)}") from None
        # e.g. an option of a newer or locally changed ssm-suite that this version does not have
        raise UserError(f"{path}: its hyper-parameters do not build {klass.__name__} ({e}): it was saved by another "
                        f"version of ssm-suite; load it with that version, or remove the unknown option from the "
                        f"checkpoint's hyper_parameters") from None
    module.on_load_checkpoint(blob)
    try:
        module.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        lines = str(e).splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0]).strip()  # the first mismatch
        if folder:
            raise UserError(f"{Path(path) / WEIGHTS_NAME}: its weights do not fit the model {CONFIG_NAME} describes "
                            f"({detail}); the two files come from different models: {fix}") from None
        raise UserError(f"{what}: its weights do not fit the model ({str(e).splitlines()[0]})") from None
    return module.eval(), blob


def datamodule_options(blob: dict[str, Any]) -> dict[str, Any]:
    """The data options saved with a fit checkpoint (LightningCLI's bookkeeping keys left out)."""
    return {k: v for k, v in (blob.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
