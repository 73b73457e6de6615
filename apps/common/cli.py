"""The ``ssm`` command: ``ssm <app> fit|validate|test|predict -c RECIPE`` and ``ssm <app> <verb>``.

Lightning verbs run LightningCLI on the app's LightningModule and LightningDataModule;
other verbs are the app's own (``prepare``, ``generate``, ...).  A user mistake prints one
line and exits with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from apps.common.errors import USER_ERROR_EXIT, UserError

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
#: the pip extra of the shared plumbing (Lightning, the CLI, plots); each app names its own in EXTRA
BASE_EXTRA = "apps"


def lazy_verb(module: str, name: str) -> Callable[[list[str]], None]:
    """A verb that imports ``module`` only when run (so ``ssm <app> --help`` stays fast) and calls its ``name``."""

    def run(argv: list[str]) -> None:
        getattr(importlib.import_module(module), name)(argv)

    return run


def _int_at_least(text: str, least: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type`` of a count or size option (``--batch-size``, ...): an integer >= 1, else argparse's one line
    naming the option, exit 2."""
    return _int_at_least(text, 1)


def seed_int(text: str) -> int:
    """argparse ``type`` of a ``--seed``: an integer >= 0 (numpy's generators take no negative seed), else
    argparse's one line naming the option, exit 2."""
    return _int_at_least(text, 0)


def app_names() -> list[str]:
    """Every app package under ``apps/`` (a folder with a ``cli.py``), sorted; nothing is imported."""
    import apps

    return sorted(
        info.name for info in pkgutil.iter_modules(apps.__path__)
        if info.ispkg and info.name != "common" and (Path(info.module_finder.path) / info.name / "cli.py").is_file()
    )


def app_package(name: str) -> ModuleType:
    """The app's package, whose ``__init__`` declares DESCRIPTION and EXTRA and imports nothing heavy."""
    return importlib.import_module(f"apps.{name}")


def load_app(name: str) -> ModuleType:
    """The app's ``cli`` module (MODULE, DATAMODULE, VERBS, ...); a missing dependency becomes a UserError."""
    with missing_extra(name):
        return importlib.import_module(f"apps.{name}.cli")


@contextmanager
def missing_extra(app: str) -> Iterator[None]:
    """Turn a ModuleNotFoundError for a third-party package into one line naming the extra to install."""
    try:
        yield
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if not top or top in ("apps", "ssmcore"):
            raise
        extra = getattr(app_package(app), "EXTRA", BASE_EXTRA)
        raise UserError(f"`ssm {app}` needs the Python package {top!r}, part of the [{extra}] extra: "
                        f"pip install 'ssm-suite[{extra}]' (or 'ssm-suite[all]')") from e


def _usage(names: list[str]) -> str:
    lines = [
        "usage: ssm <app> <verb> [options] [--debug]",
        "       ssm --version",
        "",
        "Structured state-space models: one layer library, several applications.",
        "",
        "apps:",
    ]
    lines += [f"  {name:<10} {getattr(app_package(name), 'DESCRIPTION', '')}" for name in names]
    lines += ["", "Run `ssm <app> --help` for an app's verbs, `ssm <app> fit --help` for its options."]
    return "\n".join(lines)


def _app_usage(name: str, mod: ModuleType) -> str:
    description = getattr(app_package(name), "DESCRIPTION", "")
    lines = [f"usage: ssm {name} <verb> [options]", "", description, "", "verbs:"]
    if getattr(mod, "MODULE", None) is not None:
        lines += [
            f"  {'fit':<16} train from a recipe: ssm {name} fit -c recipes/{name}/<recipe>.yaml",
            f"  {'validate':<16} evaluate a checkpoint on the validation split (--ckpt_path)",
            f"  {'test':<16} evaluate a checkpoint on the test split (--ckpt_path)",
            f"  {'predict':<16} run a checkpoint on the predict split (--ckpt_path)",
        ]
    for verb, (_, help_text) in getattr(mod, "VERBS", {}).items():
        lines.append(f"  {verb:<16} {help_text}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssm`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    names = app_names()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(names))
        return 0
    if argv[0] in ("-V", "--version"):
        from ssmcore._version import __version__

        print(f"ssm-suite {__version__}")
        return 0
    name = argv[0]
    try:
        if name not in names:
            raise UserError(f"unknown app {name!r}; choose one of {', '.join(names)} (see `ssm --help`)")
        mod = load_app(name)
        if len(argv) == 1 or argv[1] in ("-h", "--help"):
            print(_app_usage(name, mod))
            return 0
        verb, rest = argv[1], argv[2:]
        with missing_extra(name):
            if verb in LIGHTNING_VERBS and getattr(mod, "MODULE", None) is not None:
                from apps.common.lightning import run_lightning

                run_lightning(name, mod, verb, rest)
            elif verb in getattr(mod, "VERBS", {}):
                mod.VERBS[verb][0](rest)
            else:
                raise UserError(f"unknown verb {verb!r} for app {name}; see `ssm {name} --help`")
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"ssm {' '.join(argv[:2])}: interrupted (files are written whole or not at all)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- user errors become one line, everything else a traceback
        if debug or not _is_user_error(e):
            raise
        from apps.common.config_checks import one_line

        where = " ".join(argv[:2])
        print(f"ssm {where}: error: {one_line(str(e)) or type(e).__name__}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


def _is_user_error(e: Exception) -> bool:
    if isinstance(e, (UserError, ValueError, FileNotFoundError)):
        return True
    if type(e).__name__ == "MisconfigurationException":  # Lightning's word for a bad trainer option
        return True
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
        return True  # a full disk or a folder we may not write: the message names the file
    try:
        from jsonargparse import ArgumentError
    except ModuleNotFoundError:  # the core install, without the [apps] extra
        return False
    return isinstance(e, ArgumentError)


if __name__ == "__main__":
    sys.exit(main())
