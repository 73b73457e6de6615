"""The ``ssm`` entry point itself: app discovery, --help speed, --version, and missing extras."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.common.cli import app_names, main
from ssmcore import __version__

ROOT = Path(__file__).resolve().parents[3]


def run_ssm(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "apps.common.cli", *args], env=env, capture_output=True, text=True)


def test_every_app_folder_is_discovered():
    folders = sorted(p.parent.name for p in (ROOT / "apps").glob("*/cli.py") if p.parent.name != "common")
    assert app_names() == folders
    assert {"smoke", "synthetic", "sashimi", "vis4mer", "s4nd", "sssd"} <= set(folders)


def test_help_is_fast_and_imports_no_app():
    start = time.perf_counter()
    result = run_ssm("--help")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    for name in app_names():
        assert f"  {name} " in result.stdout
    assert elapsed < 1.5, f"ssm --help took {elapsed:.2f} s"
    probe = "import sys; from apps.common.cli import main; main(['--help']); print(sorted(m for m in sys.modules if m in ('torch', 'lightning')))"
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"  # neither torch nor Lightning is imported for --help


def test_version_is_single_sourced(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ssm-suite {__version__}"
    assert importlib.metadata.version("ssm-suite") == __version__


def test_a_verb_without_its_extra_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mujoco", None)  # `import mujoco` now raises ModuleNotFoundError
    code = main(["sssd", "prepare", "mujoco", "--n", "10", "--out", "unused"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "'mujoco'" in err[0] and "pip install 'ssm-suite[timeseries]'" in err[0]


def test_an_app_whose_cli_cannot_import_names_its_extra(monkeypatch, capsys):
    for name in [m for m in sys.modules if m.startswith("apps.s4nd.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "PIL", None)  # apps.s4nd.data imports PIL at the top
    assert main(["s4nd", "--help"]) == 2
    err = capsys.readouterr().err
    assert "'PIL'" in err and "pip install 'ssm-suite[images]'" in err


def test_unknown_app_is_one_line(capsys):
    assert main(["nope"]) == 2
    assert "unknown app 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["smoke", "synthetic", "sashimi", "vis4mer", "s4nd", "sssd"])
def test_each_app_declares_a_known_extra(name):
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    package = importlib.import_module(f"apps.{name}")
    assert package.EXTRA in extras and package.DESCRIPTION
