"""Drawing one Pathfinder image: dashed curvy paths, distractors and two circles.

Our implementation of the generation procedure of Linsley et al. 2018, "Learning long-range
spatial dependencies with horizontal gated recurrent units" (NeurIPS), with the settings that
the Long Range Arena (Tay et al. 2021) documents for its 32, 64 and 128 (Path-X) pixel releases.

A path ("snake") is a chain of short straight dashes ("paddles") of ``paddle_length`` pixels,
separated by gaps of ``2 * margin`` pixels. From the end of one gap the next dash turns by an
angle drawn with weight ``cos^2(continuity * turn)`` (zero beyond ``pi / (2 * continuity)``),
among the directions whose dash stays inside the image and clear of everything drawn so far.
Every path is reserved as a solid tube (dashes and gaps, widened by ``margin``), so two paths
never touch or cross: which circles a path joins is a property of the drawing itself.

One image holds two long target paths of ``contour_length`` dashes whose first ends lie
``seed_distance`` apart near the centre, short distractor paths of ``contour_length // 3``
dashes, and two circles: on both ends of one target path (label 1), or on the first end of
one target and the far end of the other (label 0). Everything is anti-aliased and scaled so
that the brightest pixel is 255.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class PathfinderStyle:
    """The drawing settings of one image size (LRA's documented generator arguments)."""

    size: int
    paddle_length: float  # pixels of one dash
    margin: float  # half the gap between dashes; also the clearance around every path
    thickness: float  # dash width in pixels
    marker_radius: float  # circle radius in pixels
    seed_distance: float  # distance between the first ends of the two target paths
    continuity: float  # larger = straighter paths (the largest turn is pi / (2 continuity))
    distractor_budget: int  # LRA: num_distractor_snakes = budget / distractor_length
    path_contrast: float  # dash brightness relative to the circles (before scaling to 255)
    padding: float = 1.0  # pixels kept free along the border
    margin_choices: tuple[float, ...] = ()  # when set, each image draws its margin from these


#: LRA's generator arguments for the released sizes (lra_benchmarks/data/pathfinder.py docstrings)
STYLES: dict[int, PathfinderStyle] = {
    32: PathfinderStyle(32, paddle_length=2, margin=1, thickness=0.5, marker_radius=1.5, seed_distance=7,
                        continuity=1.0, distractor_budget=20, path_contrast=2 * 0.75),
    64: PathfinderStyle(64, paddle_length=5, margin=1, thickness=1.0, marker_radius=2.5, seed_distance=12,
                        continuity=1.8, distractor_budget=22, path_contrast=0.8),
    128: PathfinderStyle(128, paddle_length=5, margin=2.5, thickness=1.5, marker_radius=3, seed_distance=20,
                         continuity=1.8, distractor_budget=35, path_contrast=0.9, margin_choices=(2, 3)),
    # LRA's 256 builder lists no paddle_length, padding or seed_distance: the generator's defaults (5, 22, 27)
    256: PathfinderStyle(256, paddle_length=5, margin=3, thickness=2.0, marker_radius=5, seed_distance=27,
                         continuity=1.8, distractor_budget=30, path_contrast=1.0, padding=22),
}


def style_for(size: int) -> PathfinderStyle:
    """The released style of ``size`` (32, 64, 128, 256); other sizes scale the 64-pixel style."""
    if size in STYLES:
        return STYLES[size]
    if size < 16:
        raise ValueError(f"Pathfinder images need at least 16 pixels a side, got {size}")
    base, k = STYLES[64], size / 64
    return PathfinderStyle(size, paddle_length=max(2.0, base.paddle_length * k), margin=max(1.0, base.margin * k),
                           thickness=max(0.5, base.thickness * k), marker_radius=max(1.5, base.marker_radius * k),
                           seed_distance=max(5.0, base.seed_distance * k), continuity=base.continuity,
                           distractor_budget=base.distractor_budget, path_contrast=base.path_contrast)


@dataclass
class PathfinderSample:
    """One drawn example.

    image: (S, S) uint8; label: 1 when the circles sit on the two ends of one path.
    paths: the centre lines, one (K, 2) float array of (row, col) points per path, targets first
    (dash k runs from point 2k to point 2k+1; the stretch between is a gap).
    circles: (2, 2) float (row, col) centres. targets: indices in ``paths`` of the two target paths.
    connecting: (S, S) bool, the pixels of the path joining the circles (empty when label is 0).
    long_paths: (S, S) bool, the pixels of both target paths.
    margin: half the gap between dashes in this image.
    """

    image: np.ndarray
    label: int
    paths: list[np.ndarray]
    circles: np.ndarray
    connecting: np.ndarray
    long_paths: np.ndarray
    margin: float


#: headings are whole degrees, like the original generator's orientation sampling
_DEGREES = 360


@lru_cache(maxsize=8)
def _tables(style: PathfinderStyle) -> dict[str, np.ndarray]:
    """Per-style constants: direction vectors, turn candidates and their weights, sample offsets."""
    angles = np.deg2rad(np.arange(_DEGREES))
    directions = np.stack([np.sin(angles), np.cos(angles)], -1)  # (D, 2) as (row, col)
    turn_max = 90.0 / style.continuity  # the weight cos^2(continuity * turn) reaches 0 there
    turns = np.arange(-2 * int(turn_max // 2), 2 * int(turn_max // 2) + 1, 2)
    turns = turns[np.abs(turns) < turn_max]
    tables = {"directions": directions, "turns": turns,
              "turn_weights": np.cos(style.continuity * np.deg2rad(turns)) ** 2,
              "first_turns": np.arange(0, _DEGREES, 3)}
    for name, reach in (("inner", style.paddle_length + 2 * style.margin), ("last", style.paddle_length)):
        offsets = np.append(np.arange(0.5, reach, 0.5), reach)  # every half pixel along dash (and gap)
        tables[name] = offsets[None, :, None] * directions[:, None, :]  # (D, P, 2)
        tables[name + "_reach"] = np.float64(reach)
    return tables


class _Canvas:
    """The reserved area: each pixel holds the id of the path step that reserved it (0: free).

    The grid carries a frame of ``pad`` cells marked -1 (and the ``padding`` border is -1 too),
    so that a point outside the image simply lands on a reserved cell.
    """

    def __init__(self, style: PathfinderStyle):
        self.style = style
        self.pad = int(np.ceil(style.paddle_length + 3 * style.margin + style.thickness)) + 2
        size, pad = style.size, self.pad
        self.owner = np.full((size + 2 * pad, size + 2 * pad), -1, dtype=np.int32)
        edge = int(np.ceil(style.padding + style.thickness / 2 - 0.5))  # first cell a centre line may use
        self.owner[pad + edge:pad + size - edge, pad + edge:pad + size - edge] = 0
        self.next_id = 1
        self.clearance = style.thickness / 2 + style.margin  # tube radius around a centre line

    @property
    def interior(self) -> np.ndarray:
        """(S, S) view of the image's cells."""
        return self.owner[self.pad:-self.pad, self.pad:-self.pad]

    def free(self, points: np.ndarray, allowed: int) -> np.ndarray:
        """points (M, P, 2) -> (M,) bool: every point on a free (or ``allowed``) pixel."""
        cells = (points + (self.pad + 0.5)).astype(np.intp)  # rounding; all positive thanks to the frame
        owners = self.owner[cells[..., 0], cells[..., 1]]  # (M, P)
        return ((owners == 0) | (owners == allowed)).all(axis=1)

    def reserve(self, a: np.ndarray, b: np.ndarray, radius: float) -> int:
        """Mark the free pixels within ``radius`` of segment a-b with a new id, returned."""
        step_id, self.next_id = self.next_id, self.next_id + 1
        lo = np.floor(np.minimum(a, b) - radius).astype(int)
        hi = np.ceil(np.maximum(a, b) + radius).astype(int) + 1
        rows = np.arange(lo[0], hi[0], dtype=float)[:, None] - a[0]
        cols = np.arange(lo[1], hi[1], dtype=float)[None, :] - a[1]
        d_row, d_col = b[0] - a[0], b[1] - a[1]
        length2 = d_row * d_row + d_col * d_col
        t = np.minimum(np.maximum((rows * d_row + cols * d_col) / length2, 0.0), 1.0) if length2 > 0 else 0.0
        near = (rows - t * d_row) ** 2 + (cols - t * d_col) ** 2 <= radius * radius
        pad = self.pad
        window = self.owner[lo[0] + pad:hi[0] + pad, lo[1] + pad:hi[1] + pad]
        window[near & (window == 0)] = step_id
        return step_id

    def release(self, step_id: int) -> None:
        """Free the pixels reserved with ``step_id``."""
        self.owner[self.owner == step_id] = 0


class _Path:
    """A path grown one dash at a time on a canvas, backing up a few dashes at a dead end."""

    def __init__(self, canvas: _Canvas, start: np.ndarray):
        self.canvas = canvas
        self.tables = _tables(canvas.style)
        self.points = [np.asarray(start, dtype=float)]  # dash starts and ends, alternating
        self.headings: list[int] = []  # degrees
        self.ids: list[int] = []

    def step(self, rng: np.random.Generator, last: bool) -> bool:
        """Add one dash (and the gap after it unless ``last``); False at a dead end."""
        tables, canvas = self.tables, self.canvas
        if not self.headings:
            headings = (int(rng.integers(3)) + tables["first_turns"]) % _DEGREES
            weights = np.ones(len(headings))
        else:
            headings = (self.headings[-1] + tables["turns"]) % _DEGREES
            weights = tables["turn_weights"]
        kind = "last" if last else "inner"
        start = self.points[-1]
        samples = start + tables[kind][headings]  # (M, P, 2)
        weights = weights * canvas.free(samples, allowed=self.ids[-1] if self.ids else 0)
        cumulative = np.cumsum(weights)
        if cumulative[-1] <= 0:
            return False
        choice = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(headings) - 1)
        heading = int(headings[choice])
        direction = tables["directions"][heading]
        stop = start + tables[kind + "_reach"] * direction
        self.headings.append(heading)
        self.ids.append(canvas.reserve(start, stop, canvas.clearance))
        end = start + canvas.style.paddle_length * direction
        self.points += [end] if last else [end, stop]
        return True

    def undo(self) -> None:
        """Take the last dash (and its gap) back."""
        self.canvas.release(self.ids.pop())
        self.headings.pop()
        del self.points[-2:]

    @property
    def dashes(self) -> int:
        return len(self.ids)

    def grow(self, rng: np.random.Generator, n_dashes: int, budget: int = 30) -> bool:
        """Grow to ``n_dashes`` dashes; at a dead end back up (further each time), at most ``budget`` times.

        On failure the path's reserved area is freed and False returned.
        """
        failures = 0
        while self.dashes < n_dashes:
            if self.step(rng, last=self.dashes == n_dashes - 1):
                continue
            failures += 1
            if failures > budget:
                while self.dashes:
                    self.undo()
                return False
            for _ in range(min(self.dashes, 1 + failures // 4)):
                self.undo()
        return True

    @property
    def centre_line(self) -> np.ndarray:
        return np.stack(self.points)


def _targets(rng: np.random.Generator, style: PathfinderStyle, contour_length: int,
             tries: int = 200) -> tuple[_Canvas, list[_Path]]:
    """Grow the two target paths from ends ``seed_distance`` apart near the centre; restart on failure."""
    size = style.size
    for _ in range(tries):
        canvas = _Canvas(style)
        band = min(2 * style.seed_distance, size / 2 - 2)  # first ends near the centre, like the original
        first = rng.uniform(band, size - 1 - band, size=2)
        angle = rng.uniform(-np.pi, np.pi)
        second = first + style.seed_distance * np.array([np.sin(angle), np.cos(angle)])
        if not canvas.free(second[None, None], allowed=0)[0]:
            continue
        paths = [_Path(canvas, first), _Path(canvas, second)]
        # reserve the second start so that the first path keeps clear of it
        guard = canvas.reserve(second, second, canvas.clearance)
        if not paths[0].grow(rng, contour_length):
            continue
        canvas.release(guard)
        if paths[1].grow(rng, contour_length):
            return canvas, paths
    raise RuntimeError(f"could not fit two paths of {contour_length} dashes in {size}x{size} pixels")


def draw_sample(rng: np.random.Generator, style: PathfinderStyle, label: int, contour_length: int = 14) -> PathfinderSample:
    """Draw one example with the given label (0 or 1). See the module docstring for the procedure."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label}")
    if style.margin_choices:  # Path-X: the gap between dashes varies from image to image
        style = replace(style, margin=float(rng.choice(style.margin_choices)), margin_choices=())
    canvas, targets = _targets(rng, style, contour_length)
    tips = [(p.points[0], p.points[-1]) for p in targets]
    for start, end in tips:  # keep the four ends clear, so a circle never lands on a distractor
        for tip in (start, end):
            canvas.reserve(tip, tip, style.marker_radius + style.margin)
    distractor_length = max(1, contour_length // 3)
    distractors: list[_Path] = []
    # LRA: num_distractor_snakes = budget / (contour_length / 3), drawn while fewer than that
    for _ in range(int(np.ceil(3 * style.distractor_budget / contour_length))):
        for _attempt in range(5):
            free = np.argwhere(canvas.interior == 0).astype(float)
            if len(free) < 0.01 * style.size ** 2:
                break
            path = _Path(canvas, free[rng.integers(len(free))])
            if path.grow(rng, distractor_length, budget=4):
                distractors.append(path)
                break
    # circles: the first end of one target, and the far end of the same (label 1) or the other target
    first = int(rng.integers(2))
    second = first if label == 1 else 1 - first
    circles = np.stack([tips[first][0], tips[second][1]])
    paths = [p.centre_line for p in targets + distractors]
    image, coverages = render(style, paths, circles)
    long_paths = (coverages[0] > 0.25) | (coverages[1] > 0.25)
    connecting = coverages[first] > 0.25 if label == 1 else np.zeros_like(long_paths)
    return PathfinderSample(image=image, label=label, paths=paths, circles=circles,
                            connecting=connecting, long_paths=long_paths, margin=style.margin)


def _paint_dash(layer: np.ndarray, a: np.ndarray, b: np.ndarray, half_width: float) -> None:
    """layer (S, S) = max(layer, anti-aliased dash a-b): 1 on the line, falling to 0 at ``half_width``."""
    size = layer.shape[0]
    lo = np.maximum(np.floor(np.minimum(a, b) - half_width).astype(int), 0)
    hi = np.minimum(np.ceil(np.maximum(a, b) + half_width).astype(int) + 1, size)
    rows = np.arange(lo[0], hi[0], dtype=float)[:, None] - a[0]
    cols = np.arange(lo[1], hi[1], dtype=float)[None, :] - a[1]
    d_row, d_col = b[0] - a[0], b[1] - a[1]
    length2 = max(d_row * d_row + d_col * d_col, 1e-12)
    t = np.minimum(np.maximum((rows * d_row + cols * d_col) / length2, 0.0), 1.0)
    distance = np.sqrt((rows - t * d_row) ** 2 + (cols - t * d_col) ** 2)
    window = layer[lo[0]:hi[0], lo[1]:hi[1]]
    np.maximum(window, np.minimum(np.maximum(half_width - distance, 0.0), 1.0), out=window)


def render(style: PathfinderStyle, paths: list[np.ndarray], circles: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Paint dashed paths and circles -> (uint8 (S, S) image, per-path (S, S) coverage in [0, 1])."""
    size = style.size
    half_width = style.thickness / 2 + 0.5  # distance at which the anti-aliased edge reaches 0
    coverages = []
    for line in paths:
        layer = np.zeros((size, size))
        for start, end in zip(line[0::2], line[1::2]):  # the dashes
            _paint_dash(layer, start, end, half_width)
        coverages.append(layer)
    painted = style.path_contrast * np.max(np.stack(coverages), axis=0)
    for centre in circles:
        disc = np.zeros((size, size))
        _paint_dash(disc, centre, centre, style.marker_radius + 0.5)
        painted = np.maximum(painted, disc)
    image = np.rint(255 * painted / painted.max()).astype(np.uint8)
    return image, coverages
