"""A plain model format in the Hugging Face convention: a folder with ``config.json`` and ``model.safetensors``.

``config.json`` holds what rebuilds the model: the app, the LightningModule's class path and init arguments
(its hyper-parameters, JSON values only), the data options it was trained with, the few extra values the
module keeps in its checkpoints (``on_save_checkpoint``), and the ssm-suite version that wrote it.
``model.safetensors`` holds the state dict.  Reading it runs no pickle: JSON and safetensors only.

    module.save_pretrained("exported/sc10")                  # every app's LightningModule (TaskModule)
    module = SpeechClassifier.from_pretrained("exported/sc10")
    ssm speech export-weights --ckpt runs/speech/sc10_s4d/checkpoints/best.ckpt --out exported/sc10

Every loader that takes ``--ckpt`` reads either form through :func:`apps.common.checkpoint.read_model_file`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from apps.common.errors import UserError
from apps.common.io import atomic_dir

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: the ``format`` field of config.json, and the layout version this code writes and reads
FORMAT = "ssm-suite"
FORMAT_VERSION = 1


def app_of(cls: type) -> str:
    """The app a LightningModule class belongs to: ``apps.speech.module.SpeechClassifier`` -> ``speech``."""
    parts = cls.__module__.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "apps" else cls.__module__


def json_safe(value: Any, key: str = "") -> Any:
    """``value`` as plain JSON values (paths -> strings, tuples -> lists); anything else is a UserError."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(f"cannot save hyper-parameter {key!r} = {value} in {CONFIG_NAME}: not a finite number")
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise UserError(f"cannot save hyper-parameter {key!r} in {CONFIG_NAME}: a {type(value).__name__} is not a "
                    "JSON value; pass plain numbers, strings, lists and mappings to the model")


def _state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, each with its own storage (safetensors refuses shared ones)."""
    out, seen = {}, set()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        seen.add((tensor.untyped_storage().data_ptr(), tensor.storage_offset()))
        out[name] = tensor
    return out


def save_pretrained(module: torch.nn.Module, directory: str | os.PathLike,
                    datamodule: Mapping[str, Any] | None = None) -> Path:
    """Write ``module`` (a LightningModule with saved hyper-parameters) to ``directory`` and return it.

    The folder is built beside ``directory`` under a temporary name and renamed into place, so a crash
    leaves nothing half-written.  ``datamodule`` are the data options to keep with the model (what
    ``ssm <app> zero-shot`` reads from a checkpoint).

    Raises:
        UserError: ``directory`` exists and is not an empty folder (nothing is overwritten), or a
            hyper-parameter is not a JSON value.
    """
    from safetensors.torch import save_file

    from ssmcore._version import __version__

    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UserError(f"{directory} already exists and is not an empty folder; refusing to overwrite it: "
                        "choose a new --out folder (or remove that one yourself)")
    cls = type(module)
    hparams = {k: v for k, v in dict(getattr(module, "hparams", {}) or {}).items() if not str(k).startswith("_")}
    extras: dict[str, Any] = {}
    if hasattr(module, "on_save_checkpoint"):
        module.on_save_checkpoint(extras)  # the values a module keeps beside its state (SaShiMi's waveform)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "app": app_of(cls),
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "ssm_suite_version": __version__,
        "init_args": json_safe(hparams),
        "datamodule": json_safe(dict(datamodule or {})),
        "checkpoint_extras": json_safe(extras),
    }
    with atomic_dir(directory) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(_state_tensors(module), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def is_pretrained_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder (the save_pretrained form) rather than a checkpoint file."""
    return Path(path).is_dir()


def read_pretrained(directory: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A save_pretrained folder as a checkpoint-like dict (``state_dict``, ``hyper_parameters`` with
    ``_class_path``, ``datamodule_hyper_parameters``, the module's extras, ``pretrained_config``); no pickle.

    Raises:
        UserError: ``config.json`` or ``model.safetensors`` is missing or unreadable; the message names the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    fix = "export the model again with `ssm <app> export-weights --ckpt CKPT --out DIR`"
    if not config_path.is_file():
        raise UserError(f"{config_path} is missing: {directory} is not a save_pretrained folder (config.json + "
                        f"model.safetensors); pass a Lightning .ckpt or {fix}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{config_path} is not readable JSON ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("init_args"), dict):
        raise UserError(f"{config_path} is not an ssm-suite model config (no format: {FORMAT!r} and init_args); {fix}")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{config_path} has format_version {config['format_version']}, newer than this ssm-suite "
                        f"reads ({FORMAT_VERSION}); upgrade ssm-suite (pip install -U ssm-suite)")
    if not weights_path.is_file():
        raise UserError(f"{weights_path} is missing: the folder holds a config but no weights; {fix}")
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise UserError(f"{weights_path} is not a readable safetensors file ({str(e).strip() or type(e).__name__}); "
                        f"{fix}") from None
    blob: dict[str, Any] = dict(config.get("checkpoint_extras") or {})
    blob.update({
        "state_dict": state,
        "hyper_parameters": {**config["init_args"], "_class_path": config.get("class_path")},
        "datamodule_hyper_parameters": dict(config.get("datamodule") or {}),
        "pretrained_config": config,
    })
    return blob


def from_pretrained(directory: str | os.PathLike, cls: type | None = None) -> Any:
    """The model saved by :func:`save_pretrained` in ``directory`` (eval mode, CPU).

    ``cls`` is the class expected (default: the one ``config.json`` names, within ``apps``); a folder of
    another app's model is refused with one line.
    """
    from apps.common.checkpoint import load_module, module_class

    if cls is None:
        cls = module_class(read_pretrained(directory)["hyper_parameters"])
    module, _ = load_module(directory, cls)
    return module


class PretrainedMixin:
    """``save_pretrained(dir)`` / ``from_pretrained(dir)`` on a LightningModule (the Hugging Face pair)."""

    def save_pretrained(self, directory: str | os.PathLike, datamodule: Mapping[str, Any] | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (see :func:`save_pretrained`)."""
        if datamodule is None:
            trainer = getattr(self, "_trainer", None)
            dm = getattr(trainer, "datamodule", None) if trainer is not None else None
            hp = dict(getattr(dm, "hparams", {}) or {}) if dm is not None else {}
            datamodule = {k: v for k, v in hp.items() if not str(k).startswith("_")}
        return save_pretrained(self, directory, datamodule=datamodule)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> Any:
        """The model saved in ``directory`` by :meth:`save_pretrained` (eval mode, CPU); no pickle runs."""
        return from_pretrained(directory, cls)


def export_weights(app: str, argv: list[str]) -> Path:
    """``ssm <app> export-weights --ckpt CKPT --out DIR``: a fit checkpoint as a save_pretrained folder."""
    from apps.common.checkpoint import datamodule_options, load_module
    from apps.common.cli import load_app

    p = argparse.ArgumentParser(prog=f"ssm {app} export-weights",
                                description="Write a checkpoint's model as DIR/config.json + DIR/model.safetensors "
                                            "(loadable without pickle; every --ckpt option accepts DIR).")
    p.add_argument("--ckpt", required=True, help=f"a checkpoint of `ssm {app} fit` (or a save_pretrained folder)")
    p.add_argument("--out", required=True, help="a new (or empty) folder to write")
    args = p.parse_args(argv)
    cls = load_app(app).MODULE
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before reading the checkpoint
        raise UserError(f"{out} already exists and is not an empty folder; refusing to overwrite it: "
                        "choose a new --out folder (or remove that one yourself)")
    module, blob = load_module(args.ckpt, cls, kind=f"a {cls.__name__} ({app})")
    save_pretrained(module, out, datamodule=datamodule_options(blob))
    print(f"wrote {out / CONFIG_NAME}")
    print(f"wrote {out / WEIGHTS_NAME}")
    return out


def export_weights_verb(app: str) -> tuple[Callable[[list[str]], None], str]:
    """The ``export-weights`` entry of an app's VERBS table."""

    def run(argv: list[str]) -> None:
        export_weights(app, argv)

    return run, (f"write a checkpoint as config.json + model.safetensors (no pickle to load): ssm {app} "
                 "export-weights --ckpt CKPT --out DIR; every --ckpt accepts DIR")
