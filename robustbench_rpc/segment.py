"""The library entry points of the segmentation task: :func:`evaluate_segmentation` and :func:`attack_segmentation`.

They take the same path as classification's :func:`robustbench_rpc.api.evaluate` (:func:`robustbench_rpc.api.
run_plan`: refused inputs leave nothing behind, finished cells are skipped, killed runs resume from the journal,
``--shard`` works), with a segmentation model (``load_segmentation_model`` names, or a ready module mapping pixels
in [0, 1] to per-pixel logits) and a segmentation source (``digit-scenes``, ``ade20k:PATH``, ``segfolder:PATH``, or
a ready ``SegmentationSource``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from robustbench_rpc.api import ModelRequest, RunOptions, RunSummary, run_plan
from robustbench_rpc.errors import UserError

#: Clean predictions kept as PNGs (image, truth, prediction) per clean cell, for the report.
DEFAULT_KEEP = 4


@dataclass
class SegmentationModelRequest(ModelRequest):
    """A segmentation model: a registered Segmenter name (with checkpoint and encoder options) or a ready module."""

    def load(self, seed: int = 0) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
        """Return (model, model info for provenance, identity fields for cell specs)."""
        from robustbench_rpc.models.checkpoint import weights_fingerprint

        if isinstance(self.model, nn.Module):
            model = self.model
            name = self.name or type(model).__name__
            info = dict(model.identity()) if hasattr(model, "identity") else {"name": name}
            sha = info.get("checkpoint_sha256")
            options = dict(self.options)
            if sha is None:
                options["weights_sha256"] = weights_fingerprint(model)
        else:
            from robustbench_rpc.models.segmentation import load_segmentation_model

            model = load_segmentation_model(self.model, str(self.checkpoint) if self.checkpoint else None,
                                            num_classes=self.num_classes, trust_checkpoint=self.trust_checkpoint,
                                            **self.options)
            name = self.name or self.model
            info = dict(model.identity())
            sha = info.get("checkpoint_sha256")
            options = {**info.get("options", {}), **self.options}  # PAP settings a checkpoint recorded, too
            if name != self.model:
                options["architecture"] = self.model
            if sha is None:
                options["weights_sha256"] = weights_fingerprint(model)
                print(f"Warning: {self.model} has no checkpoint, so it runs with random weights (seed {seed}); "
                      "pass --checkpoint for meaningful numbers.", file=sys.stderr)
            if self.num_classes is not None:
                options["num_classes"] = self.num_classes
        info.setdefault("name", name)
        if not hasattr(model, "preprocessing"):
            window = int(getattr(model, "window", 0) or 0)
            model.preprocessing = {"input_size": (3, window, window)} if window else {}
        return model, info, {"model": name, "checkpoint_sha256": sha, "model_options": options}


def _source(data: Any, limit: int | None, image_size: int | None) -> Any:
    """The segmentation source of ``data`` (a spec text or a ready source)."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}.")
    if image_size is not None and int(image_size) < 1:
        raise UserError(f"--image-size must be a positive number of pixels, got {image_size}.")
    if not isinstance(data, str):
        return data
    from robustbench_rpc.data.segmentation import load_segmentation_source

    return load_segmentation_source(data, limit=limit, image_size=image_size)


def _request(model: str | nn.Module, checkpoint: str | Path | None, model_name: str | None,
             model_options: Mapping[str, Any] | None, num_classes: int | None,
             trust_checkpoint: bool) -> SegmentationModelRequest:
    return SegmentationModelRequest(model, checkpoint, model_name, dict(model_options or {}), trust_checkpoint,
                                    False, num_classes, {})


def _check_data(data: Any) -> None:
    if data is None or (isinstance(data, str) and not data.strip()):
        raise UserError("--task segmentation needs --data: digit-scenes (embedded), ade20k:PATH "
                        "(ADEChallengeData2016) or segfolder:PATH (images/, masks/, classes.txt).")


def evaluate_segmentation(
    model: str | nn.Module,
    checkpoint: str | Path | None = None,
    *,
    out: str | Path,
    data: Any,
    suite: str | Sequence[str] = "clean",
    corruptions: str | None = None,
    severities: str | None = None,
    limit: int | None = None,
    image_size: int | None = None,
    model_options: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    keep_predictions: int = DEFAULT_KEEP,
    **run_options: Any,
) -> RunSummary:
    """Evaluate a segmentation model on ``data`` clean and/or under generated corruptions (``suite`` clean,
    corrupted); each cell's records are per-image class areas. ``run_options`` are :class:`RunOptions` fields."""
    from robustbench_rpc.engine.segmentation_plan import build_segmentation_jobs, parse_segmentation_suite

    _check_data(data)
    if keep_predictions < 0:
        raise UserError(f"--keep-predictions must be >= 0, got {keep_predictions}.")
    run = RunOptions(**run_options)
    request = _request(model, checkpoint, model_name, model_options, num_classes, trust_checkpoint)

    def build(identity: dict[str, Any], prep: Mapping[str, Any], device: Any, loaded: nn.Module) -> list[Any]:
        source = _source(data, limit, image_size)
        entries = parse_segmentation_suite(suite, source.name)
        return build_segmentation_jobs(identity, source, entries, corruptions=corruptions, severities=severities,
                                       seed=run.seed, batch_size=run.batch_size, limit=limit,
                                       predictions=Path(out), keep=keep_predictions, image_size=image_size)

    return run_plan(request, out, run, build, "segment")


def attack_segmentation(
    model: str | nn.Module,
    checkpoint: str | Path | None = None,
    *,
    out: str | Path,
    data: Any,
    attacks: str | Sequence[str] = "pgd",
    eps: str | Sequence[float] = "1/255",
    steps: int | None = None,
    step_size: float | None = None,
    limit: int | None = None,
    image_size: int | None = None,
    model_options: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    **run_options: Any,
) -> RunSummary:
    """Attack a segmentation model on ``data``: one cell per (attack, eps) of pgd / fgsm / segpgd, Linf in pixel
    space; robust aAcc / mIoU / mAcc come from each cell's records."""
    from robustbench_rpc.engine.segmentation_plan import build_segmentation_attack_jobs

    _check_data(data)
    run = RunOptions(**run_options)
    request = _request(model, checkpoint, model_name, model_options, num_classes, trust_checkpoint)

    def build(identity: dict[str, Any], prep: Mapping[str, Any], device: Any, loaded: nn.Module) -> list[Any]:
        source = _source(data, limit, image_size)
        return build_segmentation_attack_jobs(identity, source, attacks, eps, steps=steps, step_size=step_size,
                                              limit=limit, seed=run.seed, batch_size=run.batch_size,
                                              image_size=image_size)

    return run_plan(request, out, run, build, "attack")
