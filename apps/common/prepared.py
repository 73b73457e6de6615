"""Safe dataset folders for every ``prepare`` verb.

The rules (DESIGN.md, "Errors and bad input"), in one place:

- ``prepare`` refuses a non-empty ``--out`` that it did not create (one line, exit 2);
- with ``--force`` it replaces a folder it made, deleting only the files it wrote there
  (and refusing when other files were added since);
- it builds into a temporary sibling and renames it into place, so a failed or interrupted
  prepare leaves the old data as it was.

A folder made here carries :data:`MARKER`, a JSON file with the command, its arguments and
the list of files written; that manifest is what "its own files" means.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apps.common.errors import UserError
from apps.common.io import _umask, check_writable

#: the manifest file a prepared folder carries
MARKER = ".ssm-prepared.json"


def parse_sizes(text: str, option: str = "--sizes") -> list[int]:
    """``"train,val,test"`` split sizes as three positive ints; anything else is one UserError line naming ``option``."""
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) != 3 or min(sizes) < 1:
        raise UserError(f"{option} needs three positive comma-separated numbers (train,val,test), got {text!r}")
    return sizes


def read_marker(out: Path) -> dict[str, Any] | None:
    """The manifest of a folder that ``prepare`` made, or None (no folder, or not ours)."""
    path = Path(out) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), list) else None


def _foreign_files(out: Path, marker: dict[str, Any]) -> list[str]:
    own = set(marker["files"]) | {MARKER}
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and str(p.relative_to(out)) not in own)


def already_prepared(out: Path, command: str, args: dict[str, Any], force: bool) -> bool:
    """True when ``out`` already holds a dataset of this ``command`` and ``force`` is off: keep it.

    Made with other arguments, it is kept too, with a note saying which (``--force`` rebuilds it).
    Raises a UserError for a non-empty folder that ``prepare`` did not make, or made by another command.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    marker = read_marker(out)
    if marker is None:
        raise UserError(f"--out {out} is not empty and was not written by `ssm ... prepare`; "
                        "choose another --out (prepare never deletes files it did not write)")
    if marker.get("command") != command:
        raise UserError(f"--out {out} holds a dataset made by `{marker.get('command')}`; choose another --out")
    if force:
        foreign = _foreign_files(out, marker)
        if foreign:
            raise UserError(f"--force would replace {out}, which now also holds files prepare did not write "
                            f"({foreign[0]}{' and others' if len(foreign) > 1 else ''}); "
                            "move them away or choose another --out")
        return False
    if marker.get("args") == _jsonable(args):
        print(f"{out} already holds this dataset; kept (pass --force to rebuild it)")
    else:
        print(f"{out} already holds a dataset prepared with {marker.get('args')}; kept "
              f"(pass --force to rebuild it with {_jsonable(args)})")
    return True


def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(args, default=str))


@contextmanager
def building(out: Path, command: str, args: dict[str, Any]) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out`` to write the dataset into; on success it becomes ``out``.

    On an exception (or Ctrl-C) the temporary folder is removed and ``out`` is untouched.  An
    existing ``out`` is replaced only if it is empty or was made by ``prepare`` (call
    :func:`already_prepared` first); then only the files in its manifest are deleted.
    """
    out = Path(out)
    check_writable(out.parent, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the dataset gets the usual permissions
        yield tmp
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        marker = {"command": command, "args": _jsonable(args), "files": files}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder, nothing else
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
        return
    old_marker = read_marker(out)
    if old_marker is None:  # checked by already_prepared; never replace a foreign folder
        raise UserError(f"--out {out} was not written by `ssm ... prepare`; choose another --out")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    os.rename(tmp, out)
    remove_own_files(old, old_marker["files"] + [MARKER])


def remove_own_files(folder: Path, files: list[str]) -> None:
    """Delete the listed files under ``folder`` and the folders they leave empty; keep anything else."""
    for name in files:
        (folder / name).unlink(missing_ok=True)
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
