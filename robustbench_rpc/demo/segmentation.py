"""``robustbench-rpc demo segmentation``: the shipped digit-scenes Segmenters, clean, corrupted and attacked.

Both Segmenters (SymViT and RPC-SymViT encoders, mask-transformer decoder; ``demo train --task segmentation``
rebuilds them) are evaluated on the embedded digit-scenes test split through the segmentation task of the engine:
clean and generated corruptions, then PGD, FGSM and SegPGD at small budgets (and their worst case), each model into
its own results directory under ``out``. Then the paper's segmentation table, the comparison and the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_rpc.errors import UserError

#: The demo's Segmenters: results folder -> registered name.
SEGMENTERS = {"symvit": "segmenter_symvit_digits", "rpc-symvit": "segmenter_rpc_symvit_digits"}


@dataclass(frozen=True)
class SegmentationDemoSettings:
    """How much the segmentation demo evaluates."""

    limit: int | None = 100  # digit-scenes test scenes for clean / corrupted (None: all 200)
    corruptions: str = "standard"
    severities: str = "3"
    attacks: str = "pgd,fgsm,segpgd"
    eps: str = "1/255,2/255"
    steps: int = 5
    attack_limit: int = 50
    batch_size: int = 25

    @classmethod
    def quick(cls) -> SegmentationDemoSettings:
        """A reduced grid for a quick look (well under a minute on 2 cores)."""
        return cls(limit=40, corruptions="gaussian_noise,fog,contrast", attacks="pgd", eps="2/255", steps=3,
                   attack_limit=20, batch_size=20)


@dataclass
class SegmentationDemoResult:
    """Where the demo wrote: one results directory per model, the segmentation table and the report."""

    dirs: list[Path] = field(default_factory=list)
    table: Any = None
    report: Path | None = None


def _checkpoint(name: str, given: Mapping[str, str | Path] | None) -> Path:
    from robustbench_rpc.models.segmentation import shipped_segmentation_checkpoint

    path = (given or {}).get(name) or shipped_segmentation_checkpoint(name)
    if path is None or not Path(path).is_file():
        raise UserError(f"The shipped weights of {name} are missing; build them with robustbench-rpc demo train "
                        "--task segmentation --out robustbench_rpc/assets/checkpoints.")
    return Path(path)


def run_segmentation_demo(out: str | Path, settings: SegmentationDemoSettings = SegmentationDemoSettings(), *,
                          checkpoints: Mapping[str, str | Path] | None = None, seed: int = 0,
                          device: str = "auto", progress: bool = False) -> SegmentationDemoResult:
    """Evaluate and attack both demo Segmenters on digit-scenes into ``out``; write the report beside them.

    ``checkpoints`` maps registered names to weights to use instead of the shipped ones.
    """
    from robustbench_rpc.reporting.segmentation import segmentation_view
    from robustbench_rpc.reports import write_report
    from robustbench_rpc.results.tidy import tidy
    from robustbench_rpc.segment import attack_segmentation, evaluate_segmentation

    out = Path(out)
    paths = {name: _checkpoint(name, checkpoints) for name in SEGMENTERS.values()}  # all refused before any work
    result = SegmentationDemoResult()
    run = {"batch_size": settings.batch_size, "seed": seed, "device": device, "progress": progress}
    for folder, name in SEGMENTERS.items():
        target = out / folder
        evaluate_segmentation(name, paths[name], out=target, data="digit-scenes", suite="clean,corrupted",
                              corruptions=settings.corruptions, severities=settings.severities,
                              limit=settings.limit, **run)
        attack_segmentation(name, paths[name], out=target, data="digit-scenes", attacks=settings.attacks,
                            eps=settings.eps, steps=settings.steps, limit=settings.attack_limit, **run)
        result.dirs.append(target)
    result.table = segmentation_view(tidy(result.dirs))
    result.report = write_report(result.dirs, out / "report.md", resamples=500)
    return result
