"""Pathfinder (LRA) and PathfinderSegmentation (DLR): layout, determinism, labels checked by flood fill, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from apps.common.errors import UserError
from apps.lra import pathfinder
from apps.lra.pathfinder import (
    generate_pathfinder,
    grid_png,
    load_png,
    read_pathfinder,
    read_segmentation,
    segmentation_target,
)
from apps.lra.pathfinder_draw import draw_sample, style_for

N = 24
SEED = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pf")
    generate_pathfinder(root, size=32, n=N, seed=SEED, progress=False)
    return root


def lra_reader(contour: Path) -> list[tuple[Path, int]]:
    """LRA's input pipeline, rewritten here: metadata/*.npy are text rows, image = row[0]/row[1], label = row[3]."""
    rows = []
    for meta in sorted((contour / "metadata").glob("*.npy"), key=lambda p: int(p.stem)):
        for line in meta.read_text().split("\n")[:-1]:
            fields = line.split(" ")
            rows.append((contour / fields[0] / fields[1], int(fields[3])))
    return rows


def test_layout_as_released_and_read_back(data):
    contour = data / "pathfinder32" / "curv_contour_length_14"
    assert sorted(p.name for p in contour.iterdir()) == ["imgs", "long_paths", "masks", "metadata"]
    assert sorted(p.name for p in (contour / "imgs" / "0").iterdir()) == sorted(f"sample_{j}.png" for j in range(N))
    first = (contour / "metadata" / "0.npy").read_text().splitlines()[0].split(" ")
    assert first[:3] == ["imgs/0", "sample_0.png", "0"] and first[3] in ("0", "1")
    samples = read_pathfinder(data, 32)
    assert samples == lra_reader(contour) == read_pathfinder(data / "pathfinder32", 32)
    labels = [label for _, label in samples]
    assert sum(labels) == N // 2  # exactly balanced
    image = load_png(samples[0][0])
    assert image.dtype == np.uint8 and image.shape == (32, 32) and image.max() == 255
    assert [i for i, _ in read_segmentation(data, 32)] == [i for i, _ in samples]


def test_batches_of_the_release(tmp_path, monkeypatch):
    monkeypatch.setattr(pathfinder, "BATCH", 4)
    contour = generate_pathfinder(tmp_path, size=32, n=10, seed=1, masks=False, progress=False)
    assert sorted(p.name for p in (contour / "metadata").iterdir()) == ["0.npy", "1.npy", "2.npy"]
    assert [len(list((contour / "imgs" / b).iterdir())) for b in "012"] == [4, 4, 2]
    samples = read_pathfinder(tmp_path, 32)
    assert [(p.parent.name, p.name) for p, _ in samples][4] == ("1", "sample_0.png")
    assert not (contour / "masks").exists()
    assert not [p for p in contour.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_deterministic_from_seed(data, tmp_path):
    again = generate_pathfinder(tmp_path / "a", size=32, n=N, seed=SEED, progress=False)
    other = generate_pathfinder(tmp_path / "b", size=32, n=4, seed=SEED + 1, masks=False, progress=False)
    contour = data / "pathfinder32" / "curv_contour_length_14"
    for path in sorted(contour.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (again / path.relative_to(contour)).read_bytes(), path
    assert (contour / "imgs/0/sample_0.png").read_bytes() != (other / "imgs/0/sample_0.png").read_bytes()
    # each image is drawn from its own seed (seed, index): the file on disk is that drawing
    label = read_pathfinder(data, 32)[7][1]
    sample = draw_sample(np.random.default_rng([SEED, 7]), style_for(32), label)
    assert np.array_equal(load_png(contour / "imgs/0/sample_7.png"), sample.image)


def solid_lines(paths: list[np.ndarray], size: int, scale: int = 4) -> np.ndarray:
    """The centre lines, dashes and gaps alike, rasterised on a grid ``scale`` times finer."""
    canvas = np.zeros((size * scale, size * scale), dtype=bool)
    for line in paths:
        for a, b in zip(line[:-1], line[1:]):
            t = np.linspace(0.0, 1.0, int(np.linalg.norm(b - a) * scale * 4) + 2)[:, None]
            cells = np.rint((a + t * (b - a)) * scale).astype(int)
            canvas[cells[:, 0], cells[:, 1]] = True
    return canvas


def distance_to_dashes(paths: list[np.ndarray], size: int) -> np.ndarray:
    """(S, S) distance from each pixel centre to the nearest dash (points 2k to 2k+1 of a path)."""
    grid = np.stack(np.mgrid[0:size, 0:size], -1).astype(float)[:, :, None, :]
    starts = np.concatenate([p[0::2] for p in paths])
    ends = np.concatenate([p[1::2] for p in paths])
    ab, ap = ends - starts, grid - starts
    t = np.clip((ap * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    return np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(-1)


@pytest.mark.parametrize("size,count", [(32, 30), (64, 4), (128, 2)])
def test_label_is_connectivity_by_flood_fill(size, count):
    style = style_for(size)
    for index in range(count):
        label = index % 2
        sample = draw_sample(np.random.default_rng([11, index]), style, label)
        assert sample.label == label and len(sample.paths) >= 2
        # the drawing is what the image shows: bright only near a dash or a circle, every dash and circle visible
        near_dash = distance_to_dashes(sample.paths, size) <= style.thickness / 2 + 0.5
        grid = np.stack(np.mgrid[0:size, 0:size], -1).astype(float)
        near_circle = np.zeros((size, size), dtype=bool)
        for centre in sample.circles:
            near_circle |= np.linalg.norm(grid - centre, axis=-1) <= style.marker_radius + 0.5
            assert sample.image[tuple(np.rint(centre).astype(int))] >= 150
        assert not (sample.image[~(near_dash | near_circle)]).any()
        for line in sample.paths:
            for a, b in zip(line[0::2], line[1::2]):
                assert sample.image[tuple(np.rint((a + b) / 2).astype(int))] > 0
        # flood fill over all paths (gaps bridged): the circles share a component exactly when label is 1
        components, _ = ndimage.label(solid_lines(sample.paths, size), structure=np.ones((3, 3)))
        at = [components[tuple(np.rint(c * 4).astype(int))] for c in sample.circles]
        assert at[0] > 0 and at[1] > 0
        assert (at[0] == at[1]) == bool(label), (size, index, label)


def test_masks_mark_the_joining_path(data):
    style = style_for(32)
    contour = data / "pathfinder32" / "curv_contour_length_14"
    grid = np.stack(np.mgrid[0:32, 0:32], -1).astype(float)
    for index, ((image_path, label), (_, mask_path)) in enumerate(zip(read_pathfinder(data, 32),
                                                                      read_segmentation(data, 32))):
        image, mask = load_png(image_path), load_png(mask_path)
        long_paths = load_png(contour / "long_paths" / mask_path.parent.name / mask_path.name)
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(long_paths)) <= {0, 255}
        assert (image[mask > 0] > 0).all() and (image[long_paths > 0] > 0).all()  # only on drawn pixels
        assert ((long_paths > 0) | (mask == 0)).all()
        classes = segmentation_target(mask_path)
        assert np.array_equal(classes == 2, mask > 0) and np.array_equal(classes >= 1, long_paths > 0)
        if label == 0:
            assert not mask.any() and long_paths.any()
            continue
        # a positive mask, its dash gaps closed, joins both circle centres
        circles = draw_sample(np.random.default_rng([SEED, index]), style, label).circles
        closed = ndimage.binary_dilation(mask > 0, iterations=int(np.ceil(style.margin)) + 1)
        for centre in circles:
            closed |= np.linalg.norm(grid - centre, axis=-1) <= style.marker_radius
        components, _ = ndimage.label(closed, structure=np.ones((3, 3)))
        a, b = (components[tuple(np.rint(c).astype(int))] for c in circles)
        assert a == b > 0


def test_grid_png(data, tmp_path):
    out = grid_png(data, 32, tmp_path / "grid.png", n=4)
    with Image.open(out) as image:
        assert image.size[0] > 100 and image.size[1] > 100


def test_npy_metadata_of_the_original_generator_is_read(data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data, root)
    contour = root / "pathfinder32" / "curv_contour_length_14"
    rows = [line.split(" ") for line in (contour / "metadata" / "0.npy").read_text().splitlines()]
    np.save(contour / "metadata" / "0.npy", np.array(rows))  # a string array, as np.save writes it
    assert [(p.relative_to(root), y) for p, y in read_pathfinder(root, 32)] == \
        [(p.relative_to(data), y) for p, y in read_pathfinder(data, 32)]


def test_empty_images_of_the_release_are_skipped(data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data, root)
    (root / "pathfinder32/curv_contour_length_14/imgs/0/sample_2.png").write_bytes(b"")
    names = [p.name for p, _ in read_pathfinder(root, 32)]
    assert len(names) == N - 1 and "sample_2.png" not in names


def test_errors(data, tmp_path):
    with pytest.raises(UserError, match="pathfinder32 not found"):
        read_pathfinder(tmp_path, 32)
    with pytest.raises(UserError, match="holds pathfinder32, not pathfinder64"):
        read_pathfinder(data / "pathfinder32", 64)
    with pytest.raises(UserError, match="not empty"):
        generate_pathfinder(data, size=32, n=2, progress=False)
    with pytest.raises(UserError, match="too small"):
        generate_pathfinder(tmp_path, size=8, n=2, progress=False)
    with pytest.raises(UserError, match="use a shorter contour_length"):
        generate_pathfinder(tmp_path / "long", size=16, n=1, contour_length=60, masks=False, progress=False)
    assert not list((tmp_path / "long" / "pathfinder16").iterdir())  # the temporary folder is gone

    root = tmp_path / "copy"
    shutil.copytree(data, root)
    contour = root / "pathfinder32" / "curv_contour_length_14"
    (contour / "imgs/0/sample_3.png").unlink()
    with pytest.raises(UserError, match=r"row 4 lists .*sample_3.png, which does not exist"):
        read_pathfinder(root, 32)
    metadata = contour / "metadata" / "0.npy"
    metadata.write_text("imgs/0 sample_0.png 0 x\n")
    with pytest.raises(UserError, match="0.npy row 1: expected"):
        read_pathfinder(root, 32)
    metadata.unlink()
    with pytest.raises(UserError, match="no metadata"):
        read_pathfinder(root, 32)

    shutil.rmtree(root)
    shutil.copytree(data, root)
    (contour / "masks/0/sample_5.png").unlink()
    with pytest.raises(UserError, match=r"sample_5.png not found \(the mask of"):
        read_segmentation(root, 32)
    shutil.rmtree(contour / "long_paths")
    with pytest.raises(UserError, match="long_paths.*not found"):
        segmentation_target(contour / "masks/0/sample_0.png")
    shutil.rmtree(contour / "masks")
    with pytest.raises(UserError, match="no segmentation masks"):
        read_segmentation(root, 32)
    # a 64-pixel image under pathfinder32
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(contour / "imgs/0/sample_0.png")
    with pytest.raises(UserError, match="is 64x64, not 32x32"):
        read_pathfinder(root, 32)

    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    with pytest.raises(UserError, match="not a readable PNG"):
        load_png(bad)
    with pytest.raises(UserError, match="not found"):
        load_png(tmp_path / "missing.png")
