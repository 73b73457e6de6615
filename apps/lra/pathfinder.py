"""Pathfinder for the Long Range Arena, and DLR's PathfinderSegmentation, in the released layout.

Pathfinder (Linsley et al. 2018; LRA, Tay et al. 2021): is there a path joining the two circles?
The images are drawn by :mod:`apps.lra.pathfinder_draw` (our implementation of the published
procedure, with LRA's settings for 32, 64 and 128 = Path-X pixels) and written like the LRA
release, so the same reader loads the real data and ours::

    pathfinder{size}/curv_contour_length_14/
        imgs/<batch>/sample_<j>.png        grey uint8, size x size, 1000 images per batch folder
        metadata/<batch>.npy               text (despite the name), one row per image, as the original
                                           generator's: "imgs/<batch> sample_<j>.png <j> <label> <continuity>
                                           <contour_length> <distractor_length> <paddle_length>
                                           <paddle_thickness> <margin> <number of dash contrasts>";
                                           the label is column 3, where LRA's input pipeline reads it
        masks/<batch>/sample_<j>.png       0/255: the path joining the two circles (empty for label 0)
        long_paths/<batch>/sample_<j>.png  0/255: both long target paths

PathfinderSegmentation (Gupta, Mehta & Berant 2022, "Simplifying and understanding state space
models with diagonal linear RNNs", DLR) labels every pixel with one of three classes: 2 on the
path joining the circles, 1 on a long target path that does not join them, 0 elsewhere
(distractors, circles and background). A negative image (label 0) therefore has no class-2
pixel. :func:`segmentation_target` rebuilds these classes from ``masks`` and ``long_paths``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from apps.common.errors import UserError
from apps.common.io import atomic_dir, atomic_write
from apps.lra.pathfinder_draw import draw_sample, style_for

#: the LRA task: contour length 14 (the hardest-but-one difficulty of the original generator)
DIFFICULTY = "curv_contour_length_14"
#: images per batch folder, like the release
BATCH = 1000
_NUMPY_MAGIC = b"\x93NUMPY"


def generate_pathfinder(out: Path, *, size: int = 32, n: int = 20000, seed: int = 0, contour_length: int = 14,
                        masks: bool = True, progress: bool = True) -> Path:
    """Draw ``n`` Pathfinder images of ``size`` pixels into ``out/pathfinder{size}/curv_contour_length_{L}``.

    Labels are exactly balanced (a seeded permutation) and every image is drawn from its own seed
    ``(seed, index)``, so a dataset is the same whatever the machine. With ``masks`` the
    PathfinderSegmentation masks are written too (see the module docstring). Everything is written
    in a temporary sibling folder that is renamed into place at the end; an existing non-empty
    folder is refused. Returns the ``curv_contour_length_{L}`` folder.
    """
    from PIL import Image
    from rich.progress import Progress

    if size < 16:
        raise UserError(f"Pathfinder size {size} is too small; use 32, 64 or 128 (at least 16)")
    if n < 1:
        raise UserError(f"Pathfinder n={n}: ask for at least one image")
    if contour_length < 3:
        raise UserError(f"Pathfinder contour_length={contour_length}: use at least 3 (LRA uses 14)")
    style = style_for(size)
    target = Path(out) / f"pathfinder{size}" / f"curv_contour_length_{contour_length}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} already exists and is not empty; choose another output folder "
                        "(generation never overwrites files)")
    labels = np.random.default_rng([seed, 2**32 - 1]).permutation(n) % 2  # exactly balanced
    distractor_length = max(1, contour_length // 3)
    settings = f"{style.continuity} {contour_length} {distractor_length} {style.paddle_length} {style.thickness}"
    with atomic_dir(target) as build, Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task(f"pathfinder{size} ({n} images)", total=n)
        for batch in range(math.ceil(n / BATCH)):
            folders = {"imgs": build / "imgs" / str(batch)}
            if masks:
                folders.update(masks=build / "masks" / str(batch), long_paths=build / "long_paths" / str(batch))
            for folder in folders.values():
                folder.mkdir(parents=True)
            rows = []
            for j in range(min(BATCH, n - batch * BATCH)):
                index = batch * BATCH + j
                try:
                    sample = draw_sample(np.random.default_rng([seed, index]), style, int(labels[index]),
                                         contour_length)
                except RuntimeError as error:  # the paths do not fit in the image
                    raise UserError(f"Pathfinder size {size}: {error}; use a shorter contour_length "
                                    "or a larger size") from None
                name = f"sample_{j}.png"
                Image.fromarray(sample.image).save(folders["imgs"] / name)
                if masks:
                    Image.fromarray(sample.connecting.astype(np.uint8) * 255).save(folders["masks"] / name)
                    Image.fromarray(sample.long_paths.astype(np.uint8) * 255).save(
                        folders["long_paths"] / name)
                rows.append(f"imgs/{batch} {name} {j} {sample.label} {settings} {sample.margin:g} 1\n")
                bar.advance(task)
            metadata = build / "metadata" / f"{batch}.npy"
            metadata.parent.mkdir(exist_ok=True)
            metadata.write_text("".join(rows))
    return target


def _pathfinder_folder(root: Path, size: int) -> Path:
    root = Path(root)
    folder = root if root.name == f"pathfinder{size}" else root / f"pathfinder{size}"
    if folder.is_dir():
        return folder
    if root.name.startswith("pathfinder") and root.is_dir():
        raise UserError(f"{root} holds {root.name}, not pathfinder{size}: pass the size of that folder "
                        f"or the folder that holds pathfinder{size}")
    raise UserError(f"{folder} not found: the Pathfinder data of size {size} is missing; "
                    f"run `ssm lra prepare` or point the data root at the folder holding pathfinder{size}")


def _metadata_rows(path: Path) -> list[list[str]]:
    """Rows of one metadata file: LRA's text rows, or a NumPy array of strings (the generator's np.save)."""
    raw = path.read_bytes()
    if raw.startswith(_NUMPY_MAGIC):
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise UserError(f"{path}: unreadable metadata array ({error}); regenerate or re-download it") from None
        return [[str(v) for v in np.atleast_1d(row)] for row in np.atleast_2d(array)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: metadata is neither text rows nor a NumPy array; "
                        "regenerate or re-download it") from None
    return [line.split() for line in text.splitlines() if line.strip()]


def _batch_key(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 62, path.stem)


def read_pathfinder(root: Path, size: int, difficulty: str = DIFFICULTY) -> list[tuple[Path, int]]:
    """Read the metadata of ``pathfinder{size}/{difficulty}`` -> [(image path, label 0/1)], in batch order.

    ``root`` is the folder holding ``pathfinder{size}``, or that folder itself. Reads LRA's release
    and :func:`generate_pathfinder`'s output alike. Every listed image must exist, and the first image
    of each metadata file must be ``size`` x ``size``; otherwise a UserError names the file. Empty
    (zero-byte) images, which the LRA release contains a few of, are left out as LRA's pipeline does.
    """
    from PIL import Image

    contour = _pathfinder_folder(root, size) / difficulty
    metadata = contour / "metadata"
    files = sorted(metadata.glob("*.npy"), key=_batch_key) if metadata.is_dir() else []
    if not files:
        raise UserError(f"{metadata} has no metadata/*.npy files: the Pathfinder {difficulty} data is incomplete; "
                        "run `ssm lra prepare` again or re-download the LRA release")
    samples: list[tuple[Path, int]] = []
    for file in files:
        for number, row in enumerate(_metadata_rows(file), start=1):
            if len(row) < 4 or row[3] not in ("0", "1"):
                raise UserError(f"{file} row {number}: expected 'imgs/<batch> sample_<j>.png <j> <label 0/1> ...', "
                                f"got {' '.join(row)[:80]!r}; regenerate or re-download the metadata")
            image = contour / row[0] / row[1]
            try:
                if image.stat().st_size == 0:
                    continue  # the LRA release holds a few empty PNGs; its input pipeline skips them too
            except OSError:
                raise UserError(f"{file} row {number} lists {image}, which does not exist; "
                                "restore the image or regenerate the data") from None
            if len(samples) == 0 or samples[-1][0].parent != image.parent:
                with Image.open(image) as opened:
                    if opened.size != (size, size):
                        raise UserError(f"{image} is {opened.size[0]}x{opened.size[1]}, not {size}x{size}: "
                                        f"pass size={opened.size[0]} or use the pathfinder{size} data")
            samples.append((image, int(row[3])))
    return samples


def read_segmentation(root: Path, size: int, difficulty: str = DIFFICULTY) -> list[tuple[Path, Path]]:
    """[(image path, mask path)] of PathfinderSegmentation; the masks mark the joining path (0/255).

    See :func:`segmentation_target` for DLR's three per-pixel classes.
    """
    samples = read_pathfinder(root, size, difficulty)
    contour = _pathfinder_folder(root, size) / difficulty
    if not (contour / "masks").is_dir():
        raise UserError(f"{contour / 'masks'} not found: this Pathfinder data has no segmentation masks; "
                        "generate it with masks (`ssm lra prepare`, the default)")
    pairs = []
    for image, _label in samples:
        mask = contour / "masks" / image.relative_to(contour / "imgs")
        if not mask.is_file():
            raise UserError(f"{mask} not found (the mask of {image}); regenerate the Pathfinder data with masks")
        pairs.append((image, mask))
    return pairs


def segmentation_target(mask_path: Path) -> np.ndarray:
    """DLR's per-pixel classes of one image -> (H, W) int64: 2 joining path, 1 other long path, 0 elsewhere.

    Reads ``masks/<batch>/sample_<j>.png`` and its sibling ``long_paths/<batch>/sample_<j>.png``.
    """
    mask_path = Path(mask_path)
    long_path = mask_path.parents[2] / "long_paths" / mask_path.parent.name / mask_path.name
    if not long_path.is_file():
        raise UserError(f"{long_path} not found (the long paths beside {mask_path}); "
                        "regenerate the Pathfinder data with masks")
    joining, long_paths = load_png(mask_path) > 127, load_png(long_path) > 127
    return np.where(joining, 2, np.where(long_paths, 1, 0)).astype(np.int64)


def load_png(path: Path) -> np.ndarray:
    """A PNG as a grey (H, W) uint8 array (colour images are converted to grey)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise UserError(f"{path} not found; restore it or regenerate the Pathfinder data") from None
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path} is not a readable PNG ({error}); restore it or regenerate the data") from None


def grid_png(root: Path, size: int, out_png: Path, n: int = 16, difficulty: str = DIFFICULTY) -> Path:
    """Write a grid of ``n`` examples (half of each label) with their labels, to check the data by eye.

    When masks exist a second group of rows shows the same images with the joining path in red
    and the other long path in blue. Returns ``out_png``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples = read_pathfinder(root, size, difficulty)
    by_label = {label: [s for s in samples if s[1] == label] for label in (0, 1)}
    chosen = [s for pair in zip(by_label[1], by_label[0]) for s in pair][:n] or samples[:n]
    contour = _pathfinder_folder(root, size) / difficulty
    with_masks = (contour / "masks").is_dir() and (contour / "long_paths").is_dir()
    cols = min(8, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    figure = Figure(figsize=(1.6 * cols, 0.6 + 1.9 * rows * (2 if with_masks else 1)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows * (2 if with_masks else 1), cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (image_path, label) in enumerate(chosen):
        image = load_png(image_path)
        ax = axes[k // cols, k % cols]
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{label}: {'joined' if label else 'apart'}", fontsize=8)
        if with_masks:
            classes = segmentation_target(contour / "masks" / image_path.relative_to(contour / "imgs"))
            overlay = np.stack([image] * 3, -1) // 3
            overlay[classes == 2] = (255, 40, 40)
            overlay[classes == 1] = (60, 120, 255)
            ax = axes[rows + k // cols, k % cols]
            ax.imshow(overlay, interpolation="nearest")
            ax.set_title(f"{label}: mask", fontsize=8)
    figure.suptitle(f"pathfinder{size}/{difficulty}" + ("  (rows below: red joining path, blue other long path)"
                                                         if with_masks else ""), fontsize=9)
    figure.tight_layout()
    atomic_write(out_png, lambda f: figure.savefig(f, format="png", dpi=100))
    return Path(out_png)
