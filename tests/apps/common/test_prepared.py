"""``prepare`` never deletes what it did not write, and never leaves a half-built dataset in place."""

from __future__ import annotations

import json
import os
import stat

import pytest

from apps.common.cli import main
from apps.common.errors import UserError
from apps.common.prepared import MARKER, already_prepared, building


def _tree(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(folder) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def foreign(tmp_path):
    """A folder of the user's, with a file in a subfolder."""
    folder = tmp_path / "mine"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "thesis.txt").write_text("four years of work")
    return folder


@pytest.mark.parametrize("argv", [
    ["smoke", "prepare", "--sizes", "4,2,2"],
    ["smoke", "prepare", "--sizes", "4,2,2", "--force"],
    ["sashimi", "prepare", "speech-commands", "--words", "yes", "--per-word", "3"],
    ["sashimi", "prepare", "piano", "--minutes", "0.1", "--force"],
    ["s4nd", "prepare", "mnist", "--force"],
    ["sssd", "prepare", "eeg", "--force"],
    ["vis4mer", "prepare", "moving-mnist", "--tiny", "--force"],
])
def test_a_foreign_folder_is_refused_and_kept(foreign, capsys, argv):
    before = _tree(foreign)
    assert main([*argv, "--out", str(foreign)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(foreign) in err[0] and "not written by `ssm ... prepare`" in err[0]
    assert _tree(foreign) == before and _siblings(foreign) == []


def test_prepare_builds_keeps_and_rebuilds_only_its_own_folder(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["smoke", "prepare", "--out", str(out), "--sizes", "4,2,2"]) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["command"] == "ssm smoke prepare" and sorted(marker["files"]) == ["test.pt", "train.pt", "val.pt"]
    first = (out / "train.pt").read_bytes()
    capsys.readouterr()
    assert main(["smoke", "prepare", "--out", str(out), "--sizes", "4,2,2"]) == 0  # the same: kept
    assert "kept" in capsys.readouterr().out and (out / "train.pt").read_bytes() == first
    assert main(["smoke", "prepare", "--out", str(out), "--sizes", "8,2,2", "--seed", "3", "--force"]) == 0
    assert (out / "train.pt").read_bytes() != first and _siblings(out) == []
    # a file the user put there since: --force refuses rather than delete it
    (out / "my_notes.txt").write_text("keep me")
    assert main(["smoke", "prepare", "--out", str(out), "--sizes", "4,2,2", "--force"]) == 2
    assert "my_notes.txt" in capsys.readouterr().err and (out / "my_notes.txt").read_text() == "keep me"
    # another app's prepare does not take over the folder
    (out / "my_notes.txt").unlink()
    assert main(["sssd", "prepare", "eeg", "--out", str(out), "--force"]) == 2
    assert "made by `ssm smoke prepare`" in capsys.readouterr().err


def test_a_prepared_folder_has_the_usual_permissions(tmp_path):
    """The dataset folder is built in a temporary folder (mode 0700); the renamed folder follows the umask, so a
    dataset prepared for a group is readable by it."""
    out = tmp_path / "shared"
    old = os.umask(0o022)
    try:
        assert main(["smoke", "prepare", "--out", str(out), "--sizes", "4,2,2"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_an_empty_folder_is_used(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["smoke", "prepare", "--out", str(out), "--sizes", "4,2,2"]) == 0
    assert (out / "val.pt").is_file()


@pytest.mark.parametrize("error", [RuntimeError("disk died"), KeyboardInterrupt()])
def test_a_failed_rebuild_leaves_the_old_data_as_it_was(tmp_path, error):
    out = tmp_path / "set"
    assert not already_prepared(out, "ssm test prepare", {"n": 1}, force=False)
    with building(out, "ssm test prepare", {"n": 1}) as tmp:
        (tmp / "a.txt").write_text("old")
    before = _tree(out)
    assert not already_prepared(out, "ssm test prepare", {"n": 2}, force=True)
    with pytest.raises(type(error)), building(out, "ssm test prepare", {"n": 2}) as tmp:
        (tmp / "a.txt").write_text("half-written new data")
        raise error
    assert _tree(out) == before and _siblings(out) == []


def test_rebuild_deletes_exactly_the_manifest(tmp_path):
    out = tmp_path / "set"
    with building(out, "ssm test prepare", {}) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("1")
        (tmp / "b.txt").write_text("2")
    assert not already_prepared(out, "ssm test prepare", {}, force=True)
    with building(out, "ssm test prepare", {}) as tmp:
        (tmp / "c.txt").write_text("3")
    assert _tree(out).keys() == {"c.txt", MARKER} and _siblings(out) == []


def test_an_unwritable_destination_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    calls = []
    with pytest.raises(UserError, match="not a writable folder"), building(blocker / "set", "ssm test prepare", {}):
        calls.append("worked")
    assert calls == []
    with pytest.raises(UserError, match="is a file"):
        already_prepared(blocker, "ssm test prepare", {}, force=False)
