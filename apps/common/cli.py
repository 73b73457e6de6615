"""The ``ssm`` command: ``ssm <app> fit|validate|test|predict -c RECIPE`` and ``ssm <app> <verb>``.

Lightning verbs run LightningCLI on the app's LightningModule and LightningDataModule;
other verbs are the app's own (``prepare``, ``generate``, ...).  A user mistake prints one
line and exits with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from apps.common.errors import USER_ERROR_EXIT, UserError

#: app name -> module with DESCRIPTION, MODULE, DATAMODULE and VERBS
APPS: dict[str, str] = {
    "smoke": "apps.smoke.cli",
    "synthetic": "apps.synthetic.cli",
    "sashimi": "apps.sashimi.cli",
    "vis4mer": "apps.vis4mer.cli",
    "s4nd": "apps.s4nd.cli",
    "sssd": "apps.sssd.cli",
}
LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


def available_apps() -> dict[str, ModuleType]:
    """The apps whose modules are installed, by name."""
    found = {}
    for name, module in APPS.items():
        try:
            found[name] = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
    return found


def _usage(apps: dict[str, ModuleType]) -> str:
    lines = [
        "usage: ssm <app> <verb> [options] [--debug]",
        "",
        "Structured state-space models: one layer library, several applications.",
        "",
        "apps:",
    ]
    lines += [f"  {name:<10} {getattr(mod, 'DESCRIPTION', '')}" for name, mod in apps.items()]
    lines += ["", "Run `ssm <app> --help` for an app's verbs, `ssm <app> fit --help` for its options."]
    return "\n".join(lines)


def _app_usage(name: str, mod: ModuleType) -> str:
    lines = [f"usage: ssm {name} <verb> [options]", "", getattr(mod, "DESCRIPTION", ""), "", "verbs:"]
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
    apps = available_apps()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(apps))
        return 0
    name = argv[0]
    try:
        if name not in apps:
            raise UserError(f"unknown app {name!r}; choose one of {', '.join(apps)} (see `ssm --help`)")
        mod = apps[name]
        if len(argv) == 1 or argv[1] in ("-h", "--help"):
            print(_app_usage(name, mod))
            return 0
        verb, rest = argv[1], argv[2:]
        if verb in LIGHTNING_VERBS and getattr(mod, "MODULE", None) is not None:
            from apps.common.lightning import run_lightning

            run_lightning(name, mod, verb, rest)
        elif verb in getattr(mod, "VERBS", {}):
            mod.VERBS[verb][0](rest)
        else:
            raise UserError(f"unknown verb {verb!r} for app {name}; see `ssm {name} --help`")
    except Exception as e:  # noqa: BLE001 -- user errors become one line, everything else a traceback
        if debug or not _is_user_error(e):
            raise
        where = " ".join(argv[:2])
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"ssm {where}: error: {message}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


def _is_user_error(e: Exception) -> bool:
    from jsonargparse import ArgumentError

    return isinstance(e, (UserError, ArgumentError, ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
