"""The feature cache: float16 round trip, resume, corrupt videos, settings checks."""

import json
import shutil

import pytest
import torch

from apps.common.errors import UserError
from apps.vis4mer.backbone import make_backbone
from apps.vis4mer.features import extract_features, load_features, read_failed
from apps.vis4mer.video import preprocess, read_frames


def _videos(root, n):
    return sorted((root / "videos").glob("*.mp4"))[:n]


def test_cache_round_trip_matches_the_backbone(moving_mnist, tmp_path):
    videos = _videos(moving_mnist, 2)
    manifest = extract_features(videos, tmp_path / "cache", "linear", fps=1.0, image_size=16, patch=8,
                                batch_size=3, progress=False)
    assert manifest["new"] == 2 and manifest["backbone"]["tokens"] == 4 and manifest["backbone"]["dim"] == 192
    cached = load_features(tmp_path / "cache", videos[0].stem)
    assert cached.dtype == torch.float16 and cached.shape == (8, 4, 192)  # 8 s at 1 fps, 2x2 patches of 8
    model, spec = make_backbone("linear", image_size=16, patch=8)
    frames, _ = read_frames(videos[0], fps=1.0)
    expected = model(preprocess(frames, spec.image_size, spec.mean, spec.std))
    torch.testing.assert_close(cached.float(), expected, atol=2e-3, rtol=1e-3)  # float16 rounding only
    on_disk = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert set(on_disk["videos"]) == {v.stem for v in videos}


def test_resume_skips_finished_videos_and_recovers_unlisted_files(moving_mnist, tmp_path):
    cache = tmp_path / "cache"
    videos = _videos(moving_mnist, 3)
    extract_features(videos[:2], cache, "linear", image_size=16, progress=False)
    stamp = (cache / "features" / f"{videos[0].stem}.pt").stat().st_mtime_ns
    again = extract_features(videos, cache, "linear", image_size=16, progress=False)
    assert again["new"] == 1 and len(again["videos"]) == 3
    assert (cache / "features" / f"{videos[0].stem}.pt").stat().st_mtime_ns == stamp  # untouched
    # a file written before an interruption hit the manifest is taken over, not recomputed
    manifest = json.loads((cache / "manifest.json").read_text())
    del manifest["videos"][videos[2].stem]
    (cache / "manifest.json").write_text(json.dumps(manifest))
    assert extract_features(videos, cache, "linear", image_size=16, progress=False)["new"] == 0
    with pytest.raises(UserError, match="other settings"):
        extract_features(videos, cache, "linear", image_size=32, progress=False)


def test_corrupt_video_is_reported_and_skipped(moving_mnist, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    good = _videos(moving_mnist, 1)[0]
    shutil.copy(good, folder / good.name)
    (folder / "corrupt.mp4").write_bytes(good.read_bytes()[:200])  # truncated
    (folder / "empty.mp4").write_bytes(b"")
    paths = sorted(folder.glob("*.mp4"))
    manifest = extract_features(paths, tmp_path / "cache", "linear", image_size=16, progress=False)
    assert set(manifest["videos"]) == {good.stem}
    failed = read_failed(tmp_path / "cache")
    assert set(failed) == {"corrupt", "empty"} and "corrupt.mp4" in failed["corrupt"]
    assert not (tmp_path / "cache" / "features" / "corrupt.pt").exists()


def test_torchvision_backbones_need_local_weights(tmp_path):
    with pytest.raises(UserError, match="--weights"):
        make_backbone("vit_b_16")
    with pytest.raises(UserError, match="not found"):
        make_backbone("resnet18", weights=tmp_path / "missing.pth")
    net, spec = make_backbone("resnet18", random_weights=True, image_size=64, grid=2)
    torch.save(net.trunk.state_dict(), tmp_path / "trunk_only.pth")
    with pytest.raises(UserError, match="do not fit"):
        make_backbone("resnet18", weights=tmp_path / "trunk_only.pth")
    tokens = net(torch.randn(3, 3, 64, 64))
    assert tokens.shape == (3, 4, 512) and spec.tokens == 4 and spec.dim == 512
    assert not any(p.requires_grad for p in net.parameters())


def test_vit_tokens_are_the_197_encoder_outputs(tmp_path):
    import torchvision

    vit = torchvision.models.vit_b_16(weights=None)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    net, spec = make_backbone("vit_b_16", weights=tmp_path / "vit.pth")
    x = torch.randn(1, 3, 224, 224)
    tokens = net(x)
    assert tokens.shape == (1, 197, 768) and (spec.tokens, spec.dim, spec.image_size) == (197, 768, 224)
    vit.eval()
    # the class token after the encoder is what torchvision's own forward feeds its head
    torch.testing.assert_close(vit.heads(tokens[:, 0]), vit(x), atol=1e-4, rtol=1e-4)


def test_videos_takes_one_video_file_and_names_any_other_file(moving_mnist, tmp_path, capsys):
    from apps.common.cli import main

    video = _videos(moving_mnist, 1)[0]
    assert main(["vis4mer", "extract-features", "--videos", str(video), "--out", str(tmp_path / "one"),
                 "--image-size", "16"]) == 0
    assert (tmp_path / "one" / "features" / f"{video.stem}.pt").is_file()
    table = tmp_path / "videos.csv"
    table.write_text(f"{video}\n")
    assert main(["vis4mer", "extract-features", "--videos", str(table), "--out", str(tmp_path / "two")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--videos {table} is neither a video" in err and ".txt list" in err
    assert "folder not found" not in err and not (tmp_path / "two").exists()
