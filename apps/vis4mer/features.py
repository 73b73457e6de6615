"""``ssm vis4mer extract-features``: frozen-backbone tokens of every video, cached on disk.

ViS4mer (Islam & Bertasius 2022) trains its decoder on frozen image features, so they are
computed once.  The cache folder holds

* ``features/<video_id>.pt``: ``{"features": (T, P, D) float16, "indices": frame indices, ...}``
  (T sampled frames, P tokens per frame, D channels); one file per video, written atomically;
* ``manifest.json``: the backbone and sampling settings and, per video, its file and shape;
* ``failed.csv``: ``video,reason`` for every missing, unreadable or empty video (skipped, never
  replaced by zeros).

Re-running the command skips the videos already in the cache (resume after an interruption);
settings that differ from the cache's manifest are refused.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from apps.common.devices import default_device, parse_device
from apps.common.errors import UserError
from apps.common.io import atomic_torch_save, atomic_write_text
from apps.vis4mer.backbone import BACKBONES, BackboneSpec, make_backbone
from apps.vis4mer.video import VIDEO_EXTENSIONS, VideoError, find_videos, preprocess, read_frames

MANIFEST = "manifest.json"
FAILED = "failed.csv"
FEATURES = "features"
#: manifest is rewritten after this many new videos (and at the end)
MANIFEST_EVERY = 25


class _Decoded(Dataset):
    """Decodes and preprocesses videos (in DataLoader workers); an unusable video yields its error."""

    def __init__(self, paths: list[Path], spec: BackboneSpec, fps: float | None, num_frames: int | None) -> None:
        self.paths, self.spec, self.fps, self.num_frames = paths, spec, fps, num_frames

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Path, torch.Tensor | None, dict | str]:
        path = self.paths[i]
        try:
            frames, info = read_frames(path, fps=self.fps, num_samples=self.num_frames)
        except VideoError as e:
            return path, None, str(e)
        return path, preprocess(frames, self.spec.image_size, self.spec.mean, self.spec.std), info


def load_manifest(cache: str | Path) -> dict:
    """The manifest of a feature cache (UserError naming the folder when there is none)."""
    path = Path(cache) / MANIFEST
    if not path.is_file():
        raise UserError(f"no feature cache at {cache} ({MANIFEST} missing): run `ssm vis4mer extract-features "
                        f"--videos VIDEO_DIR --out {cache}` first")
    return json.loads(path.read_text())


def load_features(cache: str | Path, video_id: str) -> torch.Tensor:
    """Cached tokens of one video: (T, P, D) float16."""
    return torch.load(Path(cache) / FEATURES / f"{video_id}.pt", map_location="cpu", weights_only=True)["features"]


def read_failed(cache: str | Path) -> dict[str, str]:
    """``video_id -> reason`` from the cache's ``failed.csv`` (empty when there is none)."""
    path = Path(cache) / FAILED
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["video"]: row["reason"] for row in csv.DictReader(f)}


def _write_failed(cache: Path, failed: dict[str, str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video", "reason"])
    writer.writerows(sorted(failed.items()))
    atomic_write_text(cache / FAILED, buffer.getvalue())


@torch.no_grad()
def extract_features(videos: list[Path], out: str | Path, backbone: str = "linear", weights: str | None = None,
                     fps: float | None = 1.0, num_frames: int | None = None, image_size: int | None = None,
                     patch: int = 8, grid: int = 7, batch_size: int = 64, device: str = "cpu",
                     workers: int = 0, random_weights: bool = False, progress: bool = True) -> dict:
    """Cache the backbone tokens of ``videos`` under ``out``; returns the manifest.

    Videos already cached are skipped; unusable ones are listed in ``out/failed.csv``.  Frames
    go through the backbone ``batch_size`` at a time.
    """
    out = Path(out)
    model, spec = make_backbone(backbone, weights, image_size, patch, grid, random_weights)
    model = model.to(device)
    settings = {"backbone": spec.as_dict(), "sampling": {"fps": fps, "num_frames": num_frames}}
    manifest_path = out / MANIFEST
    manifest = {**settings, "videos": {}}
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if {k: old.get(k) for k in settings} != json.loads(json.dumps(settings)):
            raise UserError(f"the cache {out} was made with other settings ({old.get('backbone', {}).get('name')}, "
                            f"{old.get('sampling')}); use another --out or delete it")
        manifest["videos"] = old.get("videos", {})
    ids = [p.stem for p in videos]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise UserError(f"video ids (file names without extension) must be unique; repeated: {', '.join(dup)}")
    for path in videos:  # files from an interrupted run that did not reach the manifest
        file = out / FEATURES / f"{path.stem}.pt"
        if path.stem not in manifest["videos"] and file.is_file():
            shape = list(load_features(out, path.stem).shape)
            manifest["videos"][path.stem] = {"file": f"{FEATURES}/{file.name}", "shape": shape}
    todo = [p for p in videos if p.stem not in manifest["videos"]]
    failed = {k: v for k, v in read_failed(out).items() if k not in {p.stem for p in todo}}
    loader = DataLoader(_Decoded(todo, spec, fps, num_frames), batch_size=None, num_workers=workers)
    columns = (TextColumn("extract-features"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[name]}"))
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("videos", total=len(todo), name="")
        for n, (path, frames, info) in enumerate(loader, 1):
            bar.update(task, advance=1, name=path.name)
            if frames is None:
                failed[path.stem] = info
                continue
            tokens = torch.cat([model(chunk.to(device)).cpu() for chunk in frames.split(batch_size)])
            record = {"features": tokens.to(torch.float16), "indices": torch.tensor(info["indices"]),
                      "num_frames": info["num_frames"], "video_fps": info["video_fps"]}
            atomic_torch_save(record, out / FEATURES / f"{path.stem}.pt")
            manifest["videos"][path.stem] = {"file": f"{FEATURES}/{path.stem}.pt", "shape": list(tokens.shape)}
            if n % MANIFEST_EVERY == 0:
                atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    _write_failed(out, failed)
    manifest["new"], manifest["failed"] = len(todo) - sum(p.stem in failed for p in todo), failed
    return manifest


def extract_features_cli(argv: list[str]) -> None:
    """``ssm vis4mer extract-features --videos DIR --out CACHE [--backbone ...]``."""
    p = argparse.ArgumentParser(prog="ssm vis4mer extract-features", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", required=True, help="folder of videos (searched recursively), a .txt list (one path a line) or one video file")
    p.add_argument("--out", required=True, help="cache folder (features/, manifest.json, failed.csv)")
    p.add_argument("--backbone", default="linear", choices=BACKBONES)
    p.add_argument("--weights", help="local state-dict file of the torchvision backbone (never downloaded)")
    p.add_argument("--random-weights", action="store_true", help="allow an untrained torchvision backbone")
    p.add_argument("--fps", type=float, default=None, help="frames per second to sample (default 1)")
    p.add_argument("--num-frames", type=int, default=None, help="or: this many frames uniformly")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--patch", type=int, default=8, help="linear backbone patch side")
    p.add_argument("--grid", type=int, default=7, help="ResNet token grid side")
    p.add_argument("--batch-size", type=int, default=64, help="frames per backbone batch")
    p.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes")
    args = p.parse_args(argv)
    if args.fps is not None and args.num_frames is not None:
        raise UserError("give --fps or --num-frames, not both")
    if args.fps is not None and not 0 < args.fps < float("inf"):
        raise UserError(f"--fps must be a finite number above 0, got {args.fps}")
    for name in ("num_frames", "image_size", "patch", "grid", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.workers < 0:
        raise UserError(f"--workers must be at least 0, got {args.workers}")
    parse_device(args.device)
    fps = args.fps if args.fps is not None or args.num_frames is not None else 1.0
    source = Path(args.videos)
    if source.suffix == ".txt":
        if not source.is_file():
            raise UserError(f"video list not found: {source}")
        videos = [Path(line.strip()) for line in source.read_text().splitlines() if line.strip()]
    elif source.is_file() and source.suffix.lower() in VIDEO_EXTENSIONS:
        videos = [source]
    else:
        videos = find_videos(source)
    if not videos:
        raise UserError(f"no videos found in {source}")
    manifest = extract_features(videos, args.out, args.backbone, args.weights, fps, args.num_frames,
                                args.image_size, args.patch, args.grid, args.batch_size, args.device,
                                args.workers, args.random_weights)
    failed = manifest["failed"]
    print(f"extract-features: {manifest['new']} new, {len(manifest['videos'])} cached, {len(failed)} failed")
    print(f"  features: {Path(args.out) / FEATURES}/")
    print(f"  manifest: {Path(args.out) / MANIFEST}")
    print(f"  failed videos: {Path(args.out) / FAILED}")
    for video, reason in list(failed.items())[:5]:
        print(f"  skipped {video}: {reason}")
    if failed and not manifest["videos"]:
        raise UserError(f"every video failed ({len(failed)}; reasons in {Path(args.out) / FAILED}), "
                        "so no features were written")
