"""``ssm sashimi generate``: sample audio from a trained SaShiMi in recurrent mode.

The prefix (if any) goes through the model once in convolution mode with state passing, which
leaves every layer's recurrent state and every pooling buffer where stepping would have left
them; then the model steps one sample at a time at O(1) cost each (Goel, Gu et al. 2022, Sec. 3.3).
Writes ``sample_000.wav ...`` and ``loglik.csv`` (each sample's log-likelihood under the model,
best first), decoding with the checkpoint's quantisation (mu-law or linear).

With ``--stream`` the audio is written while it is generated (:class:`ClipStream`): each clip to its
WAV under a temporary name, renamed when complete, and all clips in order as one 16-bit WAV stream
to stdout when stdout is a pipe (``ssm sashimi generate --stream ... | aplay``), or to an audio
player (aplay, paplay, ffplay or sox's play) when it is a terminal; the text report then goes to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import torch
from torch import Tensor

from apps.common.audio import load_audio, save_wav
from apps.common.checkpoint import load_module
from apps.common.cli import seed_int
from apps.common.devices import default_device, parse_device
from apps.common.errors import UserError
from apps.common.io import _umask, check_writable  # the one umask helper
from apps.common.report import save_figure, write_csv
from apps.common.runs import beside_checkpoint, next_free
from apps.sashimi.module import WaveformGenerator
from apps.sashimi.sampling import sample
from apps.sashimi.stepper import FastStepper
from apps.sashimi.waveform import dequantize, quantize


def load_generator(path: str | Path, device: str = "cpu") -> WaveformGenerator:
    """Load a :class:`apps.sashimi.module.WaveformGenerator` checkpoint (eval mode), safely
    (:func:`apps.common.checkpoint.load_module`: ``weights_only=True``, older spellings upgraded)."""
    path = Path(path)
    if not path.exists():  # a .ckpt file or a save_pretrained folder
        raise UserError(f"checkpoint not found: {path}; train one with `ssm sashimi fit -c recipes/sashimi/"
                        "piano_tiny.yaml` (it writes runs/sashimi/piano_tiny/checkpoints/last.ckpt)")
    module, _ = load_module(path, WaveformGenerator, kind="a SaShiMi generator")
    return module.to(device).eval()


def load_prefix(path: str | Path, sample_rate: int, length: int, quantization: str, bits: int) -> Tensor:
    """Read the prompt WAV as tokens (P,); it must be at ``sample_rate`` and at most ``length`` samples."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--prefix: file not found: {path}")
    try:
        info = soundfile.info(str(path))
    except Exception as e:  # noqa: BLE001 -- soundfile raises several types for a bad file
        raise UserError(f"--prefix: cannot read audio file {path}: {e}") from e
    if info.samplerate != sample_rate:
        raise UserError(f"--prefix: {path} is at {info.samplerate} Hz but the model generates at {sample_rate} Hz; "
                        f"resample it first (e.g. sox {path.name} -r {sample_rate} out.wav)")
    wav, _ = load_audio(path)
    if wav.shape[0] > length:
        raise UserError(f"--prefix: {path} holds {wav.shape[0]} samples, longer than the {length} requested; "
                        "raise --seconds or cut the prompt")
    return quantize(wav, quantization, bits)


def load_compare(path: str | Path, sample_rate: int) -> Tensor:
    """The real clip of ``--compare`` (T,) at ``sample_rate``, read before any sample is generated."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--compare: file not found: {path} (a real clip to show beside the first sample)")
    try:
        return load_audio(path, sample_rate)[0]
    except UserError as e:
        raise UserError(f"--compare: {e}") from None


def spectrogram_png(path: str | Path, clips: dict[str, np.ndarray | Tensor], sample_rate: int) -> Path:
    """Side-by-side log spectrograms of ``clips`` (name -> waveform (T,)) saved to ``path`` as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(clips), figsize=(5 * len(clips), 3.6), squeeze=False)
    for ax, (name, wav) in zip(axes[0], clips.items(), strict=True):
        wav = wav.numpy() if isinstance(wav, Tensor) else np.asarray(wav)
        # 32 ms frames at 16 kHz; a clip of 512 samples or fewer gets a quarter of its length, so several frames
        nfft = 512 if len(wav) > 512 else max(4, 2 ** int(np.log2(max(len(wav), 4))) // 4)
        ax.specgram(wav.astype(np.float64) + 1e-9, NFFT=nfft, Fs=sample_rate, noverlap=nfft * 3 // 4, cmap="magma")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz)")
    fig.tight_layout()
    return save_figure(fig, path)


def _taken(folder: Path) -> bool:
    """Whether ``folder`` is a file or already holds samples of an earlier generate."""
    return folder.exists() and (not folder.is_dir() or any(folder.glob("sample_*.wav"))
                                or (folder / "loglik.csv").exists())


def samples_folder(requested: str | None, ckpt: str) -> Path:
    """Where generate writes: ``--out`` if it holds no samples yet (refused otherwise, so new and stale
    clips never mix), by default ``<run>/samples`` or, when that is taken, ``samples-v2``, ..."""
    if requested:
        out = Path(requested)
        if _taken(out):
            raise UserError(f"--out {out} already holds samples (or is a file); choose a new folder, "
                            "so that new and earlier clips do not mix")
    else:
        out = next_free(beside_checkpoint(ckpt, "samples"), _taken)
    check_writable(out, "--out")
    return out


def wav_header(rate: int, frames: int | None) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV of ``frames`` samples; ``None``: the streaming form,
    whose sizes are 0xFFFFFFFF (players read the data to the end of the stream)."""
    data = 0xFFFFFFFF if frames is None else 2 * frames
    riff = 0xFFFFFFFF if frames is None else 36 + data
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", riff, b"WAVE", b"fmt ", 16, 1, 1, rate, 2 * rate, 2, 16,
                       b"data", data)


def pcm16(wav: Tensor) -> bytes:
    """A waveform in [-1, 1] as little-endian 16-bit PCM bytes: scaled by 32768, rounded and clipped to
    [-32768, 32767], as libsndfile (and so :func:`apps.common.audio.save_wav`) writes it."""
    data = np.round(wav.detach().cpu().float().numpy().astype(np.float64) * 32768)
    return np.clip(data, -32768, 32767).astype("<i2").tobytes()


PLAYERS = (("aplay", ["-q"]), ("paplay", []), ("ffplay", ["-nodisp", "-autoexit", "-loglevel", "quiet", "-"]),
           ("play", ["-q", "-t", "wav", "-"]))


def find_player() -> list[str] | None:
    """The command of the first audio player on PATH that reads a WAV stream on stdin, or None."""
    for name, args in PLAYERS:
        found = shutil.which(name)
        if found:
            return [found, *args]
    return None


class ClipStream:
    """Writes clips while :func:`apps.sashimi.sampling.sample` grows them (pass it as ``on_samples``).

    Each clip ``i`` goes to ``out/sample_{i:03d}.wav`` through a temporary file in ``out`` (header fixed and
    renamed when the clip is complete; removed by :meth:`close` if generation stops first).  ``live``,
    when given, receives every clip in order as one streaming 16-bit WAV, each sample as soon as it
    exists for the clip being streamed (the later clips of a batch follow when the batch ends); if the
    reader goes away (a closed pipe), streaming stops and the files are still written.
    """

    def __init__(self, out: Path, n: int, length: int, rate: int, method: str, bits: int,
                 live: BinaryIO | None = None) -> None:
        self.out, self.n, self.length, self.rate, self.method, self.bits = out, n, length, rate, method, bits
        self.live = live
        self.files: dict[int, tuple[BinaryIO, str]] = {}
        self.written = [0] * n
        self.paths: list[Path] = []
        self.live_clip, self.live_done = 0, 0
        out.mkdir(parents=True, exist_ok=True)
        self._send(wav_header(rate, None))

    def _send(self, data: bytes) -> None:
        if self.live is None:
            return
        try:
            self.live.write(data)
            self.live.flush()
        except (BrokenPipeError, OSError):  # the reader went away: keep writing the files only
            self.live = None

    def _pcm(self, tokens: Tensor) -> bytes:
        return pcm16(dequantize(tokens.cpu(), self.method, self.bits))

    def __call__(self, first: int, clips: Tensor, done: int) -> None:
        for r in range(clips.shape[0]):
            i = first + r
            if i not in self.files and self.written[i] == 0:
                fd, tmp = tempfile.mkstemp(prefix=f".sample_{i:03d}.wav.", suffix=".tmp", dir=self.out)
                f = os.fdopen(fd, "wb")
                f.write(wav_header(self.rate, None))
                self.files[i] = (f, tmp)
            if i in self.files and done > self.written[i]:
                self.files[i][0].write(self._pcm(clips[r, self.written[i]:done]))
                self.files[i][0].flush()
                self.written[i] = done
            if i in self.files and done == self.length:
                f, tmp = self.files.pop(i)
                f.seek(0)
                f.write(wav_header(self.rate, self.length))
                f.close()
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: the usual permissions, as save_wav
                path = self.out / f"sample_{i:03d}.wav"
                os.replace(tmp, path)
                self.paths.append(path)
        while self.live_clip < min(first + clips.shape[0], self.n):
            i = self.live_clip
            have = self.written[i]
            if have > self.live_done:
                self._send(self._pcm(clips[i - first, self.live_done:have]))
                self.live_done = have
            if have < self.length:
                break
            self.live_clip, self.live_done = i + 1, 0

    def close(self) -> None:
        """Remove the temporary files of clips that were not completed (after an error or Ctrl-C)."""
        for f, tmp in self.files.values():
            f.close()
            Path(tmp).unlink(missing_ok=True)
        self.files.clear()


def _live_sink(stream: bool) -> tuple[BinaryIO | None, subprocess.Popen | None, str]:
    """Where ``--stream`` sends the audio: ``(sink, player process, what)``.  A terminal: an audio
    player's stdin; a regular file (or no file descriptor): nowhere, stdout keeps the text report;
    anything else (a pipe, a socket, /dev/null): stdout itself."""
    if not stream:
        return None, None, ""
    if sys.stdout.isatty():
        command = find_player()
        if command is None:
            return None, None, "no audio player found (aplay, paplay, ffplay, play): writing the files only"
        player = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        return player.stdin, player, f"playing with {Path(command[0]).name}"
    try:
        regular = stat.S_ISREG(os.fstat(sys.stdout.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # no real file descriptor (e.g. captured)
        regular = True
    if regular:
        return None, None, ""
    sys.stdout.flush()
    return sys.stdout.buffer, None, "streaming a WAV to stdout"


def generate(argv: list[str]) -> None:
    """``ssm sashimi generate --ckpt CKPT --n 16 --seconds 4 --batch 16 [--temperature --top-p --prefix --seed]``."""
    p = argparse.ArgumentParser(prog="ssm sashimi generate", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="a WaveformGenerator checkpoint (runs/sashimi/<recipe>/checkpoints/)")
    p.add_argument("--n", type=int, default=16, help="number of clips")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each clip, prefix included")
    p.add_argument("--batch", type=int, default=16, help="clips generated together")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: plain sampling)")
    p.add_argument("--prefix", help="prompt WAV at the model's rate, continued by every clip")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", help="output folder (default: <run>/samples beside the run's checkpoints/, "
                                 "samples/ beside a checkpoint kept elsewhere; then samples-v2, ...)")
    p.add_argument("--compare", help="a real clip: also write spectrogram.png (first sample next to it)")
    p.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--backend", default="auto", choices=["auto", "native", "torch", "compile", "module"],
                   help="recurrent step: native C (CPU), fused torch ops, torch.compile, or the modules' step()")
    p.add_argument("--threads", type=int, help="CPU threads (default: 1 for the native step; with 2 or more and --batch 1 two "
                        "threads share each step, which pays on idle cores only; torch's default otherwise)")
    p.add_argument("--stream", action="store_true",
                   help="write the audio while it is generated; pipe it as one WAV stream when stdout is a pipe "
                        "(| aplay), play it when stdout is a terminal")
    p.add_argument("--weights", default="float32", choices=["float32", "bf16", "int8"],
                   help="the native step's linear weights: float32 (exact, default), bf16 (half the memory traffic; "
                        "log-likelihood within 1e-3 nats per sample of float32's in our tests) or int8 (a quarter, "
                        "one scale per column; within 3e-3)")
    args = p.parse_args(argv)
    if args.n < 1 or args.batch < 1 or not 0 < args.seconds < math.inf:
        raise UserError(f"--n and --batch must be at least 1 and --seconds a finite number above 0 "
                        f"(got {args.n}, {args.batch}, {args.seconds})")
    if not 0 < args.top_p <= 1 or not 0 <= args.temperature < math.inf:
        raise UserError(f"--top-p must be in (0, 1] and --temperature a finite number >= 0 "
                        f"(got {args.top_p}, {args.temperature})")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    parse_device(args.device)
    out = samples_folder(args.out, args.ckpt)
    module = load_generator(args.ckpt, args.device)
    rate, method, bits = module.sample_rate, module.quantization, module.bits
    length = max(1, round(args.seconds * rate))
    prefix = load_prefix(args.prefix, rate, length, method, bits) if args.prefix else None
    real = load_compare(args.compare, rate) if args.compare else None  # read now, not after a long generation
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        stepper = FastStepper(module.model, backend=args.backend, threads=args.threads, weights=args.weights)
    except ValueError as e:
        raise UserError(f"--weights {args.weights}: {e}; drop --weights or use --backend native on CPU") from e
    sink, player, note = _live_sink(args.stream)
    say = (lambda *a: print(*a, file=sys.stderr)) if sink is not None and player is None else print  # noqa: E731
    if note:
        print(note, file=sys.stderr)
    streamer = ClipStream(out, args.n, length, rate, method, bits, sink) if args.stream else None
    began = time.perf_counter()
    try:
        tokens, loglik = sample(module.model, args.n, length, args.batch, args.temperature, args.top_p, prefix,
                                module.start_token, generator, stepper=stepper, on_samples=streamer)
    finally:
        if streamer:
            streamer.close()
        if player is not None:
            try:
                player.stdin.close()
            except OSError:
                pass
    seconds = time.perf_counter() - began
    audio = dequantize(tokens.cpu(), method, bits)
    generated = length - (0 if prefix is None else prefix.shape[0])
    rows, written = [], []
    for i in range(args.n):
        path = out / f"sample_{i:03d}.wav" if streamer else save_wav(out / f"sample_{i:03d}.wav", audio[i], rate)
        written.append(path)
        ll = float(loglik[i])
        rows.append([path.name, f"{ll:.2f}", f"{-ll / max(1, generated) / math.log(2):.4f}"])
    rows.sort(key=lambda r: -float(r[1]))
    csv = write_csv(out / "loglik.csv", ["file", "loglik_nats", "nll_bits_per_sample"], rows)
    say(f"generated {args.n} x {length} samples ({method}, {rate} Hz, {stepper.backend} steps) in {seconds:.1f} s "
        f"({args.n * length / seconds:,.0f} samples/s); wrote under {out}:")
    say(f"  {len(written)} WAVs: {written[0].name} .. {written[-1].name}\n  {csv}")
    if real is not None:
        png = spectrogram_png(out / "spectrogram.png", {"generated": audio[0], f"real ({Path(args.compare).name})":
                                                        real[: audio.shape[1]]}, rate)
        say(f"  {png}")
    if player is not None:
        player.wait()
