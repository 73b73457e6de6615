"""``--device`` of the apps' own verbs: a device this machine lacks is one line, before any work."""

from __future__ import annotations

import pytest
import torch

from apps.common.cli import main
from apps.common.devices import parse_device
from apps.common.errors import UserError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_parse_device(no_gpu, monkeypatch):
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match=r"--device 'gpu0' is not a device; use cpu, cuda or cuda:N"):
        parse_device("gpu0")
    with pytest.raises(UserError, match=r"--device cuda: this machine has no usable CUDA GPU .* use --device cpu"):
        parse_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UserError, match=r"--device cuda:2: this machine has 2 CUDA GPUs \(cuda:0 .. cuda:1\)"):
        parse_device("cuda:2")


@pytest.mark.parametrize("argv", [
    ["sashimi", "generate", "--ckpt", "{tmp}/missing.ckpt"],
    ["vis4mer", "extract-features", "--videos", "{tmp}", "--out", "{tmp}/cache"],
])
def test_verbs_refuse_a_missing_gpu_in_one_line(argv, no_gpu, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda: this machine has no usable CUDA GPU" in err
    assert not (tmp_path / "cache").exists()
