"""Adversarial attacks behind one calling convention: a registry of specs, a runner that verifies budgets.

Typical use::

    from robustbench_rpc.attacks import build_attack_spec, run_attack
    spec = build_attack_spec("pgd", "Linf", "4/255", steps=20)
    result = run_attack(model, images, labels, spec, seed=0)
    rows = result.records(labels, index_offset=0)

Names are imported lazily so that ``import robustbench_rpc.attacks`` (and the CLI) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ATTACKS": "registry",
    "AttackDefinition": "registry",
    "AttackSpec": "registry",
    "Option": "registry",
    "build_attack_spec": "registry",
    "describe_attacks": "registry",
    "get_attack": "registry",
    "parse_options": "registry",
    "NORMS": "budgets",
    "BudgetViolationError": "budgets",
    "check_budget": "budgets",
    "format_eps": "budgets",
    "normalize_norm": "budgets",
    "parse_eps": "budgets",
    "perturbation_norms": "budgets",
    "PROTOCOLS": "protocol",
    "protocol_specs": "protocol",
    "AttackBatchResult": "runner",
    "attack_metrics": "runner",
    "run_attack": "runner",
    "SEGMENTATION_ATTACKS": "segmentation",
    "segmentation_attack": "segmentation",
    "load_adversarial": "saving",
    "save_adversarial": "saving",
    "SparseL1Descent": "sld",
    "project_l1_ball": "sld",
    "project_l1_box": "sld",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
