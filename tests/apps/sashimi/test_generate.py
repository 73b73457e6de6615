"""``ssm sashimi fit`` + ``generate`` end to end on a tiny folder of tones: N WAVs of the right length
and rate, a sorted log-likelihood CSV, a spectrogram, and one-line errors for the three bad inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from apps.common.audio import save_wav
from apps.common.cli import main
from apps.sashimi.sampling import sample_logits

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "recipes" / "sashimi" / "piano_tiny.yaml")


def _tone(seconds: float, rate: int, freq: float) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return 0.4 * torch.sin(2 * torch.pi * freq * t)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    for split, n in {"train": 3, "val": 1, "test": 1}.items():
        for i in range(n):
            save_wav(root / split / f"{i}.wav", _tone(0.1, 16000, 300 + 100 * i), 16000)
    runs = tmp_path_factory.mktemp("runs")
    code = main(["sashimi", "fit", "-c", TINY, "--data.root", str(root), "--data.segment_length", "256",
                 "--model.d_model", "8", "--model.layer.d_state", "8", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "2", "--trainer.log_every_n_steps", "1", "--model.sample_every_n_epochs", "1",
                 "--model.sample_seconds", "0.002", "--trainer.default_root_dir", str(runs)])
    assert code == 0
    metrics = list(csv.DictReader(open(next((runs / "csv").rglob("metrics.csv")))))
    assert any(row.get("val/nll") for row in metrics) and any(row.get("train/nll_step") for row in metrics)
    assert list((runs / "tensorboard").rglob("events.*"))  # the samples and curves
    return runs / "checkpoints" / "last.ckpt"


def test_generate_writes_n_wavs_of_the_right_length_and_rate(checkpoint, tmp_path, capsys):
    out = tmp_path / "samples"
    real = tmp_path / "real.wav"
    save_wav(real, _tone(0.05, 16000, 440), 16000)
    assert main(["sashimi", "generate", "--ckpt", str(checkpoint), "--n", "3", "--seconds", "0.01", "--batch", "2",
                 "--seed", "1", "--out", str(out), "--compare", str(real), "--top-p", "0.9"]) == 0
    wavs = sorted(out.glob("sample_*.wav"))
    assert len(wavs) == 3
    for path in wavs:
        info = soundfile.info(str(path))
        assert info.samplerate == 16000 and info.frames == 160 and info.channels == 1
    rows = list(csv.DictReader(open(out / "loglik.csv")))
    assert sorted(r["file"] for r in rows) == [p.name for p in wavs]
    ll = [float(r["loglik_nats"]) for r in rows]
    assert ll == sorted(ll, reverse=True) and all(v < 0 for v in ll)
    assert (out / "spectrogram.png").stat().st_size > 1000
    assert "samples/s" in capsys.readouterr().out


def test_default_samples_folder_is_beside_a_checkpoint_kept_outside_a_run(tmp_path):
    from apps.sashimi.generate import samples_folder

    run = tmp_path / "runs" / "sashimi" / "piano"
    assert samples_folder(None, str(run / "checkpoints" / "last.ckpt")) == run / "samples"
    kept = tmp_path / "downloads" / "piano.ckpt"  # not two levels up, in tmp_path itself
    assert samples_folder(None, str(kept)) == tmp_path / "downloads" / "samples"
    (tmp_path / "downloads" / "samples").mkdir(parents=True)  # an empty folder is used
    assert samples_folder(None, str(kept)) == tmp_path / "downloads" / "samples"


def test_a_second_generate_never_writes_over_the_first_ones_samples(checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(checkpoint.read_bytes())
    args = ["sashimi", "generate", "--ckpt", str(ckpt), "--n", "1", "--seconds", "0.005", "--batch", "1"]
    assert main([*args, "--seed", "1"]) == 0
    first = (run / "samples" / "sample_000.wav").read_bytes()
    assert main([*args, "--seed", "2"]) == 0
    assert (run / "samples" / "sample_000.wav").read_bytes() == first
    assert (run / "samples-v2" / "sample_000.wav").is_file() and str(run / "samples-v2") in capsys.readouterr().out


def test_a_prefix_is_kept_and_continued(checkpoint, tmp_path):
    prompt = tmp_path / "prompt.wav"
    save_wav(prompt, _tone(0.004, 16000, 500), 16000)  # 64 samples
    out = tmp_path / "cont"
    assert main(["sashimi", "generate", "--ckpt", str(checkpoint), "--n", "2", "--seconds", "0.006",
                 "--batch", "2", "--prefix", str(prompt), "--out", str(out)]) == 0
    a, rate = soundfile.read(str(out / "sample_000.wav"))
    b, _ = soundfile.read(str(out / "sample_001.wav"))
    assert rate == 16000 and len(a) == 96
    assert np.abs(a[:64] - b[:64]).max() < 1e-9  # both keep the (quantised) prompt
    assert np.abs(a[:64] - soundfile.read(str(prompt))[0]).max() < 0.02


def test_bad_inputs_are_one_line_errors(checkpoint, tmp_path, capsys):
    assert main(["sashimi", "generate", "--ckpt", str(tmp_path / "missing.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    slow = tmp_path / "8k.wav"
    save_wav(slow, _tone(0.01, 8000, 300), 8000)
    assert main(["sashimi", "generate", "--ckpt", str(checkpoint), "--prefix", str(slow), "--seconds", "0.1",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "8000 Hz" in err and "16000 Hz" in err and len(err.strip().splitlines()) == 1
    long = tmp_path / "long.wav"
    save_wav(long, _tone(0.2, 16000, 300), 16000)
    assert main(["sashimi", "generate", "--ckpt", str(checkpoint), "--prefix", str(long), "--seconds", "0.1",
                 "--out", str(tmp_path / "y")]) == 2
    assert "longer than the 1600 requested" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # --compare is read before generating, so a wrong path costs no generation and writes nothing
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio")
    for compare, needle in [(tmp_path / "missing.wav", "--compare: file not found"),
                            (not_audio, "--compare: cannot read audio file")]:
        assert main(["sashimi", "generate", "--ckpt", str(checkpoint), "--seconds", "0.01", "--compare", str(compare),
                     "--out", str(tmp_path / "z")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and str(compare) in err and len(err.splitlines()) == 1
        assert not (tmp_path / "z").exists()


def test_nucleus_sampling_keeps_the_top_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    drawn = sample_logits(logits, 1.0, 0.75, g)
    assert set(drawn.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.75; 2 and 3 are cut
    assert sample_logits(logits, 0.0, 1.0, g).eq(0).all()  # temperature 0 is greedy


def _int16(path: Path) -> np.ndarray:
    return soundfile.read(str(path), dtype="int16")[0]


def _stream_samples(data: bytes) -> np.ndarray:
    """The samples of a streaming WAV (sizes 0xFFFFFFFF), after checking its header."""
    import struct

    riff, size, wave, fmt, _, pcm, channels, rate, _, _, bits, tag, data_size = struct.unpack(
        "<4sI4s4sIHHIIHH4sI", data[:44])
    assert (riff, wave, fmt, tag) == (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert (pcm, channels, rate, bits, size, data_size) == (1, 1, 16000, 16, 0xFFFFFFFF, 0xFFFFFFFF)
    return np.frombuffer(data[44:], dtype="<i2")


def test_stream_pipes_one_wav_to_stdout_and_writes_the_same_files(checkpoint, tmp_path):
    """`generate --stream | player`: stdout carries every clip in order as one WAV stream (2,400 samples
    per clip: two native chunks), the text report goes to stderr, and the files hold the same samples
    as a run without --stream with the same seed."""
    import subprocess
    import sys

    args = ["sashimi", "generate", "--ckpt", str(checkpoint), "--n", "3", "--seconds", "0.15", "--batch", "2",
            "--seed", "3"]
    code = "import sys; from apps.common.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", code, *args, "--stream", "--out", str(tmp_path / "s")],
                         cwd=ROOT, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert b"generated 3 x 2400 samples" in run.stderr and b"generated" not in run.stdout
    streamed = _stream_samples(run.stdout)
    files = [_int16(tmp_path / "s" / f"sample_{i:03d}.wav") for i in range(3)]
    assert np.array_equal(streamed, np.concatenate(files))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["loglik.csv"] + [f"sample_00{i}.wav" for i in range(3)]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    for i in range(3):  # the same clips as without --stream (soundfile's rounding: at most 1 step apart)
        plain = _int16(tmp_path / "plain" / f"sample_{i:03d}.wav")
        assert np.abs(plain.astype(int) - files[i]).max() <= 1


def test_stream_plays_on_a_terminal_and_writes_files_when_stdout_is_a_file(checkpoint, tmp_path, monkeypatch, capsys):
    import io
    import sys

    bin_dir, heard = tmp_path / "bin", tmp_path / "heard.wav"
    bin_dir.mkdir()
    (bin_dir / "aplay").write_text(f"#!/bin/sh\ncat > {heard}\n")
    (bin_dir / "aplay").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    args = ["sashimi", "generate", "--ckpt", str(checkpoint), "--n", "2", "--seconds", "0.01", "--stream"]
    assert main([*args, "--out", str(tmp_path / "t")]) == 0
    assert "playing with aplay" in capsys.readouterr().err and "generated 2 x 160" in terminal.getvalue()
    files = [_int16(tmp_path / "t" / f"sample_{i:03d}.wav") for i in range(2)]
    assert np.array_equal(_stream_samples(heard.read_bytes()), np.concatenate(files))
    monkeypatch.undo()
    assert main([*args, "--out", str(tmp_path / "f")]) == 0  # captured stdout: no descriptor, like a file
    assert "generated 2 x 160" in capsys.readouterr().out
    assert len(list((tmp_path / "f").glob("sample_*.wav"))) == 2


def test_an_interrupted_stream_leaves_no_partial_files(tmp_path):
    from apps.sashimi.generate import ClipStream

    stream = ClipStream(tmp_path / "o", 2, 100, 16000, "mu-law", 8)
    clips = torch.randint(0, 256, (2, 100))
    stream(0, clips, 40)
    assert len(list((tmp_path / "o").iterdir())) == 2  # two temporary files, nothing final yet
    stream.close()
    assert list((tmp_path / "o").iterdir()) == []


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_approximate_weights_are_refused_off_the_native_step(checkpoint, tmp_path, capsys, weights):
    assert main(["sashimi", "generate", "--ckpt", str(checkpoint), "--n", "1", "--seconds", "0.01",
                 "--backend", "torch", "--weights", weights, "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert f"--weights {weights}" in err and "native" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()
    assert main(["sashimi", "generate", "--ckpt", str(checkpoint), "--n", "1", "--seconds", "0.01",
                 "--weights", weights, "--threads", "2", "--out", str(tmp_path / "b")]) == 0
    assert soundfile.info(str(tmp_path / "b" / "sample_000.wav")).frames == 160
