"""Attacks on segmentation models: FGSM, PGD and SegPGD under an Linf budget in pixel space.

The model maps images in [0, 1] to per-pixel logits ``[B, C, H, W]``; the loss is the per-pixel cross-entropy
averaged over the pixels whose label is not ``ignore_index`` (ignored pixels have no influence at all).

- ``fgsm``: one step of ``eps * sign(grad)`` from the clean images (no random start);
- ``pgd``: ``steps`` (default 10) signed-gradient steps of ``step_size`` (default ``eps / 4``), each projected
  onto the Linf ball and [0, 1], from a uniform random start in the ball unless ``random_start=False``;
- ``segpgd`` (Gu, Rao, Torr, Tang, "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating and
  Boosting Segmentation Robustness", ECCV 2022): PGD whose loss at step t = 1..T splits the pixels by the current
  prediction, ``L_t = (1 - lambda_t) / N * sum_{correct} CE + lambda_t / N * sum_{wrong} CE`` with
  ``lambda_t = (t - 1) / (2T)`` and N the number of labelled pixels: the first steps push the pixels still
  classified correctly, later ones keep the wrongly classified pixels wrong too.

The returned images are verified: within ``eps`` of the clean images (Linf, float tolerance) and in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_rpc.attacks.budgets import check_budget, validate_eps
from robustbench_rpc.errors import UserError

#: The segmentation attacks by name.
SEGMENTATION_ATTACKS = ("pgd", "fgsm", "segpgd")
#: PGD / SegPGD steps when none are given.
DEFAULT_STEPS = 10


def pixel_cross_entropy(logits: Tensor, masks: Tensor, ignore_index: int = 255) -> Tensor:
    """Return the per-pixel cross-entropy ``[B, H, W]`` (0 on ignored pixels)."""
    return F.cross_entropy(logits, masks, ignore_index=ignore_index, reduction="none")


def segpgd_lambda(step: int, steps: int) -> float:
    """SegPGD's weight of the wrongly classified pixels at step ``step`` (1-based) of ``steps``: (t - 1) / (2T)."""
    return (step - 1) / (2 * steps)


def segmentation_loss(logits: Tensor, masks: Tensor, ignore_index: int = 255, segpgd_weight: float | None = None
                      ) -> Tensor:
    """Mean per-pixel cross-entropy over the labelled pixels, or SegPGD's weighted sum with ``segpgd_weight``."""
    ce = pixel_cross_entropy(logits, masks, ignore_index)
    valid = masks != ignore_index
    count = valid.sum().clamp_min(1)
    if segpgd_weight is None:
        return ce.sum() / count
    correct = (logits.argmax(dim=1) == masks) & valid
    wrong = valid & ~correct
    lam = float(segpgd_weight)
    return ((1 - lam) * (ce * correct).sum() + lam * (ce * wrong).sum()) / count


def _check_inputs(model: nn.Module, images: Tensor, masks: Tensor, name: str, num_classes: int | None,
                  ignore_index: int) -> None:
    if name not in SEGMENTATION_ATTACKS:
        raise UserError(f"Unknown segmentation attack {name!r}; expected one of {', '.join(SEGMENTATION_ATTACKS)}.")
    if images.ndim != 4:
        raise UserError(f"Segmentation attacks take images of shape [B, 3, H, W], got {list(images.shape)}.")
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise UserError(f"The masks have shape {list(masks.shape)} but the images {list(images.shape)}; expected "
                        f"masks of [B, H, W] = {[images.shape[0], *images.shape[-2:]]}.")
    if float(images.min()) < 0 or float(images.max()) > 1:
        raise UserError("Segmentation attacks take pixels in [0, 1]; the images leave that range.")
    if num_classes is not None:
        labelled = masks[masks != ignore_index]
        if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= num_classes):
            raise UserError(f"The masks hold labels outside 0..{num_classes - 1} (and the ignore index "
                            f"{ignore_index}): min {int(labelled.min())}, max {int(labelled.max())}.")


def _gradient(model: nn.Module, adv: Tensor, masks: Tensor, ignore_index: int, weight: float | None) -> Tensor:
    adv = adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = segmentation_loss(model(adv), masks, ignore_index, weight)
        (grad,) = torch.autograd.grad(loss, adv)
    return grad


def segmentation_attack(model: nn.Module, images: Tensor, masks: Tensor, name: str, eps: float, *,
                        steps: int | None = None, step_size: float | None = None, random_start: bool = True,
                        ignore_index: int = 255, generator: torch.Generator | None = None) -> Tensor:
    """Return adversarial images for ``model`` within ``eps`` (Linf, pixels in [0, 1]) of ``images``.

    ``name`` is ``fgsm``, ``pgd`` or ``segpgd`` (see the module docstring); ``steps`` defaults to 10 and
    ``step_size`` to ``eps / 4`` for PGD and SegPGD; the random start draws from ``generator`` (on the CPU, so
    the start is the same on every device). Raises :class:`~robustbench_rpc.attacks.budgets.BudgetViolationError`
    if the result leaves the budget or [0, 1].
    """
    eps = validate_eps(eps, "Linf")
    masks = masks.to(device=images.device, dtype=torch.long)
    _check_inputs(model, images, masks, name, getattr(model, "num_classes", None), ignore_index)
    clean = images.detach()
    if eps == 0:
        return clean.clone()
    if name == "fgsm":
        grad = _gradient(model, clean, masks, ignore_index, None)
        adv = (clean + eps * grad.sign()).clamp(0, 1)
    else:
        steps = DEFAULT_STEPS if steps is None else int(steps)
        if steps < 1:
            raise UserError(f"{name} needs steps >= 1, got {steps}.")
        alpha = eps / 4 if step_size is None else float(step_size)
        if not alpha > 0:
            raise UserError(f"{name} needs a step size > 0, got {step_size}.")
        adv = clean.clone()
        if random_start:
            noise = torch.rand(clean.shape, generator=generator, dtype=torch.float32) * 2 - 1
            adv = (clean + eps * noise.to(device=clean.device, dtype=clean.dtype)).clamp(0, 1)
        for t in range(1, steps + 1):
            weight = segpgd_lambda(t, steps) if name == "segpgd" else None
            grad = _gradient(model, adv, masks, ignore_index, weight)
            adv = adv.detach() + alpha * grad.sign()
            adv = torch.min(torch.max(adv, clean - eps), clean + eps).clamp(0, 1)
    adv = adv.detach()
    check_budget(clean, adv, "Linf", eps, what=f"segmentation attack {name}")
    return adv
