"""``torch.export`` of an app's inference model to a ``.pt2`` file (``ssm <app> export``).

The exported program runs without ssm-suite or Python model code (``torch.export.load(path).module()``),
and is what AOTInductor and other deployment tools take.  The file is written to a temporary name and
renamed; an existing file is never overwritten.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apps.common.errors import UserError
from apps.common.io import atomic_write, check_writable

#: the file an export writes inside ``--out``
PROGRAM_NAME = "model.pt2"


def export_program(model: nn.Module, example: tuple[Any, ...], dynamic_shapes: Any = None) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` (evaluation mode) on the ``example`` inputs."""
    model.eval()
    with torch.no_grad():
        return torch.export.export(model, example, dynamic_shapes=dynamic_shapes)


def save_program(program: torch.export.ExportedProgram, out_dir: str | Path) -> Path:
    """Write ``program`` to ``out_dir/model.pt2`` (temporary name, then rename); refuse an existing file."""
    target = Path(out_dir) / PROGRAM_NAME
    if target.exists():
        raise UserError(f"{target} already exists: export never overwrites; choose another --out or remove it")
    check_writable(target.parent, "--out folder")
    return atomic_write(target, lambda f: torch.export.save(program, f))


def export_parser(app: str, what: str) -> argparse.ArgumentParser:
    """The arguments every ``ssm <app> export`` verb takes: ``--ckpt`` and ``--out``."""
    parser = argparse.ArgumentParser(prog=f"ssm {app} export",
                                     description=f"torch.export {what} to OUT/{PROGRAM_NAME} (torch.export.load reads it)")
    parser.add_argument("--ckpt", required=True, help="a fit checkpoint (runs/.../checkpoints/best.ckpt)")
    parser.add_argument("--out", required=True, help=f"folder for {PROGRAM_NAME} (an existing file is not overwritten)")
    return parser


def run_export(build: Callable[[], tuple[nn.Module, tuple[Any, ...], Any]], out_dir: str | Path) -> Path:
    """Export the ``(model, example inputs, dynamic shapes)`` that ``build()`` returns, check it, save it, print the path."""
    target = Path(out_dir) / PROGRAM_NAME
    if target.exists():  # before the (slow) export
        raise UserError(f"{target} already exists: export never overwrites; choose another --out or remove it")
    model, example, dynamic_shapes = build()
    program = export_program(model, example, dynamic_shapes)
    with torch.no_grad():
        expected, got = model(*example), program.module()(*example)
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise RuntimeError("the exported program does not reproduce the model on the example input")
    path = save_program(program, out_dir)
    print(f"exported: {path}", flush=True)
    return path
