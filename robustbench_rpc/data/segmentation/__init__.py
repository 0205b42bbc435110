"""Segmentation datasets: (image, mask) samples in canonical batches for the engine's segmentation task.

Three kinds, named by a spec (:func:`load_segmentation_source`):

- ``digit-scenes`` (or ``digit-scenes:train`` / ``digit-scenes:test``, default test): the embedded demo set,
  scikit-learn's handwritten digits composed into 64 x 64 scenes, 11 classes (:mod:`.scenes`);
- ``ade20k:PATH``: ADE20K's validation split in the ADEChallengeData2016 layout, 150 classes, reduce-zero-label,
  resized to Segmenter's evaluation size (short side 512) with the mask resized by nearest neighbour (:mod:`.files`);
- ``segfolder:PATH``: any ``images/``, ``masks/``, ``classes.txt`` tree (:mod:`.files`).

Every source is a :class:`SegmentationSource` whose batches carry ``images`` float [B, 3, H, W] in [0, 1] and
``masks`` long [B, H, W] (255 = ignored); samples of different sizes in one batch are padded with ignored pixels.
"""

from __future__ import annotations

from robustbench_rpc.data.segmentation.ade20k_classes import ADE20K_CLASSES
from robustbench_rpc.data.segmentation.files import (
    ADE20K_LAYOUT,
    ADE20K_RESIZE,
    SEGFOLDER_LAYOUT,
    ade20k_source,
    segfolder_source,
)
from robustbench_rpc.data.segmentation.scenes import CLASS_NAMES as DIGIT_SCENE_CLASSES
from robustbench_rpc.data.segmentation.scenes import digit_scenes_source
from robustbench_rpc.data.segmentation.source import ResizeRule, SegmentationSource, SegSample, collate_segmentation
from robustbench_rpc.errors import UserError, did_you_mean

#: Segmentation dataset kinds and the spec / layout each expects (for help texts and error messages).
SEGMENTATION_DATASETS: dict[str, str] = {
    "digit-scenes": "digit-scenes[:train|:test] (embedded: scikit-learn digits composed into 64x64 scenes)",
    "ade20k": f"ade20k:PATH, PATH in the {ADE20K_LAYOUT}",
    "segfolder": f"segfolder:PATH, {SEGFOLDER_LAYOUT}",
}


def load_segmentation_source(spec: str, *, limit: int | None = None,
                             image_size: int | None = None) -> SegmentationSource:
    """Return the source named by ``spec``: ``digit-scenes[:split]``, ``ade20k:PATH`` or ``segfolder:PATH``."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "digit-scenes":
        return digit_scenes_source(rest or "test", limit, image_size=image_size)
    if kind in ("ade20k", "segfolder"):
        if not rest:
            raise UserError(f"segmentation dataset {spec!r} needs a folder: {SEGMENTATION_DATASETS[kind]}.")
        build = ade20k_source if kind == "ade20k" else segfolder_source
        return build(rest, limit=limit, image_size=image_size)
    raise UserError(f"unknown segmentation dataset {spec!r}; expected one of "
                    f"{'; '.join(SEGMENTATION_DATASETS.values())}{did_you_mean(kind, SEGMENTATION_DATASETS)}.")


__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_LAYOUT",
    "ADE20K_RESIZE",
    "DIGIT_SCENE_CLASSES",
    "SEGFOLDER_LAYOUT",
    "SEGMENTATION_DATASETS",
    "ResizeRule",
    "SegSample",
    "SegmentationSource",
    "ade20k_source",
    "collate_segmentation",
    "digit_scenes_source",
    "load_segmentation_source",
    "segfolder_source",
]
