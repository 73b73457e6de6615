"""The ``--device`` option of the apps' own verbs: checked before any work, as one line."""

from __future__ import annotations

import torch

from apps.common.errors import UserError


def default_device() -> str:
    """``cuda`` when a CUDA GPU is usable, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(name: str, option: str = "--device") -> torch.device:
    """``name`` as a torch device, refused with one line when it is not a device or names a GPU this machine
    lacks (torch would raise only at the first tensor moved there, with a traceback)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{option} {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{option} {name}: this machine has no usable CUDA GPU (driver or device missing); "
                            f"use {option} cpu")
        if device.index is not None and device.index >= count:
            raise UserError(f"{option} {name}: this machine has {count} CUDA GPU{'s' if count > 1 else ''} "
                            f"(cuda:0{f' .. cuda:{count - 1}' if count > 1 else ''}); choose one of them")
    elif device.type != "cpu" and device.type != "mps":
        raise UserError(f"{option} {name}: only cpu and cuda (and mps) devices are supported")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{option} {name}: MPS is not available on this machine; use {option} cpu")
    return device
