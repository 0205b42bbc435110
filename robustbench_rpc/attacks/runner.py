"""Run one attack on one batch: seeding, threat model, budget verification and per-sample records.

Threat model (default): the model takes pixels in [0, 1]; eps is in pixel units; the adversarial images are clamped
to [0, 1] (a no-op for attacks that already clamp; it removes float rounding such as SPSA's ``x + dx``); the attack
labels are the true labels; every batch is checked against its budget (:func:`check_budget`), and a violation
raises :class:`BudgetViolationError`. ``compat`` switches to the official code's threat model, see
:mod:`robustbench_rpc.attacks.protocol`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_rpc.attacks.base import AttackContext, AttackOutput, model_device
from robustbench_rpc.attacks.budgets import budget_tolerance, check_budget, perturbation_norms
from robustbench_rpc.attacks.protocol import build_compat_space, compat_mode
from robustbench_rpc.attacks.registry import AttackSpec, threat_model_name
from robustbench_rpc.errors import UserError


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (CPU and ``device``) for the block and restore the caller's RNG state afterwards."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


@dataclass
class AttackBatchResult:
    """One attacked batch: adversarial pixels, clean / adversarial logits, perturbation norms and queries.

    ``adv`` is in pixel units (clamped to [0, 1] except in compat mode); the norms are per-sample pixel-space norms of
    ``adv - images``; ``queries`` is -1 where the attack does not count queries.
    """

    spec: AttackSpec
    adv: Tensor
    clean_logits: Tensor
    adv_logits: Tensor
    norm_linf: Tensor
    norm_l2: Tensor
    norm_l1: Tensor
    queries: Tensor
    attack_labels: Tensor
    compat: str | None = None
    log: list[str] = field(default_factory=list)

    def records(
        self,
        labels: Tensor,
        index_offset: int = 0,
        sample_ids: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Return one dict per sample with the BASE_COLUMNS (on the adversarial logits) and ATTACK_COLUMNS."""
        labels = labels.detach().cpu().long()
        adv_logits = self.adv_logits.detach().float().cpu()
        clean_pred = self.clean_logits.detach().argmax(dim=1).cpu()
        k = min(5, adv_logits.shape[1])
        top5 = adv_logits.topk(k, dim=1).indices
        prob_max = adv_logits.softmax(dim=1).amax(dim=1)
        pred = top5[:, 0]
        correct1 = pred == labels
        correct5 = (top5 == labels.unsqueeze(1)).any(dim=1)
        clean_correct = clean_pred == labels
        rows = []
        for i in range(len(labels)):
            index = index_offset + i
            rows.append(
                {
                    "sample_id": str(sample_ids[i]) if sample_ids is not None else str(index),
                    "index": index,
                    "label": int(labels[i]),
                    "pred": int(pred[i]),
                    "top5": [int(c) for c in top5[i]],
                    "prob_max": float(prob_max[i]),
                    "correct1": bool(correct1[i]),
                    "correct5": bool(correct5[i]),
                    "clean_pred": int(clean_pred[i]),
                    "clean_correct": bool(clean_correct[i]),
                    "success": bool(clean_correct[i] and not correct1[i]),
                    "norm_linf": float(self.norm_linf[i]),
                    "norm_l2": float(self.norm_l2[i]),
                    "norm_l1": float(self.norm_l1[i]),
                    "queries": int(self.queries[i]),
                }
            )
        return rows


def attack_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Return robust top-1 / top-5, clean top-1 and the attack success rate among clean-correct samples."""
    n = len(records)
    if n == 0:
        return {
            "n": 0,
            "clean_top1": float("nan"),
            "robust_top1": float("nan"),
            "robust_top5": float("nan"),
            "success_rate": float("nan"),
        }
    clean_correct = sum(bool(r["clean_correct"]) for r in records)
    successes = sum(bool(r["success"]) for r in records)
    return {
        "n": n,
        "clean_top1": clean_correct / n,
        "robust_top1": sum(bool(r["correct1"]) for r in records) / n,
        "robust_top5": sum(bool(r["correct5"]) for r in records) / n,
        "success_rate": successes / clean_correct if clean_correct else float("nan"),
    }


def _check_inputs(images: Tensor, labels: Tensor) -> None:
    """Raise a UserError unless ``images`` is a float [B, C, H, W] batch in [0, 1] with B matching ``labels``."""
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise UserError("Attack inputs must be a float tensor of shape [batch, channels, height, width].")
    if labels.dim() != 1 or len(labels) != len(images):
        raise UserError(
            f"Expected {len(images)} labels for {len(images)} images, got shape {tuple(labels.shape)}."
        )
    if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise UserError(
            f"Attack inputs must be pixels in [0, 1] (got values in [{float(images.min()):.3g}, "
            f"{float(images.max()):.3g}]); normalisation belongs inside the model."
        )


def run_attack(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    spec: AttackSpec,
    *,
    seed: int,
    compat: bool | str = False,
) -> AttackBatchResult:
    """Attack one batch of pixels in [0, 1] with ``spec``, verify the budget and return the result.

    ``seed`` seeds torch's global RNG inside ``fork_rng`` (the caller's RNG state is restored) and is passed to the
    attacks that take a seed (Square, APGD, AutoAttack), so stochastic attacks repeat bit for bit on CPU.
    ``compat`` (False, True / 'normalized', 'pixel') selects the official code's threat model for a
    NormalizedModel, see :mod:`robustbench_rpc.attacks.protocol`.
    """
    mode = compat_mode(compat)
    _check_inputs(images, labels)
    device = model_device(model, images.device)
    images = images.detach().to(device)
    labels = labels.detach().to(device).long()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            clean_logits = model(images)
        ctx = AttackContext(seed=int(seed), n_classes=int(clean_logits.shape[1]), device=device)
        if mode is None:
            result = _run_pixel(model, images, labels, spec, ctx, clean_logits)
        else:
            result = _run_compat(model, images, labels, spec, ctx, clean_logits, mode)
    finally:
        model.train(was_training)
    return result


def _execute(
    model: nn.Module, x: Tensor, labels: Tensor, spec: AttackSpec, ctx: AttackContext
) -> AttackOutput:
    """Build the attack and run it under the seed (eps = 0 returns the inputs without calling the attack)."""
    if spec.eps == 0:
        return AttackOutput(adv=x.clone(), queries=torch.zeros(len(x), dtype=torch.long, device=x.device))
    attack = spec.definition.load_factory()(model, spec, ctx)
    with seeded(ctx.seed, ctx.device):
        return attack(x, labels)


def _queries(output: AttackOutput, n: int) -> Tensor:
    """Return the per-sample queries as a CPU int64 tensor (-1 when not counted)."""
    if output.queries is None:
        return torch.full((n,), -1, dtype=torch.long)
    return output.queries.detach().long().cpu()


def _run_pixel(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    spec: AttackSpec,
    ctx: AttackContext,
    clean_logits: Tensor,
) -> AttackBatchResult:
    """Default threat model: pixel space, true labels, clamped to [0, 1]."""
    output = _execute(model, images, labels, spec, ctx)
    adv = output.adv.detach().to(images.dtype).clamp(0.0, 1.0)
    norms = check_budget(images, adv, spec.norm, spec.eps, what=f"attack {spec.label()}")
    with torch.no_grad():
        adv_logits = model(adv)
    return _result(spec, adv, clean_logits, adv_logits, norms, output, labels, None)


def _result(
    spec: AttackSpec,
    adv: Tensor,
    clean_logits: Tensor,
    adv_logits: Tensor,
    norms: dict[str, Tensor],
    output: AttackOutput,
    attack_labels: Tensor,
    compat: str | None,
) -> AttackBatchResult:
    """Assemble the batch result (norms moved to the CPU, queries per sample)."""
    return AttackBatchResult(
        spec=spec,
        adv=adv,
        clean_logits=clean_logits,
        adv_logits=adv_logits,
        norm_linf=norms["Linf"].cpu(),
        norm_l2=norms["L2"].cpu(),
        norm_l1=norms["L1"].cpu(),
        queries=_queries(output, len(adv)),
        attack_labels=attack_labels,
        compat=compat,
        log=output.log,
    )


def _run_compat(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    spec: AttackSpec,
    ctx: AttackContext,
    clean_logits: Tensor,
    mode: str,
) -> AttackBatchResult:
    """Compat threat model: attack the normalized (or pixel) space, clean-prediction labels, no clamping."""
    space = build_compat_space(model, images, spec, mode)
    attack_labels = clean_logits.argmax(dim=1)
    output = _execute(space.model, space.z_clean, attack_labels, space.rescale(spec), ctx)
    u_adv = space.u_from_z(output.adv.detach().to(images.dtype))
    tol = budget_tolerance(spec.eps, spec.norm, images[0].numel(), value_scale=2 * space.scale)
    check_budget(
        space.u_clean,
        u_adv,
        spec.norm,
        spec.eps,
        tol,
        box=None,
        what=f"attack {spec.label()} ({threat_model_name(mode)})",
    )
    with torch.no_grad():
        adv_logits = space.inner(u_adv)
    adv = space.pixels_from_u(u_adv, model).detach()
    norms = perturbation_norms(images, adv)
    return _result(spec, adv, clean_logits, adv_logits, norms, output, attack_labels, mode)
