"""Factories for the attacks torchattacks provides (PGD, FGSM, SPSA, CW, Square) and the uniform-noise baseline.

Every factory has the signature ``make_x(model, spec, ctx) -> AttackFn``. torchattacks draws its random numbers
from the global torch RNG; :func:`robustbench_rpc.attacks.runner.run_attack` seeds it inside ``fork_rng`` so the
caller's RNG state is left untouched.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import Tensor, nn
from torchattacks.attack import Attack

from robustbench_rpc.attacks.base import AttackContext, AttackFn, AttackOutput
from robustbench_rpc.attacks.registry import AttackSpec


def step_size(spec: AttackSpec) -> float:
    """Return the absolute step size: ``abs_stepsize`` when given, else ``rel_stepsize * eps``."""
    absolute = spec.params.get("abs_stepsize")
    return float(absolute) if absolute is not None else float(spec.params["rel_stepsize"]) * spec.eps


def _wrap(attack: Attack, queries_per_sample: int | None = None) -> AttackFn:
    """Turn a torchattacks attack into an AttackFn (queries: a constant per sample, or None)."""

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        adv = attack(images, labels)
        queries = None
        if queries_per_sample is not None:
            queries = torch.full((len(images),), queries_per_sample, dtype=torch.long, device=images.device)
        return AttackOutput(adv=adv.detach(), queries=queries)

    return run


def _make(cls: type[Attack], model: nn.Module, ctx: AttackContext, **kwargs: object) -> Attack:
    """Build a torchattacks attack on ``model`` and pin it to the model's device."""
    attack = cls(model, **kwargs)
    attack.set_device(ctx.device)
    return attack


def make_pgd(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """PGD: torchattacks ``PGD`` (Linf) or ``PGDL2`` (L2) with ``steps`` steps of :func:`step_size`.

    With ``restarts`` > 1 the attack runs again from fresh random starts on the samples still correctly classified,
    keeping each sample's first misclassified result.
    """
    cls = torchattacks.PGD if spec.norm == "Linf" else torchattacks.PGDL2
    attack = _make(
        cls,
        model,
        ctx,
        eps=spec.eps,
        alpha=step_size(spec),
        steps=int(spec.params["steps"]),
        random_start=bool(spec.params["random_start"]),
    )
    restarts = int(spec.params.get("restarts", 1))
    if restarts == 1:
        return _wrap(attack)

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        best = attack(images, labels).detach()
        with torch.no_grad():
            fooled = model(best).argmax(dim=1) != labels
        for _ in range(restarts - 1):
            if bool(fooled.all()):
                break
            adv = attack(images, labels).detach()
            with torch.no_grad():
                now = model(adv).argmax(dim=1) != labels
            take = now & ~fooled
            best[take] = adv[take]
            fooled |= now
        return AttackOutput(adv=best)

    return run


def make_fgsm(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """FGSM: torchattacks ``FGSM``."""
    return _wrap(_make(torchattacks.FGSM, model, ctx, eps=spec.eps))


def make_spsa(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """SPSA: torchattacks ``SPSA``; it queries the model ``2 * samples * steps`` times per image."""
    p = spec.params
    attack = _make(
        torchattacks.SPSA,
        model,
        ctx,
        eps=spec.eps,
        delta=float(p["delta"]),
        lr=float(p["lr"]),
        nb_iter=int(p["steps"]),
        nb_sample=int(p["samples"]),
        max_batch_size=int(p["max_batch_size"]),
    )
    return _wrap(attack, queries_per_sample=2 * int(p["samples"]) * int(p["steps"]))


def project_l2_ball(images: Tensor, adv: Tensor, eps: float) -> Tensor:
    """Scale ``adv - images`` down onto the L2 ball of radius ``eps`` (unchanged when already inside)."""
    delta = adv - images
    norms = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-30)
    factor = torch.clamp(eps / norms, max=1.0).view(-1, *([1] * (delta.dim() - 1)))
    return images + delta * factor


def make_cw(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """CW-L2: torchattacks ``CW``, its perturbation then scaled onto the L2 ball of radius eps."""
    p = spec.params
    attack = _make(
        torchattacks.CW,
        model,
        ctx,
        c=float(p["c"]),
        kappa=float(p["kappa"]),
        steps=int(p["steps"]),
        lr=float(p["lr"]),
    )

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        adv = attack(images, labels).detach()
        return AttackOutput(adv=project_l2_ball(images, adv, spec.eps).clamp(0.0, 1.0))

    return run


def make_noise(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """Uniform noise in [-eps, eps] per pixel, clamped to [0, 1]; no model query."""

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        noise = (torch.rand_like(images) * 2 - 1) * spec.eps
        adv = torch.clamp(images + noise, 0.0, 1.0)
        return AttackOutput(adv=adv, queries=torch.zeros(len(images), dtype=torch.long, device=images.device))

    return run


class QueryCountingSquare(torchattacks.Square):
    """torchattacks ``Square`` (untargeted) that also records the queries each sample used.

    The restart loop makes the same calls in the same order as ``Square.perturb``, so with the same seed it
    returns the same images; ``queries`` sums the per-restart counts of ``attack_single_run``.
    """

    queries: Tensor | None = None

    def perturb(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Run the attack on ``x`` with true labels ``y``; set :attr:`queries`."""
        self.init_hyperparam(x)
        if y is None:
            with torch.no_grad():
                y = self.get_logits(x).argmax(1)
        y = y.detach().clone().long().to(self.device)
        adv = x.clone()
        queries = torch.zeros(len(x), dtype=torch.long, device=x.device)
        robust = self.get_logits(x).max(1)[1] == y
        torch.random.manual_seed(self.seed)
        torch.cuda.random.manual_seed(self.seed)
        for _ in range(self.n_restarts):
            todo = robust.nonzero().flatten()
            if todo.numel() == 0:
                break
            used, adv_todo = self.attack_single_run(x[todo].clone(), y[todo].clone())
            queries[todo] += used.long().to(queries.device)
            fooled = (self.get_logits(adv_todo).max(1)[1] != y[todo]).nonzero().flatten()
            robust[todo[fooled]] = False
            adv[todo[fooled]] = adv_todo[fooled].clone()
        self.queries = queries
        return adv


def make_square(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """Square attack (Linf or L2): torchattacks ``Square`` with per-sample query counts, seeded by the run seed."""
    p = spec.params
    attack = _make(
        QueryCountingSquare,
        model,
        ctx,
        norm=spec.norm,
        eps=spec.eps,
        n_queries=int(p["queries"]),
        n_restarts=int(p["restarts"]),
        p_init=float(p["p_init"]),
        loss=str(p["loss"]),
        resc_schedule=bool(p["rescale_schedule"]),
        seed=int(ctx.seed),
        verbose=False,
    )

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        adv = attack(images, labels).detach()
        return AttackOutput(adv=adv, queries=attack.queries)

    return run
