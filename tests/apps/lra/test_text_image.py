"""LRA's byte-level text (IMDB, AAN) and image (grey CIFAR-10, MNIST-5k) readers: layouts, labels, errors."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from apps.common.cifar import SafeUnpickler, load_cifar10
from apps.common.errors import UserError
from apps.lra.image import read_cifar_grey, read_mnist_seq, to_grey, write_tiny_cifar
from apps.lra.text import byte_ids, read_aan, read_imdb, write_tiny_aan, write_tiny_imdb

# ---- text -----------------------------------------------------------------------------------------


def test_byte_ids_shift_every_byte_by_one_and_truncate():
    assert byte_ids(b"ab", 10) == [98, 99]
    assert byte_ids(bytes([0, 255, 7]), 2) == [1, 256]
    assert byte_ids(b"", 5) == []
    assert byte_ids("é".encode(), 8) == [0xC3 + 1, 0xA9 + 1]  # bytes, not characters


def test_tiny_imdb_reads_back_with_labels_in_a_fixed_order(tmp_path):
    folder = write_tiny_imdb(tmp_path, n_per_class=3, seed=1)
    assert folder == tmp_path / "aclImdb"
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["neg", "pos"]
    train = read_imdb(tmp_path, "train")
    assert [label for _, label in train] == [0, 0, 0, 1, 1, 1]
    assert all(isinstance(text, bytes) and text for text, _ in train)
    assert read_imdb(folder, "train") == train  # root may be aclImdb itself
    assert read_imdb(tmp_path, "val") == read_imdb(tmp_path, "test")  # IMDB has no validation split (as LRA)
    first_pos = sorted((folder / "train" / "pos").glob("0_*.txt"))[0]
    assert train[3][0] == first_pos.read_bytes()
    (folder / "train" / "pos" / "10_9.txt").write_bytes(b"late")
    (folder / "train" / "pos" / "2_8.txt").write_bytes(b"early")
    order = [t for t, label in read_imdb(tmp_path, "train") if label == 1]
    assert order.index(b"early") < order.index(b"late")  # by review id, not by name
    with pytest.raises(UserError, match="already exists"):
        write_tiny_imdb(tmp_path)


def test_imdb_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match=r"IMDB not found: .*aclImdb"):
        read_imdb(tmp_path, "train")
    folder = write_tiny_imdb(tmp_path, n_per_class=1)
    for review in (folder / "test" / "pos").iterdir():
        review.unlink()
    with pytest.raises(UserError, match=r"aclImdb/test/pos holds no .txt reviews"):
        read_imdb(tmp_path, "test")
    (folder / "test" / "pos").rmdir()
    with pytest.raises(UserError, match=r"IMDB folder not found: .*aclImdb/test/pos"):
        read_imdb(tmp_path, "test")
    with pytest.raises(UserError, match="unknown IMDB split 'dev'"):
        read_imdb(tmp_path, "dev")


def test_tiny_aan_reads_back_in_lra_layout(tmp_path):
    root = write_tiny_aan(tmp_path, n=6, seed=2)
    assert sorted(p.name for p in root.iterdir()) == [
        "new_aan_pairs.eval.tsv", "new_aan_pairs.test.tsv", "new_aan_pairs.train.tsv"]
    line = (root / "new_aan_pairs.eval.tsv").read_bytes().split(b"\n")[0]
    label, id1, id2, text1, text2 = line.split(b"\t")  # no header, five columns
    rows = read_aan(root, "val")
    assert len(rows) == 6 and rows[0] == (text1, text2, int(label))
    assert sorted({label for *_, label in rows}) == [0, 1]
    assert [len(read_aan(root, s)) for s in ("train", "test")] == [6, 6]
    with pytest.raises(UserError, match="already exists"):
        write_tiny_aan(tmp_path)


def test_aan_accepts_float_labels_and_crlf(tmp_path):
    (tmp_path / "new_aan_pairs.test.tsv").write_bytes(b"1.0\ta\tb\tone text\tother\r\n0\tc\td\tx\ty\r\n")
    assert read_aan(tmp_path, "test") == [(b"one text", b"other", 1), (b"x", b"y", 0)]


def test_aan_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match=r"AAN file not found: .*new_aan_pairs.eval.tsv"):
        read_aan(tmp_path, "val")
    path = tmp_path / "new_aan_pairs.train.tsv"
    path.write_bytes(b"1\ta\tb\tt1\tt2\n0\ta\tb\tonly four\n")
    with pytest.raises(UserError, match=r"new_aan_pairs.train.tsv line 2: expected 5 tab-separated columns"):
        read_aan(tmp_path, "train")
    path.write_bytes(b"yes\ta\tb\tt1\tt2\n")
    with pytest.raises(UserError, match=r"new_aan_pairs.train.tsv line 1: label b'yes' is not 0 or 1"):
        read_aan(tmp_path, "train")
    path.write_bytes(b"2\ta\tb\tt1\tt2\n")
    with pytest.raises(UserError, match=r"line 1: label b'2' is not 0 or 1"):
        read_aan(tmp_path, "train")
    path.write_bytes(b"\n")
    with pytest.raises(UserError, match=r"new_aan_pairs.train.tsv holds no pairs"):
        read_aan(tmp_path, "train")
    with pytest.raises(UserError, match="unknown AAN split 'eval'"):
        read_aan(tmp_path, "eval")


# ---- images --------------------------------------------------------------------------------------

def reference_grey(rgb: np.ndarray) -> np.ndarray:
    """tf.image.rgb_to_grayscale on uint8, restated: float32 x / 255, ITU-R 601 weights, * 255.5, truncate."""
    x = rgb.astype(np.float32) * np.float32(1 / 255)
    w = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
    grey = (x[..., 0] * w[0] + x[..., 1] * w[1]) + x[..., 2] * w[2]
    return (grey * np.float32(255.5)).astype(np.uint8)


def test_grey_is_tensorflows_rgb_to_grayscale():
    corners = torch.tensor([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)
    assert to_grey(corners).tolist() == [0, 255, 76, 149, 29]  # 0.2989*255.5, 0.587*255.5, 0.114*255.5
    rgb = np.random.default_rng(0).integers(0, 256, (4000, 3), dtype=np.uint8)
    assert np.array_equal(to_grey(torch.from_numpy(rgb)).numpy(), reference_grey(rgb))
    exact = (rgb.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140]) * 255.5 / 255)
    assert np.abs(to_grey(torch.from_numpy(rgb)).numpy() - exact).max() < 1.0  # truncation only


def test_tiny_cifar_grey_splits_shapes_and_labels(tmp_path):
    folder = write_tiny_cifar(tmp_path, n=20, seed=0)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    train, train_y = read_cifar_grey(tmp_path, "train")
    val, val_y = read_cifar_grey(tmp_path, "val")
    test, test_y = read_cifar_grey(tmp_path, "test")
    assert train.shape == (90, 32, 32) and val.shape == (10, 32, 32) and test.shape == (20, 32, 32)
    assert train.dtype == torch.uint8 and train_y.dtype == torch.long
    assert test_y.tolist() == [i % 10 for i in range(20)]
    raw = pickle.loads((folder / "data_batch_5").read_bytes())["data"]  # our own test file: plain pickle is fine
    rgb = raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(val.numpy(), reference_grey(rgb[-10:]))  # val: the last 10% of the training images
    with pytest.raises(UserError, match="already exists"):
        write_tiny_cifar(tmp_path)
    with pytest.raises(UserError, match="unknown CIFAR-10 split"):
        read_cifar_grey(tmp_path, "eval")


def test_cifar_errors_name_the_file_and_never_run_code(tmp_path):
    with pytest.raises(UserError, match=r"CIFAR-10 not found: .*cifar-10-batches-py lacks test_batch"):
        read_cifar_grey(tmp_path, "test")
    folder = write_tiny_cifar(tmp_path, n=4)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=r"not a CIFAR-10 batch: .*test_batch"):
        read_cifar_grey(tmp_path, "test")
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}))
    with pytest.raises(UserError, match=r"test_batch holds data uint8 \(2, 5\)"):
        read_cifar_grey(tmp_path, "test")
    (folder / "test_batch").write_bytes(pickle.dumps({"pixels": 1}))
    with pytest.raises(UserError, match=r"test_batch has no 'data' and 'labels'"):
        load_cifar10(tmp_path, train=False)

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Payload(), "labels": []}))
    with pytest.raises(UserError, match=r"test_batch .*refused to load"):
        read_cifar_grey(tmp_path, "test")
    assert not (tmp_path / "ran").exists()


def test_safe_unpickler_reads_python2_era_numpy_names():
    batch = {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": [1, 2]}
    blob = pickle.dumps(batch, protocol=2)
    for new, old in ((b"numpy._core.multiarray", b"numpy.core.multiarray"),):
        blob = blob.replace(new, old)  # the real files (2009) name numpy.core
    loaded = SafeUnpickler(io.BytesIO(blob), encoding="latin1").load()
    assert np.array_equal(loaded["data"], batch["data"]) and loaded["labels"] == [1, 2]


def write_digits(root, split, per_class=2, side=28):
    for digit in range(10):
        folder = root / split / str(digit)
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((side, side), digit * 20 + i, np.uint8), mode="L").save(folder / f"{i:04d}.png")


def test_mnist_seq_reads_the_prepared_imagefolder(tmp_path):
    write_digits(tmp_path, "val")
    images, labels = read_mnist_seq(tmp_path, "val")
    assert images.shape == (20, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [d for d in range(10) for _ in range(2)]
    assert images[5, 0, 0].item() == 2 * 20 + 1


def test_mnist_seq_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match=r"MNIST-5k split not found: .*train .*ssm s4nd prepare mnist"):
        read_mnist_seq(tmp_path, "train")
    write_digits(tmp_path, "test", per_class=1)
    (tmp_path / "test" / "3" / "0001.png").write_bytes(b"junk")
    with pytest.raises(UserError, match=r"not a readable image: .*test/3/0001.png"):
        read_mnist_seq(tmp_path, "test")
    (tmp_path / "test" / "3" / "0001.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "test" / "4" / "0009.png")
    with pytest.raises(UserError, match=r"test/4/0009.png is 32x32"):
        read_mnist_seq(tmp_path, "test")
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError, match=r"val holds no digit images"):
        read_mnist_seq(tmp_path, "val")
