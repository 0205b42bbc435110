"""Jobs for the distribution-shift suites beyond C/A/R/O: ImageNet-V2, -Sketch, Stylized-ImageNet, ObjectNet,
ImageNet-C-bar and ImageNet-3DCC (plugged into :func:`robustbench_rpc.engine.plan.build_evaluation_jobs`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from robustbench_rpc.engine.runner import ClassifyJob, Job
from robustbench_rpc.engine.sources import FileSource
from robustbench_rpc.results.schema import CellSpec

#: The suites this module builds, each named as its dataset.
SHIFT_SUITES = ("imagenet-v2", "imagenet-sketch", "stylized-imagenet", "objectnet", "imagenet-c-bar",
                "imagenet-3dcc")
#: Where ``--data-root`` looks for each of them (first match wins).
SHIFT_DATA_ROOT_CANDIDATES = {
    "imagenet-v2": ("imagenet-v2", "imagenetv2", "ImageNetV2"),
    "imagenet-sketch": ("imagenet-sketch", "ImageNet-Sketch", "sketch"),
    "stylized-imagenet": ("stylized-imagenet", "Stylized-ImageNet", "stylized_imagenet"),
    "objectnet": ("objectnet-1.0", "objectnet", "ObjectNet"),
    "imagenet-c-bar": ("ImageNet-C-Bar", "imagenet-c-bar", "imagenet_c_bar"),
    "imagenet-3dcc": ("ImageNet-3DCC", "imagenet-3dcc", "imagenet_3dcc"),
}

SpecFn = Callable[[str, str, dict[str, Any]], CellSpec]


def shift_jobs(
    entry: str,
    spec: SpecFn,
    where: str,
    preprocessing: Mapping[str, Any],
    limit: int | None,
    corruptions: str | None = None,
    severities: str | None = None,
    allow_missing: bool = False,
) -> list[Job]:
    """Return the jobs of one shift suite ``entry`` whose data is at ``where``."""
    from robustbench_rpc.data.corruption_sets import CorruptionSet
    from robustbench_rpc.data.shifts import BorderCrop, imagenet_sketch, imagenet_v2, objectnet, stylized_imagenet
    from robustbench_rpc.data.transforms import build_eval_transform

    transform = build_eval_transform(preprocessing, resize=entry not in ("imagenet-c-bar", "imagenet-3dcc"))
    if entry == "imagenet-v2":
        return [ClassifyJob(spec("imagenet-v2", "clean", {"variant": ds.info["variant"]}),
                            FileSource(ds.with_transform(transform)))
                for ds in imagenet_v2(where, limit=limit)]
    if entry in ("imagenet-sketch", "stylized-imagenet"):
        build = imagenet_sketch if entry == "imagenet-sketch" else stylized_imagenet
        return [ClassifyJob(spec(entry, "clean", {}), FileSource(build(where, limit).with_transform(transform)))]
    if entry == "objectnet":
        ds = objectnet(where, limit)
        return [ClassifyJob(spec("objectnet", "clean", {"classes": "113 overlapping, merged"}),
                            FileSource(ds.with_transform(BorderCrop(transform))))]
    from robustbench_rpc.data.corruption_sets import CORRUPTION_SETS

    # --corruptions may name ImageNet-C's corruptions too: this set takes its own, or all when none is its own
    own = [n.strip() for n in (corruptions or "").split(",") if n.strip() in CORRUPTION_SETS[entry]]
    chosen = ",".join(own) or None
    dataset = CorruptionSet(entry, where, chosen, severities, limit, allow_missing)
    return [ClassifyJob(spec(entry, "corruption", {"name": c, "severity": s, "source": "released"}),
                        FileSource(dataset.dataset(c, s).with_transform(transform), name=entry))
            for c, s in dataset.cells()]
