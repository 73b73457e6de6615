"""Atomic writes: the file appears whole, with the usual permissions, and a failed write leaves nothing."""

import os

import pytest
import torch

from apps.common.io import atomic_torch_save, atomic_write, atomic_write_text


def test_text_is_written_with_umask_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    assert path.read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_torch_save_round_trip(tmp_path):
    obj = {"w": torch.arange(5.0)}
    path = atomic_torch_save(obj, tmp_path / "x.pt")
    assert torch.equal(torch.load(path)["w"], obj["w"])
