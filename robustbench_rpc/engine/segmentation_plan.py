"""Planning segmentation cells: the suite (clean, corrupted) or the attack sweep of a segmentation source.

Every cell is ``CellSpec(dataset=<source name>, condition=clean|corruption|attack, params={"task":
"segmentation", ...})``. Corruption cells take the params of classification's generated corruptions
(:func:`robustbench_rpc.engine.plan.generated_params`: source, seed, batch size), attack cells the attack's name,
norm (Linf), eps, steps and step size as they were run, and the selection's ``limit``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustbench_rpc.engine.segmentation import DEFAULT_STEPS, SegmentationCell, SegmentationJob
from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.results.schema import SEGMENTATION_TASK, CellSpec

#: Suite entries of the segmentation task; ``corrupted`` also answers to ``c``, ``<dataset>-c``, ``ade20k-c``.
SEGMENTATION_SUITES = ("clean", "corrupted")


def parse_segmentation_suite(text: str | Sequence[str], dataset: str) -> list[str]:
    """Parse ``clean,corrupted`` (``ade20k-c``, ``digit-scenes-c``, ``DATASET-c`` name the corrupted entry)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    aliases = {"clean": "clean", "corrupted": "corrupted", "c": "corrupted", f"{dataset}-c": "corrupted",
               "ade20k-c": "corrupted", "digit-scenes-c": "corrupted", dataset: "clean"}
    out: list[str] = []
    for raw in items:
        item = raw.strip().lower()
        if not item:
            continue
        if item not in aliases:
            known = ("clean", "corrupted", f"{dataset}-c")
            raise UserError(f"Unknown segmentation suite entry {raw!r}; expected some of {', '.join(known)}"
                            f"{did_you_mean(item, known)}.")
        if aliases[item] not in out:
            out.append(aliases[item])
    if not out:
        raise UserError("--suite is empty; expected some of clean, corrupted.")
    return out


def _spec(spec_base: Mapping[str, Any], dataset: str, condition: str, params: dict[str, Any],
          limit: int | None, image_size: int | None = None) -> CellSpec:
    chosen = {"task": SEGMENTATION_TASK, **params, **({"limit": limit} if limit is not None else {}),
              **({"image_size": int(image_size)} if image_size is not None else {})}
    return CellSpec(dataset=dataset, condition=condition, params=chosen, **spec_base)


def build_segmentation_jobs(spec_base: Mapping[str, Any], source: Any, suite: Sequence[str], *,
                            corruptions: str | None = None, severities: str | None = None, seed: int = 0,
                            batch_size: int | None = None, limit: int | None = None,
                            predictions: Path | None = None, keep: int = 4,
                            image_size: int | None = None) -> list[SegmentationJob]:
    """Return the one job of a segmentation suite on ``source``: a clean cell and/or the generated corruptions."""
    from robustbench_rpc.data.imagenet_c import parse_corruptions, parse_severities
    from robustbench_rpc.engine.plan import generated_params

    if (corruptions or severities) and "corrupted" not in suite:
        raise UserError("--corruptions and --severities apply to the corrupted suite; add it: --suite "
                        "clean,corrupted.")
    cells: list[SegmentationCell] = []
    if "clean" in suite:
        cells.append(SegmentationCell(_spec(spec_base, source.name, "clean", {}, limit, image_size), "clean"))
    if "corrupted" in suite:
        # images scored one by one (own sizes) draw per image: the batch size does not change them
        per_batch = None if getattr(source, "per_image", False) else batch_size
        params = generated_params(seed, per_batch, False, None)
        for name in parse_corruptions(corruptions or "standard"):
            for severity in parse_severities(severities or "1-5"):
                spec = _spec(spec_base, source.name, "corruption", {"name": name, "severity": severity, **params},
                             limit, image_size)
                cells.append(SegmentationCell(spec, "corruption", name=name, severity=severity))
    return [SegmentationJob(cells, source, predictions if keep > 0 else None, keep)]


def build_segmentation_attack_jobs(spec_base: Mapping[str, Any], source: Any, attacks: str | Sequence[str],
                                   eps: str | Sequence[float], *, steps: int | None = None,
                                   step_size: float | None = None, limit: int | None = None,
                                   seed: int = 0, batch_size: int | None = None, image_size: int | None = None
                                   ) -> list[SegmentationJob]:
    """Return the one job of a segmentation attack sweep: one cell per (attack, eps), Linf in pixel space.

    Iterative attacks take :data:`DEFAULT_STEPS` steps of 2.5 eps / steps unless told; FGSM one step of eps.
    PGD and SegPGD start at random: their cells carry the seed and the batch size their draws follow.
    """
    from robustbench_rpc.attacks.budgets import parse_eps
    from robustbench_rpc.attacks.segmentation import SEGMENTATION_ATTACKS

    names = [a.strip().lower() for a in (attacks.split(",") if isinstance(attacks, str) else attacks) if a.strip()]
    if not names:
        raise UserError(f"No attack given; expected some of {', '.join(SEGMENTATION_ATTACKS)}.")
    for name in names:
        if name not in SEGMENTATION_ATTACKS:
            raise UserError(f"Unknown segmentation attack {name!r}; expected some of "
                            f"{', '.join(SEGMENTATION_ATTACKS)}{did_you_mean(name, SEGMENTATION_ATTACKS)}.")
    budgets = parse_eps(eps) if isinstance(eps, str) else [float(e) for e in eps]
    if steps is not None and steps < 1:
        raise UserError(f"--option steps must be >= 1, got {steps}.")
    if step_size is not None and not step_size > 0:
        raise UserError(f"--option step_size must be > 0, got {step_size}.")
    cells = []
    for name in dict.fromkeys(names):
        for value in budgets:
            n = 1 if name == "fgsm" else (steps or DEFAULT_STEPS[name])
            size = value if name == "fgsm" else (step_size if step_size is not None else 2.5 * value / n)
            params = {"name": name, "norm": "Linf", "eps": float(value), "steps": n, "step_size": float(size)}
            if name != "fgsm":  # random starts, drawn per batch (per image for sources of own sizes) from the seed
                params.update(seed=int(seed), batch_size=None if getattr(source, "per_image", False) else batch_size)
            cells.append(SegmentationCell(_spec(spec_base, source.name, "attack", params, limit, image_size), "attack",
                                          name=name, eps=float(value), steps=n, step_size=float(size)))
    return [SegmentationJob(cells, source, None, 0)]
