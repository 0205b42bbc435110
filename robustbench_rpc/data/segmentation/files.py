"""File-backed segmentation sets: ADE20K (ADEChallengeData2016, validation) and ``segfolder`` (any image/mask tree).

ADE20K: ``PATH/images/validation/*.jpg`` with ``PATH/annotations/validation/<same stem>.png`` (single-channel,
0 = "other", 1..150 = the classes); reduce-zero-label as in the standard protocol: 0 -> 255 (ignored), k -> k - 1,
so the 150 classes are 0..149 (:data:`~robustbench_rpc.data.segmentation.ade20k_classes.ADE20K_CLASSES`).
Evaluation size: the image is resized bilinearly by Segmenter's / mmsegmentation's ADE20K test rule (short side
512, long side at most 2048, aspect ratio kept) and the mask by nearest neighbour to the same size, so metrics are
counted at the evaluation size (the public protocol resizes the prediction back to the original mask instead; the
two differ only on the pixels that nearest-neighbour resizing of the mask moves). ``image_size`` forces a square
size for both (tests, quick runs).

``segfolder``: ``PATH/images/*.{png,jpg,jpeg}``, ``PATH/masks/<same stem>.png`` (palette or L mode, values = class
ids, 255 ignored), ``PATH/classes.txt`` with one class name per line; images keep their size unless ``image_size``.

Building a source reads every listed file once: it hashes the bytes (the fingerprint's content hash), checks that
each mask has its image's size and only labels of the class list (or 255), and raises one
:class:`~robustbench_rpc.errors.UserError` sentence naming the file otherwise, so a run never starts on bad data.
An image or mask that cannot be decoded is no error: the sample is skipped and reported like classification's.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustbench_rpc.data.decode import DecodeError, read_file_bytes, read_image
from robustbench_rpc.data.segmentation.ade20k_classes import ADE20K_CLASSES
from robustbench_rpc.data.segmentation.source import ResizeRule, SegmentationSource, SegSample, resize_pair
from robustbench_rpc.errors import UserError
from robustbench_rpc.metrics.segmentation import IGNORE_INDEX, reduce_zero

ADE20K_LAYOUT = "ADEChallengeData2016 layout (images/validation/*.jpg, annotations/validation/<same stem>.png)"
SEGFOLDER_LAYOUT = "PATH/images/*.{png,jpg,jpeg}, PATH/masks/<same stem>.png and PATH/classes.txt"
SEGFOLDER_IMAGES = (".png", ".jpg", ".jpeg")
#: Mask modes read as class ids (palette indices, 8- or 16-bit grey, 32-bit integers).
MASK_MODES = ("P", "L", "I;16", "I")
#: Segmenter's / mmsegmentation's ADE20K evaluation size: short side 512, long side at most 4 x 512.
ADE20K_RESIZE = ResizeRule("short", 512, 2048)


@dataclass(frozen=True)
class MaskedFile:
    """One (image, mask) pair on disk with its stable id."""

    image: Path
    mask: Path
    sample_id: str


def decode_mask(data: bytes) -> np.ndarray:
    """Decode mask bytes to a 2-D int64 array of its values; raises DecodeError, or ValueError for colour masks."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            mode = img.mode
            if mode not in MASK_MODES:
                raise ValueError(mode)
            img.load()
            return np.array(img).astype(np.int64)
    except UnidentifiedImageError:
        raise DecodeError("unreadable mask (not an image file)") from None
    except (OSError, SyntaxError) as exc:
        raise DecodeError(f"unreadable mask ({exc})") from None


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Return (height, width) from an image's header, or None when it cannot be read (the load reports why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - any unreadable header: the sample is skipped when loaded
        return None
    return height, width


@dataclass
class MaskedFiles:
    """(image, mask) files with their label and resize rules; :meth:`scan` checks them and hashes their bytes."""

    name: str
    root: Path
    files: list[MaskedFile]
    num_classes: int
    resize: ResizeRule
    reduce_zero_label: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    file_digests: list[bytes] = field(default_factory=list)

    @property
    def sample_ids(self) -> list[str]:
        """Return the stable ids (image paths relative to the root), in order."""
        return [f.sample_id for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def labels(self, raw: np.ndarray) -> np.ndarray:
        """Map raw mask values to class ids (reduce-zero-label for ADE20K)."""
        return reduce_zero(raw, IGNORE_INDEX) if self.reduce_zero_label else raw

    def check_values(self, raw: np.ndarray, path: Path) -> None:
        """Raise a UserError naming ``path`` when a raw mask value is not a class id (nor 255)."""
        top = self.num_classes + (1 if self.reduce_zero_label else 0)  # raw values 0..top-1 are labels
        bad = raw[((raw < 0) | (raw >= top)) & (raw != IGNORE_INDEX)]
        if bad.size:
            raise UserError(f"mask {path} has label value {int(bad.flat[0])}, outside the {self.num_classes} classes "
                            f"of {self.name} (raw values 0..{top - 1}, 255 ignored); fix the mask or the class list.")

    def check_size(self, mask: tuple[int, int], image: tuple[int, int] | None, item: MaskedFile) -> None:
        """Raise a UserError naming both files when a mask's size differs from its image's."""
        if image is not None and mask != image:
            raise UserError(f"mask {item.mask} is {mask[1]} x {mask[0]} pixels but its image {item.image} is "
                            f"{image[1]} x {image[0]}; each mask must have its image's size.")

    def scan(self) -> None:
        """Read every file once: hash the bytes, check mask sizes and label values (raises UserError)."""
        self.file_digests = []
        for item in self.files:
            image_bytes, mask_bytes = _read_or_empty(item.image), _read_or_empty(item.mask)
            pair = hashlib.sha256(item.sample_id.encode("utf-8"))
            pair.update(hashlib.sha256(image_bytes).digest() + hashlib.sha256(mask_bytes).digest())
            self.file_digests.append(pair.digest())
            try:
                raw = _decode_checked(mask_bytes, item.mask)
            except DecodeError:
                continue  # skipped, with its reason, when the sample is loaded
            self.check_size(raw.shape, _image_size(image_bytes), item)
            self.check_values(raw, item.mask)

    @property
    def digest(self) -> str:
        """Return the SHA-256 of the scanned files' ids and bytes, in order."""
        return hashlib.sha256(b"".join(self.file_digests)).hexdigest()

    def __getitem__(self, index: int) -> SegSample:
        item = self.files[index]
        try:
            decoded = read_image(item.image)
            raw = _decode_checked(read_file_bytes(item.mask), item.mask)
        except DecodeError as exc:
            return SegSample(None, None, item.sample_id, index, f"skipped:{exc.reason}")
        self.check_size(raw.shape, tuple(decoded.image.shape[-2:]), item)
        self.check_values(raw, item.mask)
        image: Tensor = decoded.image.float().div_(255.0)
        mask = torch.from_numpy(self.labels(raw))
        image, mask = resize_pair(image, mask, self.resize.target(*mask.shape))
        status = "ok" if decoded.converted_from is None else f"converted:{decoded.converted_from}"
        return SegSample(image, mask, item.sample_id, index, status)

    def limit(self, n: int | None) -> MaskedFiles:
        """Return the first ``n`` pairs (all when None), with their own content hash."""
        if n is None:
            return self
        n = max(int(n), 0)
        return MaskedFiles(self.name, self.root, self.files[:n], self.num_classes, self.resize,
                           self.reduce_zero_label, dict(self.info), self.file_digests[:n])

    def fingerprint(self) -> dict[str, Any]:
        """Return name, root, number of samples, content hash of the files and the evaluation size."""
        return {"dataset": self.name, "root": str(self.root), "num_samples": len(self), "sha256": self.digest[:16],
                "image_size": self.resize.describe(), "reduce_zero_label": self.reduce_zero_label, **self.info}


def _read_or_empty(path: Path) -> bytes:
    """Return a file's bytes, or b"" when it cannot be read (the sample is then skipped when loaded)."""
    try:
        return read_file_bytes(path)
    except DecodeError:
        return b""


def _decode_checked(data: bytes, path: Path) -> np.ndarray:
    """Decode a mask, turning a colour mask into a UserError that names the file."""
    if not data:
        raise DecodeError("unreadable mask (empty or missing file)")
    try:
        return decode_mask(data)
    except ValueError as exc:
        raise UserError(f"mask {path} is a {exc} image; expected a single-channel PNG (palette or L mode) whose "
                        f"values are class ids.") from None


def _pair_up(images: Sequence[Path], mask_dir: Path, root: Path) -> list[MaskedFile]:
    """Pair each image with ``mask_dir/<stem>.png``; an image without a mask is a UserError naming it."""
    files = []
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise UserError(f"images {stems[image.stem]} and {image} share the stem {image.stem!r} and so one mask; "
                            f"rename one of them.")
        stems[image.stem] = image
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise UserError(f"image {image} has no mask {mask}; every image needs a mask of the same stem.")
        files.append(MaskedFile(image, mask, image.relative_to(root).as_posix()))
    return files


def _list_images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Return the files of ``folder`` with one of ``extensions`` (any case), sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions),
                  key=lambda p: p.name)


def _resize_rule(image_size: int | None, default: ResizeRule) -> ResizeRule:
    if image_size is None:
        return default
    if int(image_size) < 1:
        raise UserError(f"image_size must be a positive number of pixels, not {image_size}.")
    return ResizeRule("square", int(image_size))


def ade20k_source(path: str | Path, *, limit: int | None = None, image_size: int | None = None) -> SegmentationSource:
    """Return ADE20K's validation split at ``path`` (ADEChallengeData2016), 150 classes, reduce-zero-label."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"ADE20K folder {root} does not exist; expected the {ADE20K_LAYOUT}.")
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    for sub in ("images/validation", "annotations/validation"):
        if not (root / sub).is_dir():
            raise UserError(f"{root} has no {sub} folder; expected the {ADE20K_LAYOUT}.")
    images = _list_images(root / "images" / "validation", (".jpg", ".jpeg"))
    if not images:
        raise UserError(f"{root / 'images' / 'validation'} holds no .jpg images; expected the {ADE20K_LAYOUT}.")
    if limit is not None:
        images = images[: max(int(limit), 0)]
    files = _pair_up(images, root / "annotations" / "validation", root)
    items = MaskedFiles("ade20k", root, files, len(ADE20K_CLASSES), _resize_rule(image_size, ADE20K_RESIZE),
                        reduce_zero_label=True, info={"split": "validation"})
    items.scan()
    return SegmentationSource("ade20k", items, ADE20K_CLASSES, per_image=image_size is None)


def read_class_list(path: Path) -> list[str]:
    """Read ``classes.txt``: one class name per non-empty line (at most 255 classes: 255 is the ignore label)."""
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"class list {path} cannot be read ({exc}); expected one class name per line.") from None
    if not names:
        raise UserError(f"class list {path} is empty; expected one class name per line.")
    if len(names) > IGNORE_INDEX:
        raise UserError(f"class list {path} has {len(names)} classes; at most {IGNORE_INDEX} fit, as 255 means "
                        f"ignored.")
    return names


def segfolder_source(path: str | Path, *, limit: int | None = None,
                     image_size: int | None = None) -> SegmentationSource:
    """Return the (image, mask) folder at ``path``: images/, masks/ (same stems, .png) and classes.txt."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"segmentation folder {root} does not exist; expected {SEGFOLDER_LAYOUT}.")
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise UserError(f"{root} has no {sub} folder; expected {SEGFOLDER_LAYOUT}.")
    if not (root / "classes.txt").is_file():
        raise UserError(f"{root} has no classes.txt; expected {SEGFOLDER_LAYOUT}.")
    class_names = read_class_list(root / "classes.txt")
    images = _list_images(root / "images", SEGFOLDER_IMAGES)
    if not images:
        raise UserError(f"{root / 'images'} holds no .png, .jpg or .jpeg images; expected {SEGFOLDER_LAYOUT}.")
    if limit is not None:
        images = images[: max(int(limit), 0)]
    files = _pair_up(images, root / "masks", root)
    items = MaskedFiles("segfolder", root, files, len(class_names), _resize_rule(image_size, ResizeRule()),
                        info={"classes_sha256": hashlib.sha256("\n".join(class_names).encode()).hexdigest()[:16]})
    items.scan()
    return SegmentationSource(f"segfolder:{root.name}", items, class_names, per_image=image_size is None)
