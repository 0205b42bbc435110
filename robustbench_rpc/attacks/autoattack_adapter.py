"""Factories for APGD-CE, APGD-DLR and AutoAttack, built on pyautoattack (the packaged AutoAttack).

pyautoattack facts this relies on (0.2.0): ``AutoAttack`` has a keyword-only constructor whose ``device`` defaults to
'cpu' (we pass the model's device), ``run_standard_evaluation`` returns ``(x_adv, y_adv)``, and the per-attack robust
accuracies are only written to the ``auto-attack`` logger (captured here into :attr:`AttackOutput.log`).

Target classes: AutoAttack 'standard' runs the targeted attacks against the 9 most likely wrong classes (5 for
APGD-T under L1). A model with fewer classes has only ``C - 1`` wrong classes, so both targeted attacks use
``min(9, C - 1)`` (``min(5, C - 1)`` for L1 APGD-T) there; the targeted DLR loss needs ``C >= 4``.
"""

from __future__ import annotations

import logging

from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack
from torch import Tensor, nn

from robustbench_rpc.attacks.base import AttackContext, AttackFn, AttackOutput
from robustbench_rpc.attacks.registry import AttackSpec
from robustbench_rpc.errors import UserError

LOGGER_NAME = "auto-attack"
#: Prefix of captured lines that AutoAttack logged as warnings (the flags of its ``checks`` module).
WARNING_PREFIX = "warning: "


class _LogCapture(logging.Handler):
    """Collect the messages of the ``auto-attack`` logger during one run."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # AutoAttack's checks (randomized / dynamic defence, zero gradients, Square beating the others) are warnings
        self.lines.append(f"{WARNING_PREFIX}{message}" if record.levelno >= logging.WARNING else message)


def _run_logged(func, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    """Call ``func`` with the auto-attack logger captured (and kept off the console); return (result, lines)."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = _LogCapture()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        return func(*args, **kwargs), handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _require_classes(spec: AttackSpec, ctx: AttackContext, needed: int, why: str) -> None:
    """Raise a UserError when the model has fewer than ``needed`` classes."""
    if ctx.n_classes < needed:
        raise UserError(
            f"Attack {spec.name!r} needs a model with at least {needed} classes ({why}); this one has {ctx.n_classes}."
        )


def _make_apgd(model: nn.Module, spec: AttackSpec, ctx: AttackContext, loss: str) -> AttackFn:
    """APGD on ``loss`` ('ce' or 'dlr') with the spec's steps, restarts, rho and eot_iter."""
    p = spec.params
    attack = APGDAttack(
        model,
        n_iter=int(p["steps"]),
        norm=spec.norm,
        n_restarts=int(p["restarts"]),
        eps=spec.eps,
        seed=int(ctx.seed),
        loss=loss,
        eot_iter=max(1, int(p.get("eot_iter", 1))),  # 0 (automatic) is resolved by the runner before this
        rho=float(p["rho"]),
        verbose=False,
        device=ctx.device,
        logger=logging.getLogger(LOGGER_NAME),
    )
    if spec.norm == "L1":
        attack.use_largereps = True  # as AutoAttack does for L1

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        adv, lines = _run_logged(attack.perturb, images, labels)
        return AttackOutput(adv=adv.detach(), log=lines)

    return run


def make_apgd_ce(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """APGD-CE: pyautoattack ``APGDAttack`` on the cross-entropy."""
    return _make_apgd(model, spec, ctx, "ce")


def make_apgd_dlr(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """APGD-DLR: pyautoattack ``APGDAttack`` on the difference-of-logits-ratio loss (>= 3 classes)."""
    _require_classes(spec, ctx, 3, "the DLR loss uses the 3 largest logits")
    return _make_apgd(model, spec, ctx, "dlr")


def target_classes(version: str, norm: str, n_classes: int) -> tuple[int, int]:
    """Return (APGD-T, FAB-T) target-class counts: AutoAttack's (9, 9) or (5, 9) for L1, capped at C - 1."""
    apgd_t = 5 if (version == "standard" and norm == "L1") else 9
    return min(apgd_t, n_classes - 1), min(9, n_classes - 1)


def build_autoattack(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AutoAttack:
    """Return a configured pyautoattack ``AutoAttack`` for ``spec`` (version, norm, eps, seed, device, targets)."""
    version = str(spec.params["version"])
    if version == "rand":
        _require_classes(spec, ctx, 3, "APGD-DLR uses the 3 largest logits")
    else:
        _require_classes(spec, ctx, 4, "the targeted DLR loss of APGD-T uses the 4 largest logits")
    adversary = AutoAttack(
        model, norm=spec.norm, eps=spec.eps, seed=int(ctx.seed), version=version, device=ctx.device
    )
    apgd_t, fab_t = target_classes(version, spec.norm, ctx.n_classes)
    adversary.apgd_targeted.n_target_classes = apgd_t
    adversary.fab.n_target_classes = fab_t
    return adversary


def make_autoattack(model: nn.Module, spec: AttackSpec, ctx: AttackContext) -> AttackFn:
    """AutoAttack (standard / plus / rand) run on the whole batch; per-attack accuracies go to the log lines."""
    adversary = build_autoattack(model, spec, ctx)

    def run(images: Tensor, labels: Tensor) -> AttackOutput:
        (adv, _), lines = _run_logged(
            adversary.run_standard_evaluation, images, labels, batch_size=len(images)
        )
        return AttackOutput(adv=adv.detach(), log=lines)

    return run
