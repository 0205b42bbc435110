"""Run one attack on one batch: seeding, threat model, budget verification and per-sample records.

Threat model (default): the model takes pixels in [0, 1]; eps is in pixel units; the adversarial images are clamped
to [0, 1] (a no-op for attacks that already clamp; it removes float rounding such as SPSA's ``x + dx``); the attack
labels are the true labels; every batch is checked against its budget (:func:`check_budget`), and a violation
raises :class:`BudgetViolationError`. ``compat`` switches to the official code's threat model, see
:mod:`robustbench_rpc.attacks.protocol`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_rpc.attacks.adaptive import build_attack_model, gradient_modifiers, resolve_eot
from robustbench_rpc.attacks.base import AttackContext, AttackOutput, model_device
from robustbench_rpc.attacks.budgets import budget_tolerance, check_budget, perturbation_norms
from robustbench_rpc.attacks.protocol import build_compat_space, compat_mode
from robustbench_rpc.attacks.registry import AttackSpec, threat_model_name
from robustbench_rpc.attacks.tracing import AttackTracer, TraceSummary
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
    trace: TraceSummary | None = None
    attack_returned_adv: Tensor | None = None  # the attack's own output was misclassified (before best_iterate)
    best_iterate_used: Tensor | None = None  # the record holds the best iterate instead of the attack's output
    eot_iter: int = 1

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
        n = len(labels)
        trace = self.trace if self.trace is not None else TraceSummary.empty(n)
        returned = self.attack_returned_adv if self.attack_returned_adv is not None else ~correct1
        recovered = self.best_iterate_used if self.best_iterate_used is not None else torch.zeros(n, dtype=torch.bool)
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
                    "trace_loss": trace.loss[i],
                    "trace_steps": int(trace.steps[i]),
                    "grad_norm0": float(trace.grad_norm0[i]),
                    "grad_zero_steps": int(trace.grad_zero[i]),
                    "grad_nonfinite_steps": int(trace.grad_nonfinite[i]),
                    "iterate_adv": bool(trace.iterate_adv[i]),
                    "attack_returned_adv": bool(returned[i]),
                    "best_iterate_used": bool(recovered[i]),
                    "eot_iter": int(self.eot_iter),
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


def score(model: nn.Module, x: Tensor, precision: str = "fp32") -> Tensor:
    """The final forward on adversarial inputs: no gradients, under fp16 / bf16 autocast unless ``fp32``.

    The logits are returned in float32. fp16 autocast is refused off CUDA (the official evaluation's fp16 forward
    ran on GPUs; use bf16 on a CPU).
    """
    if precision == "fp32":
        with torch.no_grad():
            return model(x)
    if precision not in ("fp16", "bf16"):
        raise UserError(f"Unknown precision {precision!r} for the final forward; expected fp32, bf16 or fp16.")
    if precision == "fp16" and x.device.type != "cuda":
        raise UserError(f"--amp fp16 autocasts the final forward on a CUDA GPU, but this run is on {x.device}; "
                        "use --amp bf16 (or fp32) on the CPU.")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    with torch.no_grad(), torch.autocast(device_type=x.device.type, dtype=dtype):
        return model(x).float()


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
    surrogate: nn.Module | None = None,
    final_precision: str = "fp32",
) -> AttackBatchResult:
    """Attack one batch of pixels in [0, 1] with ``spec``, verify the budget and return the result.

    ``seed`` seeds torch's global RNG inside ``fork_rng`` (the caller's RNG state is restored) and is passed to the
    attacks that take a seed (Square, APGD, AutoAttack), so stochastic attacks repeat bit for bit on CPU.
    ``compat`` (False, True / 'normalized', 'pixel') selects the official code's threat model for a
    NormalizedModel, see :mod:`robustbench_rpc.attacks.protocol`. ``surrogate`` is the model a ``transfer`` attack
    crafts its examples on. White-box attacks are traced (:mod:`robustbench_rpc.attacks.tracing`) and, unless
    ``best_iterate=false``, a sample the attack's own output leaves correct gets the best misclassified in-budget
    point the attack evaluated. ``final_precision`` ('fp16', 'bf16') scores the adversarial images under autocast
    (the official evaluation's fp16 final forward); the attack itself is unaffected.
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
        if spec.definition.transfer and surrogate is None:
            raise UserError("The transfer attack needs a surrogate model (--surrogate NAME[:CHECKPOINT]).")
        ctx = AttackContext(seed=int(seed), n_classes=int(clean_logits.shape[1]), device=device,
                            surrogate=surrogate, final_precision=final_precision)
        if mode is None:
            result = _run_pixel(model, images, labels, spec, ctx, clean_logits)
        elif mode == "paper":
            result = _run_paper(model, images, labels, spec, ctx, clean_logits)
        else:
            result = _run_compat(model, images, labels, spec, ctx, clean_logits, mode)
    finally:
        model.train(was_training)
    return result


def _execute(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    spec: AttackSpec,
    ctx: AttackContext,
    clean_logits: Tensor,
    in_budget: Callable[[Tensor], Tensor] | None,
) -> tuple[AttackOutput, TraceSummary | None, int]:
    """Build the attack on the (modified) model and run it under the seed; return the output, trace and EOT draws.

    eps = 0 returns the inputs without calling the attack. The output is in ``x``'s dtype.
    """
    if spec.eps == 0:
        zeros = torch.zeros(len(x), dtype=torch.long, device=x.device)
        return AttackOutput(adv=x.clone(), queries=zeros), None, 1
    white_box = spec.definition.white_box
    eot = resolve_eot(spec, model, x, clean_logits) if white_box else 1
    if white_box and eot != int(spec.params.get("eot_iter", 1)):
        spec = replace(spec, params={**spec.params, "eot_iter": eot})
    attacked = build_attack_model(model, spec, eot)
    x_attack = x.to(attacked.dtype)
    tracer = None
    target: nn.Module = attacked.model
    if white_box and in_budget is not None:
        tracer = AttackTracer(attacked.model, x_attack, labels, in_budget)
        target = tracer
    if spec.definition.transfer and attacked.dtype != torch.float32:
        from robustbench_rpc.models.adaptive import cast_model

        ctx = replace(ctx, surrogate=cast_model(ctx.surrogate, attacked.dtype))
    attack = spec.definition.load_factory()(target, spec, ctx)
    with seeded(ctx.seed, ctx.device), gradient_modifiers(attacked.model, spec) if white_box else nullcontext():
        output = attack(x_attack, labels)
    output.adv = output.adv.detach().to(x.dtype)
    return output, (tracer.summary() if tracer is not None else None), eot


def _queries(output: AttackOutput, n: int) -> Tensor:
    """Return the per-sample queries as a CPU int64 tensor (-1 when not counted)."""
    if output.queries is None:
        return torch.full((n,), -1, dtype=torch.long)
    return output.queries.detach().long().cpu()


def _pixel_budget(images: Tensor, spec: AttackSpec) -> Callable[[Tensor], Tensor]:
    """Return a per-sample mask: within ``spec``'s budget of ``images`` (its tolerance) and inside [0, 1]."""
    tol = budget_tolerance(spec.eps, spec.norm, images[0].numel() if len(images) else 1)

    def inside(x: Tensor) -> Tensor:
        ok = perturbation_norms(images, x.to(images.dtype))[spec.norm].double() <= spec.eps + tol
        flat = x.flatten(1)
        return ok & (flat.amin(1) >= 0) & (flat.amax(1) <= 1) & torch.isfinite(flat).all(1)

    return inside


def _run_pixel(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    spec: AttackSpec,
    ctx: AttackContext,
    clean_logits: Tensor,
) -> AttackBatchResult:
    """Default threat model: pixel space, true labels, clamped to [0, 1]; best in-budget iterate kept."""
    output, trace, eot = _execute(model, images, labels, spec, ctx, clean_logits, _pixel_budget(images, spec))
    adv = output.adv.to(images.dtype).clamp(0.0, 1.0)
    adv_logits = score(model, adv, ctx.final_precision)
    returned_adv = (adv_logits.argmax(dim=1) != labels).cpu()
    used = torch.zeros(len(adv), dtype=torch.bool)
    if trace is not None and trace.best is not None and spec.params.get("best_iterate", True):
        candidates = (trace.best_adv & ~returned_adv).to(adv.device)
        if bool(candidates.any()):
            best = trace.best.to(device=adv.device, dtype=adv.dtype).clamp(0.0, 1.0)
            best_logits = score(model, best[candidates], ctx.final_precision)
            # keep the iterate only where the model as evaluated also misclassifies it
            keep = torch.zeros_like(candidates)
            keep[candidates] = best_logits.argmax(dim=1) != labels[candidates]
            if bool(keep.any()):
                adv = torch.where(keep.view(-1, *([1] * (adv.dim() - 1))), best, adv)
                adv_logits = adv_logits.clone()
                adv_logits[keep] = best_logits[keep[candidates]].to(adv_logits.dtype)
                used = keep.cpu()
    norms = check_budget(images, adv, spec.norm, spec.eps, what=f"attack {spec.label()}")
    result = _result(spec, adv, clean_logits, adv_logits, norms, output, labels, None)
    result.trace, result.attack_returned_adv, result.best_iterate_used, result.eot_iter = trace, returned_adv, used, eot
    return result


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
    with torch.no_grad():
        z_logits = space.model(space.z_clean)
    # the official code returns the attack's last iterate: compat mode keeps that, and records no trace
    output, _, eot = _execute(space.model, space.z_clean, attack_labels, space.rescale(spec), ctx, z_logits, None)
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
    adv_logits = score(space.inner, u_adv, ctx.final_precision)
    adv = space.pixels_from_u(u_adv, model).detach()
    norms = perturbation_norms(images, adv)
    result = _result(spec, adv, clean_logits, adv_logits, norms, output, attack_labels, mode)
    result.eot_iter = eot
    return result


def _run_paper(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    spec: AttackSpec,
    ctx: AttackContext,
    clean_logits: Tensor,
) -> AttackBatchResult:
    """Threat model ``paper``: the official computations of SPSA, SLD, noise and CW; compat mode for the others."""
    from robustbench_rpc.attacks.official import WRITTEN_HERE, run_official
    from robustbench_rpc.attacks.protocol import check_normalized_model

    if spec.name not in WRITTEN_HERE:
        result = _run_compat(model, images, labels, spec, ctx, clean_logits, "normalized")
        result.compat = "paper"
        return result
    check_normalized_model(model)
    attack_labels = clean_logits.argmax(dim=1)
    u_clean = model.normalize(images).detach()
    with seeded(ctx.seed, ctx.device):
        u_adv = run_official(model.model, u_clean, attack_labels, spec, ctx.n_classes).to(images.dtype)
    if spec.name != "cw":  # the official CW has no budget: its eps is the confidence
        tol = budget_tolerance(spec.eps, spec.norm, images[0].numel(),
                               value_scale=2 * float(u_clean.abs().max()) + spec.eps)
        check_budget(u_clean, u_adv, spec.norm, spec.eps, tol, box=None, what=f"attack {spec.label()} (paper)")
    adv_logits = score(model.model, u_adv, ctx.final_precision)
    adv = (u_adv * model.std.to(u_adv.dtype) + model.mean.to(u_adv.dtype)).detach()
    queries = None
    if spec.name in ("spsa", "noise"):
        queries = 2 * int(spec.params["samples"]) * int(spec.params["steps"]) if spec.name == "spsa" else 0
    n = len(images)
    output = AttackOutput(adv=adv, queries=None if queries is None else torch.full((n,), queries, dtype=torch.long))
    return _result(spec, adv, clean_logits, adv_logits, perturbation_norms(images, adv), output, attack_labels,
                   "paper")
