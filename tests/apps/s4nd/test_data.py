"""Data: prepare is deterministic, ImageFolder and CIFAR-10 read their real layouts, bad input is one clear error."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.common.errors import UserError
from apps.s4nd.data import ImageData, load_cifar10, prepare, random_translate, resize_images
from tests.apps.s4nd.conftest import CLASSES, write_image_folder


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def _fake_mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """Ten random 28x28 digits per class, in MNIST-5k's class-sorted order (parsing the real CSV takes
    seconds; the real set runs in the slow test below)."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (100, 28, 28), generator=g, dtype=torch.uint8), torch.arange(10).repeat_interleave(10)


@pytest.mark.slow
def test_prepare_real_mnist5k_is_deterministic(tmp_path):
    prepare(["mnist", "--out", str(tmp_path / "a"), "--split", "2,1,1"])
    prepare(["mnist", "--out", str(tmp_path / "b"), "--split", "2,1,1"])
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert len(_digest(tmp_path / "a")) == 40


def test_prepare_mnist_is_deterministic_imagefolder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("apps.s4nd.data.load_mnist5k", _fake_mnist5k)
    prepare(["mnist", "--out", str(tmp_path / "a"), "--split", "3,2,1"])
    prepare(["mnist", "--out", str(tmp_path / "b"), "--split", "3,2,1"])
    a = _digest(tmp_path / "a")
    assert a == _digest(tmp_path / "b") and len(a) == 60
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == [str(d) for d in range(10)]
    assert "wrote" in capsys.readouterr().out
    data = ImageData(root=str(tmp_path / "a"), channels=1)
    data.setup("fit")
    assert data.num_classes == 10 and len(data.splits["train"]) == 30 and len(data.splits["test"]) == 10
    image, label = data.splits["val"][0]
    assert image.shape == (28, 28, 1) and -1 <= image.min() < image.max() <= 1 and label == 0
    # the splits are disjoint digits
    names = {split: {p.name for p in (tmp_path / "a" / split).rglob("*.png")} for split in ("train", "val", "test")}
    assert not (names["train"] & names["val"]) and not (names["val"] & names["test"])
    prepare(["mnist", "--out", str(tmp_path / "a")])  # already there: kept as it is
    assert "already holds a dataset" in capsys.readouterr().out and _digest(tmp_path / "a") == a
    prepare(["mnist", "--out", str(tmp_path / "a"), "--split", "1,1,1", "--force"])
    assert len(_digest(tmp_path / "a")) == 30
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not written by `ssm ... prepare`"):
        prepare(["mnist", "--out", str(tmp_path / "other")])
    with pytest.raises(UserError, match="--split"):
        prepare(["mnist", "--out", str(tmp_path / "c"), "--split", "400,100,100"])
    prepare(["mnist", "--out", str(tmp_path / "seed1"), "--split", "3,2,1", "--seed", "1"])
    assert _digest(tmp_path / "seed1") != a  # the seed picks the split


def test_imagefolder_converts_channels_and_resizes(tmp_path):
    root = write_image_folder(tmp_path / "rgb", side=12, mode="RGB")
    data = ImageData(root=str(root), channels=3, batch_size=4)
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 12, 12, 3) and data.classes == [f"class{c}" for c in range(CLASSES)]
    grey = ImageData(root=str(root), channels=1, image_size=8)
    grey.setup("fit")
    assert grey.splits["train"][0][0].shape == (8, 8, 1)


def test_random_translate_shifts_by_whole_pixels_and_fills_black():
    image = torch.arange(1, 50, dtype=torch.uint8).reshape(7, 7, 1)
    assert random_translate(image, 0) is image
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        out = random_translate(image, 2)
        # find the shift: the pixel value 25 (centre, row 3 col 3) moved to (3 + dy, 3 + dx)
        (r, c), = torch.nonzero(out[..., 0] == 25).tolist()
        dy, dx = r - 3, c - 3
        assert abs(dy) <= 2 and abs(dx) <= 2
        expected = torch.zeros_like(image)
        expected[max(dy, 0) : 7 + min(dy, 0), max(dx, 0) : 7 + min(dx, 0)] = image[
            max(-dy, 0) : 7 + min(-dy, 0), max(-dx, 0) : 7 + min(-dx, 0)]
        assert torch.equal(out, expected)
        seen.add((dy, dx))
    assert len(seen) == 25  # every shift in [-2, 2]^2 occurs


def test_translate_augments_the_training_split_only(image_folder):
    data = ImageData(root=str(image_folder), translate=3)
    data.setup("fit")
    train, val = data.splits["train"], data.splits["val"]
    torch.manual_seed(0)
    assert any(not torch.equal(train[0][0], train[0][0]) for _ in range(10))  # a fresh shift every time
    assert torch.equal(val[0][0], val[0][0]) and torch.equal(data.splits["test"][1][0], data.splits["test"][1][0])
    with pytest.raises(UserError, match="data.translate must be >= 0"):
        ImageData(root=str(image_folder), translate=-1)


def test_missing_test_split_falls_back_to_val(tmp_path):
    root = write_image_folder(tmp_path / "img", per_split={"train": 2, "val": 1})
    data = ImageData(root=str(root))
    data.setup("test")
    assert data.splits["test"] is data.splits["val"]


def test_a_non_image_file_is_rejected_by_name(image_folder):
    stray = image_folder / "train" / "class1" / "notes.txt"
    stray.write_text("not a picture")
    with pytest.raises(UserError, match=r"not an image file: .*notes\.txt"):
        ImageData(root=str(image_folder)).setup("fit")
    stray.unlink()
    broken = image_folder / "val" / "class0" / "broken.png"
    broken.write_bytes(b"this is no PNG")
    with pytest.raises(UserError, match=r"not a readable image: .*broken\.png"):
        ImageData(root=str(image_folder)).setup("fit")


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="data.channels must be 1"):
        ImageData(channels=2)
    with pytest.raises(UserError, match="CIFAR-10 is RGB"):
        ImageData(dataset="cifar10", channels=1)
    with pytest.raises(UserError, match="data.dataset"):
        ImageData(dataset="imagenet")
    with pytest.raises(UserError, match=r"data.root not found: .*nowhere.*prepare mnist"):
        ImageData(root=str(tmp_path / "nowhere")).setup("fit")


def test_cifar10_reads_torchvision_local_format_and_never_downloads(tmp_path):
    with pytest.raises(UserError, match=r"CIFAR-10 not found: .*cifar-10-batches-py lacks data_batch_1"):
        load_cifar10(tmp_path, train=True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": list(range(4))}
        (folder / name).write_bytes(pickle.dumps(batch))
    data = ImageData(dataset="cifar10", root=str(tmp_path), channels=3, val_size=5, batch_size=5)
    data.setup("fit")
    assert len(data.splits["train"]) == 15 and len(data.splits["val"]) == 5 and len(data.splits["test"]) == 4
    images, _ = next(iter(data.val_dataloader()))
    assert images.shape == (5, 32, 32, 3)
    raw = pickle.loads((folder / "test_batch").read_bytes())["data"][0].reshape(3, 32, 32)
    assert torch.equal(load_cifar10(tmp_path, train=False)[0][0], torch.from_numpy(raw).permute(1, 2, 0))


def test_resize_is_antialiased_bilinear():
    checker = (torch.arange(28)[:, None] + torch.arange(28)[None, :]) % 2  # finest possible pattern
    x = checker.float().reshape(1, 28, 28, 1)
    small = resize_images(x, 14)
    assert small.shape == (1, 14, 14, 1)
    inner = small[:, 1:-1, 1:-1]  # (the border sees the edge padding)
    assert torch.allclose(inner, torch.full_like(inner, 0.5), atol=1e-4)  # filtered, not aliased
    assert resize_images(x, 28) is x
