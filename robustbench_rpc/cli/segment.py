"""``evaluate --task segmentation`` and ``attack --task segmentation``: the segmentation task behind the same commands.

Segmentation shares the two commands with classification (one results directory layout, one engine, the same run
options) rather than a command of its own: what differs is the model loader, the data (``--data digit-scenes``,
``ade20k:PATH``, ``segfolder:PATH``) and the metrics (aAcc / mIoU / mAcc). Options that only mean something for
classification (ImageNet folders, labels files, preprocessing, ...) are refused with ``--task segmentation``.
"""

from __future__ import annotations

from typing import Any

from robustbench_rpc.errors import UserError

#: The tasks ``--task`` knows.
TASKS = ("classification", "segmentation")
#: Record-level attack options a segmentation attack takes (``--option steps=N``).
ATTACK_OPTIONS = ("steps", "step_size")


def check_task(task: str, model: str | None = None) -> str:
    """Validate ``--task`` (classification or segmentation); a Segmenter name needs ``--task segmentation``."""
    value = task.strip().lower()
    if value not in TASKS:
        raise UserError(f"Unknown --task {task!r}; expected classification or segmentation.")
    if value == "classification" and model is not None:
        from robustbench_rpc.models.segmentation import is_segmentation_model

        if is_segmentation_model(model):
            raise UserError(f"{model} is a segmentation model; pass --task segmentation with --data "
                            "digit-scenes, ade20k:PATH or segfolder:PATH.")
    return value


def refuse_classification_options(given: dict[str, Any]) -> None:
    """Raise for the first classification-only option given with ``--task segmentation``."""
    for option, value in given.items():
        if value not in (None, False, [], ()):
            raise UserError(f"{option} does not apply to --task segmentation; its data is --data digit-scenes, "
                            "ade20k:PATH or segfolder:PATH.")


def _attack_options(options: dict[str, str]) -> dict[str, Any]:
    """The steps and step size of ``--option KEY=VALUE`` (step sizes accept fractions of 255)."""
    from robustbench_rpc.attacks.budgets import parse_number

    unknown = sorted(set(options) - set(ATTACK_OPTIONS))
    if unknown:
        raise UserError(f"Segmentation attacks take no option {', '.join(unknown)}; their options are steps and "
                        "step_size.")
    out: dict[str, Any] = {}
    if "steps" in options:
        try:
            out["steps"] = int(options["steps"])
        except ValueError:
            raise UserError(f"--option steps={options['steps']} is not a whole number.") from None
    if "step_size" in options:
        out["step_size"] = parse_number(options["step_size"])
    return out


def run_segmentation_evaluate(model: str, data: str | None, suite: str, run: dict[str, Any],
                              model_fields: dict[str, Any], **fields: Any) -> Any:
    """Call :func:`robustbench_rpc.segment.evaluate_segmentation` with the command's values."""
    from robustbench_rpc.segment import evaluate_segmentation

    return evaluate_segmentation(model, model_fields["checkpoint"], data=data, suite=suite,
                                 model_options=model_fields["model_options"],
                                 num_classes=model_fields["num_classes"],
                                 trust_checkpoint=model_fields["trust_checkpoint"], **fields, **run)


def run_segmentation_attack(model: str, data: str | None, attacks: str | None, eps: str | None,
                            options: dict[str, str], run: dict[str, Any], model_fields: dict[str, Any],
                            **fields: Any) -> Any:
    """Call :func:`robustbench_rpc.segment.attack_segmentation` with the command's values."""
    from robustbench_rpc.segment import attack_segmentation

    if not eps:
        raise UserError("attack --task segmentation needs --eps, e.g. --eps 1/255,2/255.")
    return attack_segmentation(model, model_fields["checkpoint"], data=data, attacks=attacks or "pgd", eps=eps,
                               model_options=model_fields["model_options"], num_classes=model_fields["num_classes"],
                               trust_checkpoint=model_fields["trust_checkpoint"], **_attack_options(options),
                               **fields, **run)
