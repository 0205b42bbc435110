"""``digit-scenes``: the embedded segmentation demo set, scikit-learn's handwritten digits composed into scenes.

Each scene is a 64 x 64 RGB image holding 2 to 4 digits on a dark textured, coloured background. The canvas is
split into a 2 x 2 grid of 32 x 32 cells; each digit takes its own cell (so digits never overlap), is upsampled
bilinearly from 8 x 8 to a side of 16 to 24 pixels at a random place inside its cell, and is painted in a bright
colour with its upsampled intensity ``a`` (the 0..16 values / 16) as opacity. The mask labels each pixel:

- ``0`` background; ``1 + d`` for digit d on its stroke pixels (``a >= 0.5``);
- ``255`` (ignored) on the digit's soft rim (``0.2 <= a < 0.5``), where the pixel is a blend of stroke and
  background and either answer is defensible.

So there are 11 classes, named ``"background", "0", ..., "9"``. The train and test scenes draw their digits from
the digits' own fixed train / test split (:func:`robustbench_rpc.data.digits.split_indices`), so no digit image is
in both. Scene ``i`` of a split is a pure function of ``(split, i)`` (a NumPy generator seeded with it), so the
first ``k`` scenes are the same whatever the number built, and building is fast (500 scenes in well under a
second once scikit-learn is imported).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustbench_rpc.data.digits import split_indices
from robustbench_rpc.data.segmentation.source import ResizeRule, SegmentationSource, SegSample, resize_pair
from robustbench_rpc.errors import UserError

#: Side of a scene in pixels, the grid of cells one digit each, and the digit sides drawn.
SCENE_SIZE = 64
CELL = SCENE_SIZE // 2
DIGIT_SIDES = (16, 24)
#: Opacity thresholds: stroke pixels at or above ``STROKE``, the ignored rim at or above ``RIM``.
STROKE = 0.5
RIM = 0.2
SCENE_SEED = 17
DEFAULT_SCENES = {"train": 400, "test": 200}
CLASS_NAMES = ("background", *(str(d) for d in range(10)))
_SPLIT_CODE = {"train": 0, "test": 1}


@dataclass(frozen=True)
class PlacedDigit:
    """One digit of a scene: its class, its position in scikit-learn's array, its box and its colour."""

    digit: int
    source_index: int
    top: int
    left: int
    side: int
    colour: tuple[float, float, float]


def _linear_matrix(size: int, source: int = 8) -> np.ndarray:
    """Return the ``[size, source]`` matrix of 1-D linear upsampling (half-pixel centres, as bilinear resizing)."""
    eye = torch.eye(source, dtype=torch.float64)[None]
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[0].T.numpy()


_UP = {side: _linear_matrix(side) for side in range(DIGIT_SIDES[0], DIGIT_SIDES[1] + 1)}
_UP_BACKGROUND = _linear_matrix(SCENE_SIZE)
_YS, _XS = np.mgrid[0:SCENE_SIZE, 0:SCENE_SIZE] / SCENE_SIZE


def _background(rng: np.random.Generator) -> np.ndarray:
    """Return a dark textured background ``[64, 64, 3]``: colour, gradient, smooth noise, stripes, grain."""
    base = rng.uniform(0.05, 0.3, 3)
    coarse = rng.uniform(-1.0, 1.0, (8, 8, 3))
    smooth = (_UP_BACKGROUND @ coarse.transpose(2, 0, 1) @ _UP_BACKGROUND.T).transpose(1, 2, 0) * 0.07
    ys, xs = _YS, _XS
    gradient = ys[..., None] * rng.uniform(-0.1, 0.1, 3) + xs[..., None] * rng.uniform(-0.1, 0.1, 3)
    angle, frequency, phase = rng.uniform(0, np.pi), rng.uniform(0.2, 0.6), rng.uniform(0, 2 * np.pi)
    wave = np.sin((np.cos(angle) * ys + np.sin(angle) * xs) * SCENE_SIZE * frequency + phase)
    stripes = wave[..., None] * rng.uniform(0.0, 0.06, 3)
    grain = rng.normal(0.0, 0.015, (SCENE_SIZE, SCENE_SIZE, 3))
    return np.clip(base + gradient + smooth + stripes + grain, 0.0, 0.45)


def scene_layout(rng: np.random.Generator, pool: np.ndarray, targets: np.ndarray) -> list[PlacedDigit]:
    """Draw the digits of one scene: 2 to 4 distinct digit images from ``pool``, one grid cell each."""
    count = int(rng.integers(2, 5))
    cells = rng.permutation(4)[:count]
    chosen = rng.choice(len(pool), size=count, replace=False)
    placed = []
    for cell, position in zip(cells, chosen, strict=True):
        side = int(rng.integers(DIGIT_SIDES[0], DIGIT_SIDES[1] + 1))
        top = int(cell // 2) * CELL + int(rng.integers(0, CELL - side + 1))
        left = int(cell % 2) * CELL + int(rng.integers(0, CELL - side + 1))
        colour = rng.uniform(0.55, 1.0, 3)
        colour[int(rng.integers(3))] = 1.0
        source = int(pool[position])
        placed.append(PlacedDigit(int(targets[source]), source, top, left, side, tuple(float(c) for c in colour)))
    return placed


def render_scene(rng: np.random.Generator, layout: list[PlacedDigit],
                 digit_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``layout`` on a background drawn from ``rng``: float32 image ``[64, 64, 3]`` and uint8 mask."""
    image = _background(rng)
    mask = np.zeros((SCENE_SIZE, SCENE_SIZE), dtype=np.uint8)
    for d in layout:
        up = _UP[d.side]
        alpha = np.clip(up @ (digit_images[d.source_index] / 16.0) @ up.T, 0.0, 1.0)
        box = (slice(d.top, d.top + d.side), slice(d.left, d.left + d.side))
        image[box] = image[box] * (1.0 - alpha[..., None]) + np.asarray(d.colour) * alpha[..., None]
        labels = np.where(alpha >= STROKE, 1 + d.digit, np.where(alpha >= RIM, 255, 0)).astype(np.uint8)
        mask[box] = labels
    return image.astype(np.float32), mask


class DigitScenes:
    """The scenes of one split in memory: images float [N, 3, H, W] in [0, 1], masks uint8 [N, H, W]."""

    def __init__(self, split: str, images: Tensor, masks: Tensor, layouts: list[list[PlacedDigit]],
                 resize: ResizeRule) -> None:
        self.split = split
        self.images = images
        self.masks = masks
        self.layouts = layouts
        self.resize = resize
        self.sample_ids = [f"digit-scenes/{split}/{i:04d}" for i in range(len(layouts))]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, index: int) -> SegSample:
        return SegSample(self.images[index], self.masks[index].long(), self.sample_ids[index], index, "ok")

    def limit(self, n: int | None) -> DigitScenes:
        """Return the first ``n`` scenes (all when None)."""
        if n is None:
            return self
        n = max(int(n), 0)
        return DigitScenes(self.split, self.images[:n], self.masks[:n], self.layouts[:n], self.resize)

    def fingerprint(self) -> dict[str, object]:
        """Return name, split, number of scenes, a hash of the pixels and masks, and the image size."""
        digest = hashlib.sha256(self.images.numpy().tobytes() + self.masks.numpy().tobytes()).hexdigest()
        return {"dataset": "digit-scenes", "split": self.split, "num_samples": len(self), "sha256": digest[:16],
                "image_size": f"{self.images.shape[-2]} x {self.images.shape[-1]}",
                "source": "sklearn.datasets.load_digits composed into 64x64 scenes (robustbench_rpc.data.segmentation)"}


def build_digit_scenes(split: str, n: int, resize: ResizeRule | None = None) -> DigitScenes:
    """Build scenes ``0..n-1`` of ``split`` (each a pure function of split and index)."""
    from sklearn.datasets import load_digits

    if split not in _SPLIT_CODE:
        raise UserError(f"digit-scenes has splits 'train' and 'test', not {split!r}.")
    if n < 0:
        raise UserError(f"digit-scenes needs a number of scenes >= 0, not {n}.")
    data = load_digits()
    pool = split_indices(split, data.target)
    images = np.empty((n, 3, SCENE_SIZE, SCENE_SIZE), dtype=np.float32)
    masks = np.empty((n, SCENE_SIZE, SCENE_SIZE), dtype=np.uint8)
    layouts = []
    for i in range(n):
        rng = np.random.default_rng([SCENE_SEED, _SPLIT_CODE[split], i])
        layout = scene_layout(rng, pool, data.target)
        image, mask = render_scene(rng, layout, data.images)
        images[i] = image.transpose(2, 0, 1)
        masks[i] = mask
        layouts.append(layout)
    image_t, mask_t = torch.from_numpy(images), torch.from_numpy(masks)
    resize = resize or ResizeRule()
    size = resize.target(SCENE_SIZE, SCENE_SIZE)
    if n and size != (SCENE_SIZE, SCENE_SIZE):
        pairs = [resize_pair(image_t[i], mask_t[i].long(), size) for i in range(n)]
        image_t = torch.stack([p[0] for p in pairs])
        mask_t = torch.stack([p[1] for p in pairs]).to(torch.uint8)
    return DigitScenes(split, image_t, mask_t, layouts, resize)


def digit_scenes_source(split: str = "test", limit: int | None = None, *, n: int | None = None,
                        image_size: int | None = None) -> SegmentationSource:
    """Return the ``digit-scenes`` split (``n`` scenes, default 400 train / 200 test; first ``limit`` of them)."""
    if split not in _SPLIT_CODE:
        raise UserError(f"digit-scenes has splits 'train' and 'test', not {split!r}.")
    count = DEFAULT_SCENES[split] if n is None else int(n)
    if limit is not None:
        count = min(count, max(int(limit), 0))
    resize = ResizeRule("square", int(image_size)) if image_size else ResizeRule()
    name = "digit-scenes" if split == "test" else f"digit-scenes:{split}"  # the test split is the default
    return SegmentationSource(name, build_digit_scenes(split, count, resize), CLASS_NAMES)
