"""Checks on a resolved recipe before anything is built, so that a bad value is one clear line.

Every float must be finite, and sizes must be positive: ``d_*`` widths, ``n_*`` counts and
``*size`` / ``length`` / ``channels`` / ``vocab`` values (a negative ``d_model`` used to surface
as a tensor error deep inside the model).  Also the recipe file itself: a YAML syntax error is
reported with its file, line and column.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from apps.common.errors import UserError

#: integer keys that are sizes: must be >= 1 (``n_*`` counts may be 0)
_POSITIVE = re.compile(r"^(d_\w+|batch_size|\w*_size|size|length|channels|vocab|n_classes|num_classes)$")
_COUNT = re.compile(r"^n_\w+$")


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) or hasattr(value, "items") and not isinstance(value, (str, bytes)):
        for k, v in value.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, value


def check_values(config: Any, skip: tuple[str, ...] = ("trainer", "seed_everything", "ckpt_path")) -> None:
    """Raise a UserError naming the first key whose value is non-finite or a non-positive size."""
    for key, value in _leaves(config):
        if key.split(".")[0] in skip or isinstance(value, bool):
            continue
        name = re.sub(r"\[\d+\]$", "", key.rsplit(".", 1)[-1])
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key}: {value} is not a finite number")
        if isinstance(value, int) and _POSITIVE.match(name) and value < 1:
            raise UserError(f"{key}: a size must be at least 1, got {value}")
        if isinstance(value, int) and _COUNT.match(name) and value < 0:
            raise UserError(f"{key}: a count must be at least 0, got {value}")


def data_root() -> Path:
    """The data root: ``$SSM_DATA``, or ``data``."""
    return Path(os.environ.get("SSM_DATA") or "data")


def remap_data_paths(config: Any) -> list[str]:
    """Point recipe paths under ``data/`` at ``$SSM_DATA`` (a Namespace, changed in place); returns the keys.

    Recipes name their files under the default data root (``root: data/piano``); with
    ``SSM_DATA=/big/disk`` the same recipe reads ``/big/disk/piano``.
    """
    root = data_root()
    if root == Path("data"):
        return []
    changed = []
    for key, value in list(config.items()):
        if key.split(".")[0] in ("data", "model") and isinstance(value, str) and value.startswith("data/"):
            config[key] = str(root / value[len("data/"):])
            changed.append(key)
    return changed


def check_yaml(path: Path) -> None:
    """Raise a UserError ``FILE:LINE:COLUMN: problem`` when ``path`` is not valid YAML."""
    import yaml

    try:
        yaml.safe_load(Path(path).read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        context = f" ({e.context})" if e.context else ""
        raise UserError(f"{where}: YAML syntax error: {e.problem}{context}") from e
    except yaml.YAMLError as e:
        raise UserError(f"{path}: YAML error: {e}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text file ({e.reason}); a recipe is a YAML file") from e


def one_line(message: str, limit: int = 400) -> str:
    """A multi-line parser message as one readable line (``<class 'int'>`` -> ``int``).

    An error re-raised from a DataLoader worker carries the worker's traceback: its last line is the cause.
    """
    if "Original Traceback" in message:
        last = [line for line in message.strip().splitlines() if line.strip()][-1]
        message = re.sub(r"^[\w.]+(Error|Exception): ", "", last.strip())
    text = " ".join(part.strip() for part in message.strip().splitlines() if part.strip())
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
