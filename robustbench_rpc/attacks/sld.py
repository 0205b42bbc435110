"""Sparse L1 descent (SLD, Tramer & Boneh 2019) and the L1 projections it needs.

torchattacks has no SLD, so it is written here from the published algorithm. Each of ``steps`` iterations:

    g = gradient of the cross-entropy at the current point
    e_i = sign(g_i) where |g_i| >= P_q(|g|) (the q-th percentile of |g| over the sample), else 0
    x <- Proj(x + step * e / ||e||_1)

where Proj is the Euclidean projection onto {x': ||x' - x0||_1 <= eps, 0 <= x' <= 1}, computed exactly by
:func:`project_l1_box`. With ``clip_grad`` the coordinates that sit on the box boundary and would be pushed out of it
are dropped from ``g`` first (an option of the reference implementation in CleverHans; off by default).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchattacks.attack import Attack

from robustbench_rpc.attacks.base import AttackContext, AttackFn, AttackOutput
from robustbench_rpc.attacks.registry import AttackSpec


def project_l1_ball(v: Tensor, eps: float) -> Tensor:
    """Project each row of ``v`` (flattened per sample) onto the L1 ball of radius ``eps`` (Duchi et al. 2008)."""
    shape = v.shape
    flat = v.flatten(1).to(torch.float64)
    magnitude = flat.abs()
    inside = magnitude.sum(dim=1) <= eps
    if bool(inside.all()):
        return v.clone()
    sorted_mag, _ = magnitude.sort(dim=1, descending=True)
    cumulative = sorted_mag.cumsum(dim=1)
    ranks = torch.arange(1, flat.shape[1] + 1, device=v.device, dtype=torch.float64)
    positive = sorted_mag - (cumulative - eps) / ranks > 0
    # rho: the last index where the condition holds (it holds on a prefix).
    rho = positive.to(torch.int64).cumsum(dim=1).argmax(dim=1, keepdim=True)
    theta = ((cumulative.gather(1, rho) - eps) / (rho + 1).to(torch.float64)).clamp_min(0)
    projected = flat.sign() * (magnitude - theta).clamp_min(0)
    projected = torch.where(inside.unsqueeze(1), flat, projected)
    return projected.to(v.dtype).view(shape)


def _sum_above(sorted_values: Tensor, suffix_sums: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """For ascending rows ``sorted_values``, return sum of (c - t) and count over c > t, for each threshold t."""
    n = sorted_values.shape[1]
    position = torch.searchsorted(sorted_values, thresholds, right=True)
    count = (n - position).to(thresholds.dtype)
    total = suffix_sums.gather(1, position)
    return total - count * thresholds, count


def project_l1_box(v: Tensor, lower: Tensor, upper: Tensor, eps: float) -> Tensor:
    """Euclidean projection of each sample of ``v`` onto {d: ||d||_1 <= eps, lower <= d <= upper}.

    Requires ``lower <= 0 <= upper``. The solution is ``d_i = sign(v_i) * clip(|v_i| - tau, 0, b_i)`` with ``b_i``
    the box bound in the direction of ``v_i`` and the smallest ``tau >= 0`` meeting the budget; ``tau`` is found
    exactly from the breakpoints of that piecewise-linear function (float64).
    """
    shape = v.shape
    flat = v.flatten(1).to(torch.float64)
    lo = lower.expand_as(v).flatten(1).to(torch.float64)
    hi = upper.expand_as(v).flatten(1).to(torch.float64)
    magnitude = flat.abs()
    bound = torch.where(flat >= 0, hi, -lo).clamp_min(0)
    clipped = torch.minimum(magnitude, bound)
    over = clipped.sum(dim=1) > eps
    if not bool(over.any()):
        return (flat.sign() * clipped).to(v.dtype).view(shape)
    rows = over.nonzero().flatten()
    a = magnitude[rows]
    ab = a - bound[rows]
    # f(t) = sum [a - t]_+ - sum [a - b - t]_+ is the L1 norm at threshold t: continuous, piecewise linear, decreasing.
    a_sorted, _ = a.sort(dim=1)
    ab_sorted, _ = ab.sort(dim=1)
    zeros = torch.zeros(len(rows), 1, dtype=torch.float64, device=v.device)
    a_suffix = torch.cat([a_sorted.flip(1).cumsum(1).flip(1), zeros], dim=1)
    ab_suffix = torch.cat([ab_sorted.flip(1).cumsum(1).flip(1), zeros], dim=1)
    candidates = torch.cat([zeros, a_sorted, ab_sorted.clamp_min(0)], dim=1).sort(dim=1).values
    s_a, n_a = _sum_above(a_sorted, a_suffix, candidates)
    s_ab, n_ab = _sum_above(ab_sorted, ab_suffix, candidates)
    f = s_a - s_ab
    # The largest breakpoint with f >= eps, then the exact root on the linear piece to its right.
    feasible = f >= eps
    last = (feasible.to(torch.int64) * torch.arange(1, candidates.shape[1] + 1, device=v.device)).argmax(
        dim=1
    )
    t_lo = candidates.gather(1, last.unsqueeze(1))
    f_lo = f.gather(1, last.unsqueeze(1))
    slope = (n_a - n_ab).gather(1, last.unsqueeze(1))
    tau = t_lo + torch.where(slope > 0, (f_lo - eps) / slope.clamp_min(1), torch.zeros_like(f_lo))
    clipped[rows] = torch.minimum((a - tau).clamp_min(0), bound[rows])
    return (flat.sign() * clipped).to(v.dtype).view(shape)


def percentile_mask(grad: Tensor, sparsity: float) -> Tensor:
    """Return a mask of the coordinates whose |grad| is at least the ``sparsity``-th percentile of their sample."""
    magnitude = grad.abs().flatten(1)
    d = magnitude.shape[1]
    k = min(max(math.ceil(sparsity / 100.0 * d), 1), d)
    threshold = magnitude.kthvalue(k, dim=1, keepdim=True).values
    return (magnitude >= threshold).view_as(grad)


class SparseL1Descent(Attack):
    """Sparse L1 descent with the torchattacks calling convention: ``SparseL1Descent(model, ...)(images, labels)``."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 10.0,
        step: float = 1.0,
        steps: int = 20,
        sparsity: float = 99.0,
        clip_grad: bool = False,
    ) -> None:
        super().__init__("SLD", model)
        self.eps = float(eps)
        self.step = float(step)
        self.steps = int(steps)
        self.sparsity = float(sparsity)
        self.clip_grad = bool(clip_grad)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Return adversarial images within ``eps`` in L1 of ``images`` and inside [0, 1]."""
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        lower, upper = -images, 1.0 - images
        adv = images.clone()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(self.get_logits(adv), labels, reduction="sum")
            grad = torch.autograd.grad(loss, adv)[0].detach()
            adv = adv.detach()
            if self.clip_grad:
                grad = torch.where(((adv <= 0) & (grad < 0)) | ((adv >= 1) & (grad > 0)), 0.0, grad)
            direction = grad.sign() * percentile_mask(grad, self.sparsity)
            l1 = direction.flatten(1).abs().sum(dim=1).clamp_min(1.0).view(-1, *([1] * (adv.dim() - 1)))
            proposal = adv + self.step * direction / l1 - images
            adv = torch.clamp(images + project_l1_box(proposal, lower, upper, self.eps), 0.0, 1.0)
        return adv


def make_sld(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """SLD factory: step = ``abs_stepsize`` or ``rel_stepsize * eps``."""
    from robustbench_rpc.attacks.torchattacks_adapter import step_size

    attack = SparseL1Descent(
        model,
        eps=spec.eps,
        step=step_size(spec),
        steps=int(spec.params["steps"]),
        sparsity=float(spec.params["sparsity"]),
        clip_grad=bool(spec.params["clip_grad"]),
    )
    attack.set_device(ctx.device)

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        return AttackOutput(adv=attack(images, labels).detach())

    return run
