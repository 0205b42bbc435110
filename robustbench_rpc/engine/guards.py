"""Checks that keep wrong results out of the store: non-finite model outputs, datasets with no readable image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from robustbench_rpc.errors import UserError
from robustbench_rpc.results.schema import CellSpec


class UnscorableBatchError(UserError):
    """A batch that cannot be scored (non-finite logits, bad masks): the pass stops and its cells are not stored."""


class NonFiniteOutputError(UnscorableBatchError):
    """The model returned NaN or infinite logits: the cell would hold meaningless predictions."""


class BadMaskError(UnscorableBatchError):
    """A segmentation batch whose masks do not fit its images or classes: its cells would be meaningless."""


class NoReadableImagesError(UserError):
    """Every image of a dataset failed to load: there is nothing to evaluate."""


def check_finite(logits: Tensor, spec: CellSpec, number: int, sample_ids: Sequence[str], what: str = "",
                 classes: Tensor | None = None) -> None:
    """Raise :class:`NonFiniteOutputError` naming the model, the cell and the batch when ``logits`` are not finite.

    ``classes`` (the dataset's class mask, e.g. ImageNet-R's 200) limits the check to the logits that are scored.
    """
    values = logits if classes is None else logits[:, classes.to(logits.device)]
    bad_rows = ~torch.isfinite(values).all(dim=1)
    if not bool(bad_rows.any()):
        return
    rows = bad_rows.nonzero().flatten().tolist()
    first = [str(sample_ids[i]) for i in rows[:3] if i < len(sample_ids)]
    more = f" and {len(rows) - len(first)} more" if len(rows) > len(first) else ""
    kind = f"{what} " if what else ""
    raise NonFiniteOutputError(
        f"Model {spec.model} returned non-finite {kind}logits (NaN or inf) for {len(rows)} of {len(logits)} "
        f"image(s) of batch {number} of {spec.slug()} (e.g. {', '.join(first)}{more}); nothing was stored for "
        "this cell: check the checkpoint and the --mean/--std preprocessing."
    )


def no_readable_images(spec: CellSpec, reasons: Sequence[str], total: int) -> NoReadableImagesError:
    """The error for a dataset of ``total`` files of which none could be read (``reasons``: why they were skipped)."""
    kinds = sorted({reason.split(" (")[0] for reason in reasons})
    why = f" ({'; '.join(kinds[:3])})" if kinds else ""
    return NoReadableImagesError(
        f"None of the {total} image(s) of {spec.dataset} could be read{why}, so {spec.slug()} was not created; "
        "check the folder holds images PIL can open."
    )
