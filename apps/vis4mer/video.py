"""Reading videos for ViS4mer (Islam & Bertasius 2022) with decord.

ViS4mer embeds one frame per second of a long clip: a 60 s span at 1 fps gives 60 frames.
This module picks the frame indices (:func:`sample_indices`: at a given fps, or N frames
uniformly), cuts the sampled frames into spans of ``l_secs`` seconds (:func:`span_indices`, the
last span padded), decodes them (:func:`read_frames`) and prepares them the way the image
backbone expects (:func:`preprocess`: short-side resize, centre crop, scale to [0, 1] and the
backbone's mean/std normalisation -- the original code skipped that last step).

A missing, unreadable or zero-length video raises :class:`VideoError` naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from apps.common.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


class VideoError(UserError):
    """A video that cannot be used: missing, unreadable or without frames (the message names it)."""


def sample_indices(num_frames: int, video_fps: float, fps: float | None = None,
                   num_samples: int | None = None) -> np.ndarray:
    """Frame indices to decode from a video of ``num_frames`` frames at ``video_fps``.

    Exactly one of ``fps`` / ``num_samples`` is given:

    * ``fps``: one frame at each time ``k / fps`` (k = 0, 1, ...) inside the video, i.e. frame
      ``floor(k * video_fps / fps)``; at least one frame.
    * ``num_samples``: N frames uniformly, the centre frame of each of N equal segments,
      ``floor((k + 0.5) * num_frames / N)`` (repeats frames when the video is shorter than N).

    Returns:
        (T,) int64 indices in ``[0, num_frames)``, non-decreasing.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if (fps is None) == (num_samples is None):
        raise ValueError("give exactly one of fps and num_samples")
    if fps is not None:
        if fps <= 0 or video_fps <= 0:
            raise ValueError(f"fps and video_fps must be positive, got {fps} and {video_fps}")
        step = video_fps / fps
        count = max(1, math.ceil(num_frames / step - 1e-9))
        indices = np.floor(np.arange(count) * step + 1e-6).astype(np.int64)
    else:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        indices = np.floor((np.arange(num_samples) + 0.5) * num_frames / num_samples).astype(np.int64)
    return np.clip(indices, 0, num_frames - 1)


def span_indices(length: int, span: int) -> list[np.ndarray]:
    """Cut ``length`` sampled frames into spans of ``span`` frames (``l_secs * fps``).

    Every span has exactly ``span`` entries: a video shorter than a span, and the tail of a
    longer one, are padded by repeating their last frame (a padded span stays inside the
    backbone's feature distribution, which a zero frame would not).

    Returns:
        ``ceil(length / span)`` arrays of (span,) int64 positions into the sampled frames.
    """
    if length < 1 or span < 1:
        raise ValueError(f"length and span must be positive, got {length} and {span}")
    spans = []
    for start in range(0, length, span):
        positions = np.arange(start, start + span)
        spans.append(np.minimum(positions, length - 1).astype(np.int64))
    return spans


def open_video(path: str | Path):
    """A ``decord.VideoReader`` for ``path``, or :class:`VideoError` naming the file and the reason."""
    import decord

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"empty video file (0 bytes): {path}")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # noqa: BLE001 -- decord raises plain RuntimeError / DECORDError
        raise VideoError(f"unreadable video: {path} ({str(e).splitlines()[0][:80]})") from e
    if len(reader) == 0:
        raise VideoError(f"video has no frames: {path}")
    return reader


def read_frames(path: str | Path, fps: float | None = 1.0, num_samples: int | None = None) -> tuple[Tensor, dict]:
    """Decode the sampled frames of a video.

    Returns:
        ``frames`` (T, H, W, 3) uint8 RGB and ``info`` (``num_frames``, ``video_fps``, ``indices``).
    """
    reader = open_video(path)
    video_fps = float(reader.get_avg_fps()) or 25.0
    indices = sample_indices(len(reader), video_fps, fps=fps, num_samples=num_samples)
    try:
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except Exception as e:  # noqa: BLE001 -- a truncated stream fails only when decoded
        if "from_size == to_size" not in str(e):
            raise VideoError(f"unreadable video: {path} (decoding failed: {str(e).splitlines()[0][:80]})") from e
        # decord2 (3.3-3.4) mis-sizes frames of some widths (e.g. 32, 48, 96 pixels): its RGB buffer
        # keeps the decoder's row padding, so the batch copy fails. PyAV decodes those correctly.
        frames = read_frames_pyav(path, indices)
    if frames.size == 0:
        raise VideoError(f"video has no decodable frames: {path}")
    info = {"num_frames": len(reader), "video_fps": video_fps, "indices": indices.tolist()}
    return torch.from_numpy(np.ascontiguousarray(frames)), info


def read_frames_pyav(path: str | Path, indices: np.ndarray) -> np.ndarray:
    """Frames ``indices`` (non-decreasing) of a video decoded in order with PyAV: (T, H, W, 3) uint8 RGB."""
    import av

    wanted = np.asarray(indices, dtype=np.int64)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for number, frame in enumerate(container.decode(video=0)):
                repeats = int(np.count_nonzero(wanted == number))
                if repeats:
                    frames += [frame.to_ndarray(format="rgb24")] * repeats
                if number >= wanted[-1]:
                    break
    except av.FFmpegError as e:
        raise VideoError(f"unreadable video: {path} (decoding failed: {str(e)[:80]})") from e
    if len(frames) != len(wanted):
        raise VideoError(f"unreadable video: {path} (decoded {len(frames)} of {len(wanted)} sampled frames)")
    return np.stack(frames)


def preprocess(frames: Tensor, size: int, mean: Sequence[float], std: Sequence[float],
               crop: bool = True) -> Tensor:
    """Resize and normalise frames for an image backbone.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        size: output side S.
        mean, std: per-channel normalisation of [0, 1] pixels (the backbone's own).
        crop: resize the short side to S and centre-crop (torchvision's eval transform);
            False resizes the whole frame to S x S.
    Returns:
        (T, 3, S, S) float32.
    """
    x = rearrange(frames, "t h w c -> t c h w").float() / 255.0
    height, width = x.shape[-2:]
    if crop:
        scale = size / min(height, width)
        new = (max(size, round(height * scale)), max(size, round(width * scale)))
    else:
        new = (size, size)
    if (height, width) != new:
        x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def find_videos(folder: str | Path) -> list[Path]:
    """Every video file under ``folder`` (recursively), sorted."""
    folder = Path(folder)
    if folder.is_file():
        raise UserError(f"--videos {folder} is neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a .txt list; give "
                        "a folder of videos (searched recursively), a .txt list of video paths (one a line) or one video")
    if not folder.is_dir():
        raise UserError(f"video folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
