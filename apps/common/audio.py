"""Audio I/O shared by the apps: read any WAV/FLAC/OGG as mono float32 at a chosen rate, write WAVs
atomically.  soundfile does the decoding (torchaudio.load would need torchcodec and FFmpeg)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from apps.common.errors import UserError
from apps.common.io import atomic_write

log = logging.getLogger(__name__)


class AudioError(UserError):
    """An audio file that cannot be used (unreadable, empty); the message names the file."""


_converted_once: set[str] = set()


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (low-pass, then decimate or interpolate)."""
    if orig_rate == new_rate:
        return wav
    return AF.resample(wav, int(orig_rate), int(new_rate))


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Read ``path`` as mono float32 in [-1, 1]; resample to ``sample_rate`` when given.

    Returns ``(wav, rate)`` with ``wav`` of shape (T,).  Audio that is not mono or not at
    ``sample_rate`` is downmixed / resampled, and the first such conversion is logged.
    Raises:
        AudioError: the file is missing, unreadable, holds no samples, or NaN / infinite ones.
    """
    path = Path(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, channels)
    except Exception as e:  # noqa: BLE001 -- soundfile raises several types for a bad file
        raise AudioError(f"cannot read audio file {path}: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} holds no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file {path} holds {int((~np.isfinite(data)).sum())} NaN or infinite samples; "
                         "fix or remove the file")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))  # (T,)
    key = f"{data.shape[1]}ch@{rate}"
    if sample_rate is not None and (rate != sample_rate or data.shape[1] != 1) and key not in _converted_once:
        _converted_once.add(key)
        log.warning("converting %s audio (e.g. %s) to %d Hz mono", key, path, sample_rate)
    if sample_rate is not None and rate != sample_rate:
        wav, rate = resample(wav, rate, sample_rate), sample_rate
    return wav, int(rate)


def save_wav(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write a mono waveform in [-1, 1] as 16-bit PCM WAV, atomically."""
    data = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(data.reshape(-1), -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))
