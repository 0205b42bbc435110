"""The transfer attack: adversarial examples crafted on a surrogate model, then scored on the target.

The surrogate is :attr:`AttackContext.surrogate` (the engine loads it from ``--surrogate``; for an RPC model the
default is the same weights with PAP switched off). The examples are made by PGD, FGSM or APGD-CE on the surrogate
with the cell's norm and eps, keeping for each sample the restart that fools the surrogate (the target is never
queried during crafting), so the cell's budget check applies unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustbench_rpc.attacks.base import AttackContext, AttackFn, AttackOutput
from robustbench_rpc.attacks.registry import AttackSpec, build_attack_spec
from robustbench_rpc.errors import UserError


def surrogate_spec(spec: AttackSpec) -> AttackSpec:
    """Return the attack run on the surrogate for a transfer ``spec`` (its method, steps, step size, restarts)."""
    p = spec.params
    method = str(p["method"])
    options: dict[str, object] = {"attack_dtype": p.get("attack_dtype", "float32")}
    if method == "pgd":
        options.update(steps=int(p["steps"]), rel_stepsize=float(p["rel_stepsize"]), restarts=int(p["restarts"]))
    elif method == "apgd-ce":
        options.update(steps=int(p["steps"]), restarts=int(p["restarts"]))
    if method == "fgsm" and spec.norm != "Linf":
        raise UserError("transfer with method=fgsm supports only the Linf norm; use method=pgd for L2.")
    return build_attack_spec(method, spec.norm, spec.eps, **options)


def make_transfer(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """Transfer: run :func:`surrogate_spec` on ``ctx.surrogate``; the target ``model`` is not queried."""
    surrogate = ctx.surrogate
    if surrogate is None:
        raise UserError("The transfer attack needs a surrogate model (--surrogate NAME[:CHECKPOINT]).")
    inner = surrogate_spec(spec)
    factory = inner.definition.load_factory()

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        was_training = surrogate.training
        surrogate.eval()
        try:
            with torch.no_grad():
                outputs = surrogate(images[:1])
            if outputs.shape[1] != ctx.n_classes:
                raise UserError(f"The surrogate has {outputs.shape[1]} outputs but the target has {ctx.n_classes} "
                                "classes; a transfer attack needs a surrogate with the same classes.")
            adv = factory(surrogate, inner, ctx)(images, labels).adv.detach()
        finally:
            surrogate.train(was_training)
        zeros = torch.zeros(len(images), dtype=torch.long, device=images.device)
        return AttackOutput(adv=adv.to(images.dtype), queries=zeros,
                            log=[f"transfer: {inner.label()} on the surrogate"])

    return run
