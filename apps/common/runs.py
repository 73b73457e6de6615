"""Run folders: a new ``fit`` never writes into an earlier run.

``runs/<app>/<recipe>/`` is the first run of a recipe; a second ``fit`` of the same recipe goes
to ``runs/<app>/<recipe>-v2/`` (then ``-v3``, ...) once the first has written a checkpoint.  Only ``--ckpt_path`` resumes into an
existing run: the run that holds the checkpoint.  A folder named with
``--trainer.default_root_dir`` is used as given, and refused if it already holds a run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from apps.common.errors import UserError

#: ``--ckpt_path`` values that Lightning resolves itself rather than reading a file
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def runs_root() -> Path:
    """Where runs go: ``$SSM_RUNS`` or ``runs``."""
    return Path(os.environ.get("SSM_RUNS", "runs"))


def holds_a_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run: a checkpoint under ``checkpoints/``.

    A folder left by a fit that failed before its first checkpoint (a config and empty logs) is
    reused, so that fixing a recipe and running again does not pile up empty versions.
    """
    return (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("*.ckpt"))


def run_of_checkpoint(ckpt_path: str | Path) -> Path | None:
    """The run folder of ``<run>/checkpoints/<name>.ckpt``, or None for a checkpoint kept elsewhere."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def beside_checkpoint(ckpt: str | Path, name: str) -> Path:
    """The default output folder ``name`` of a verb that reads ``ckpt``: ``<run>/<name>`` for a checkpoint in a
    run's ``checkpoints/`` folder, else ``<name>`` beside the checkpoint file or ``save_pretrained`` folder
    (never two levels above a checkpoint kept elsewhere)."""
    path = Path(ckpt).resolve()
    return (run_of_checkpoint(path) or path.parent) / name


def next_free(folder: Path, taken: Callable[[Path], bool] = holds_a_run) -> Path:
    """``folder`` if it is not ``taken`` (by default: holds no run yet), else the first ``folder-vN`` (N >= 2) that
    is not: a verb's default output never goes over an earlier one's (runs, samples, study tables)."""
    if not taken(folder):
        return folder
    n = 2
    while taken(folder.with_name(f"{folder.name}-v{n}")):
        n += 1
    return folder.with_name(f"{folder.name}-v{n}")


def fit_run_dir(default: Path, requested: Path, ckpt_path: str | None) -> Path:
    """The folder a ``fit`` writes into.

    Args:
        default: ``runs/<app>/<recipe>``.
        requested: ``--trainer.default_root_dir`` (equal to ``default`` when not given).
        ckpt_path: ``--ckpt_path``, when resuming.
    """
    explicit = Path(requested) != Path(default)
    if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES:
        if explicit:
            return Path(requested)
        return run_of_checkpoint(ckpt_path) or next_free(Path(default))
    if explicit:
        if holds_a_run(Path(requested)):
            raise UserError(f"--trainer.default_root_dir {requested} already holds a run; choose a new folder, "
                            f"or resume it with --ckpt_path {Path(requested) / 'checkpoints' / 'last.ckpt'}")
        return Path(requested)
    chosen = next_free(Path(default))
    if chosen != Path(default):
        print(f"note: {default} holds an earlier run, kept as it is; this run writes under {chosen}", flush=True)
    return chosen
