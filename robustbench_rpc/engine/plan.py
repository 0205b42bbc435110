"""Turning a request (suite, dataset paths, options) into cells and jobs for the engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from robustbench_rpc.engine.runner import ClassifyJob, GeneratedCorruptionJob, Job
from robustbench_rpc.engine.shift_plan import SHIFT_DATA_ROOT_CANDIDATES, SHIFT_SUITES, shift_jobs
from robustbench_rpc.engine.sources import FileSource, TensorSource
from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.results.schema import CellSpec

#: Suite entries and the dataset each one needs.
SUITES = ("clean", "imagenet-c", "imagenet-a", "imagenet-r", "imagenet-o", "folder", "digits", "digits-c",
          *SHIFT_SUITES)
DATASET_OF_SUITE = {
    "clean": "imagenet", "imagenet-c": "imagenet-c", "imagenet-a": "imagenet-a", "imagenet-r": "imagenet-r",
    "imagenet-o": "imagenet-o", "folder": "folder", "digits": "digits", "digits-c": "digits",
    **{name: name for name in SHIFT_SUITES},
}
#: Where ``--data-root`` looks for each dataset (first match wins).
DATA_ROOT_CANDIDATES = {
    "imagenet": ("imagenet/val", "imagenet", "val", "ILSVRC2012_val"),
    "imagenet-c": ("imagenet-c", "ImageNet-C", "imagenet_c"),
    "imagenet-a": ("imagenet-a", "ImageNet-A", "imagenet_a"),
    "imagenet-r": ("imagenet-r", "ImageNet-R", "imagenet_r"),
    "imagenet-o": ("imagenet-o", "ImageNet-O", "imagenet_o"),
    **SHIFT_DATA_ROOT_CANDIDATES,
}
#: Where generated corruptions draw their random numbers (``--corruption-rng``).
CORRUPTION_RNGS = ("cpu", "device")
#: How ImageNet-C was made from the validation images: resize 256, center crop 224.
IMAGENET_C_PREP = {"input_size": (3, 224, 224), "crop_pct": 224 / 256, "interpolation": "bilinear"}


def parse_suite(text: str | Sequence[str]) -> list[str]:
    """Parse ``clean,imagenet-c,...`` into suite entries (validated, order kept, duplicates dropped)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        item = raw.strip().lower()
        if not item:
            continue
        if item == "imagenet":
            item = "clean"
        if item not in SUITES:
            raise UserError(f"Unknown suite entry {raw!r}; expected some of {', '.join(SUITES)}"
                            f"{did_you_mean(item, SUITES)}.")
        if item not in out:
            out.append(item)
    if not out:
        raise UserError(f"--suite is empty; expected some of {', '.join(SUITES)}.")
    return out


@dataclass
class DataPaths:
    """Where each dataset is: a data root with the usual sub-folders and/or one path per dataset."""

    data_root: Path | None = None
    explicit: dict[str, str | None] = field(default_factory=dict)

    def resolve(self, dataset: str) -> str:
        """Return the path of ``dataset`` (or ``generated`` for on-the-fly ImageNet-C); an error names the options."""
        given = self.explicit.get(dataset)
        if given:
            if given == "generated" and dataset == "imagenet-c":
                return given
            path = Path(given).expanduser()
            if not path.exists():
                raise UserError(f"{dataset} path {path} does not exist.")
            return str(path)
        if self.data_root is not None:
            root = Path(self.data_root).expanduser()
            if not root.is_dir():
                raise UserError(f"--data-root {root} is not a directory.")
            for candidate in DATA_ROOT_CANDIDATES.get(dataset, ()):
                if (root / candidate).is_dir():
                    return str(root / candidate)
            looked = ", ".join(str(root / c) for c in DATA_ROOT_CANDIDATES.get(dataset, ()))
            raise UserError(f"No {dataset} data under --data-root {root} (looked for {looked}); "
                            f"pass {_path_option(dataset)}.")
        raise UserError(f"The {dataset} data is needed; pass {_path_option(dataset)} or --data-root DIR.")


def _path_option(dataset: str) -> str:
    """The option that gives a dataset's folder (the shift suites share ``--path NAME=DIR``)."""
    return f"--path {dataset}=DIR" if dataset in SHIFT_SUITES else f"--{dataset} PATH"


@dataclass
class SampleSelection:
    """Which samples: an optional named subset and a limit (recorded in every cell's parameters)."""

    subset: str | None = None
    limit: int | None = None

    def params(self) -> dict[str, Any]:
        """Return the cell parameters that identify this selection."""
        out: dict[str, Any] = {}
        if self.subset:
            out["subset"] = self.subset
        if self.limit is not None:
            out["limit"] = self.limit
        return out


def resize_to(size: tuple[int, int], interpolation: str) -> Callable[[Tensor], Tensor] | None:
    """Return a batch resize to the model's input size (for generated ImageNet-C at other resolutions)."""
    if tuple(size) == (224, 224):
        return None

    def apply(images: Tensor) -> Tensor:
        mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        kwargs = {"align_corners": False, "antialias": True} if mode != "nearest" else {}
        return F.interpolate(images, size=tuple(size), mode=mode, **kwargs).clamp(0, 1)

    return apply


def digits_source(split: str = "test", limit: int | None = None) -> TensorSource:
    """Return the embedded digits split as a batch source."""
    from robustbench_rpc.data.digits import load_digits_split

    data = load_digits_split(split)
    source = TensorSource("digits", data.images, data.labels, data.sample_ids(), data.fingerprint(), num_classes=10)
    return source.limit(limit)


def build_evaluation_jobs(
    spec_base: Mapping[str, Any],
    suite: Sequence[str],
    paths: DataPaths,
    preprocessing: Mapping[str, Any],
    selection: SampleSelection,
    *,
    corruptions: str | None = None,
    severities: str | None = None,
    allow_missing: bool = False,
    labels_file: str | None = None,
    class_list: str | None = None,
    seed: int = 0,
    jpeg: bool = False,
    batch_size: int | None = None,
    rng_label: str | None = None,
    ar_all_classes: bool = False,
    seeds: Sequence[int] | None = None,
) -> list[Job]:
    """Return the jobs for an evaluation suite; ``spec_base`` holds model, checkpoint_sha256, model_options.

    ``seeds`` (default: ``[seed]``) runs every generated-corruption cell once per seed (the seed is the cell's
    ``seed`` coordinate, and its draws follow it); released datasets are not random and run once.

    Generated corruptions draw from a CPU generator (``rng_label`` None: the same images on every machine) or, with
    a label such as ``"cuda:NVIDIA H200"``, from a generator on the run's GPU (faster there, other images); the
    label is part of the cells. ``ar_all_classes`` scores ImageNet-A/R by the argmax over all 1000 classes
    instead of the official 200-class mask (recorded as ``classes=1000`` in their cells).
    """
    from robustbench_rpc.data import build_dataset

    if selection.subset and not {"clean", "imagenet-c"} & set(suite):
        raise UserError(f"--subset {selection.subset} applies to the clean and imagenet-c suites only.")

    def spec(dataset: str, condition: str, params: dict[str, Any]) -> CellSpec:
        chosen = selection.params()
        if dataset not in ("imagenet", "imagenet-c"):  # the subset is applied to ImageNet val and ImageNet-C only
            chosen.pop("subset", None)
        return CellSpec(dataset=dataset, condition=condition, params={**params, **chosen}, **spec_base)

    generated = [generated_params(s, batch_size, jpeg, rng_label) for s in (seeds or [seed])]
    jobs: list[Job] = []
    for entry in suite:
        if entry == "clean":
            ds = build_dataset("imagenet", paths.resolve("imagenet"), preprocessing, labels_file=labels_file,
                               subset=selection.subset, limit=selection.limit)
            jobs.append(ClassifyJob(spec("imagenet", "clean", {}), FileSource(ds)))
        elif entry in ("imagenet-a", "imagenet-r"):
            ds = build_dataset(entry, paths.resolve(entry), preprocessing, limit=selection.limit)
            if ar_all_classes:
                ds.class_indices = None
            jobs.append(ClassifyJob(spec(entry, "clean", {"classes": 1000} if ar_all_classes else {}),
                                    FileSource(ds)))
        elif entry in SHIFT_SUITES:
            jobs.extend(shift_jobs(entry, spec, paths.resolve(entry), preprocessing, selection.limit, corruptions,
                                   severities, allow_missing))
        elif entry == "imagenet-o":
            ds = build_dataset("imagenet-o", paths.resolve("imagenet-o"), preprocessing,
                               imagenet_root=paths.resolve("imagenet"), labels_file=labels_file,
                               limit=selection.limit)
            jobs.append(ClassifyJob(spec("imagenet-o", "ood", {}), FileSource(ds), ood=True))
        elif entry == "folder":
            ds = build_dataset("folder", paths.resolve("folder"), preprocessing, class_list=class_list,
                               limit=selection.limit)
            jobs.append(ClassifyJob(spec(f"folder:{Path(ds.root).name}", "clean", {}), FileSource(ds)))
        elif entry == "imagenet-c":
            jobs.extend(_imagenet_c_jobs(spec, paths, preprocessing, selection, corruptions, severities,
                                         allow_missing, labels_file, generated))
        elif entry == "digits":
            jobs.append(ClassifyJob(spec("digits", "clean", {}), digits_source("test", selection.limit)))
        elif entry == "digits-c":
            cells = _corruption_cells(corruptions, severities)
            params_per_seed = [generated_params(p["seed"], batch_size, False, rng_label) for p in generated]
            jobs.append(GeneratedCorruptionJob(
                [(spec("digits", "corruption", {"name": c, "severity": s, **params}), c, s)
                 for params in params_per_seed for c, s in cells],
                digits_source("test", selection.limit),
            ))
    return jobs


def check_corruption_rng(rng: str) -> str:
    """Validate a ``--corruption-rng`` value (cpu or device)."""
    if rng not in CORRUPTION_RNGS:
        raise UserError(f"Unknown --corruption-rng {rng!r}; expected cpu (the same images on every machine) or "
                        "device (draws on the run's GPU: faster there, other images).")
    return rng


def generated_params(seed: int, batch_size: int | None, jpeg: bool, rng_label: str | None) -> dict[str, Any]:
    """The parameters that make a generated corruption cell: seed, batch size (seeds are per batch), JPEG, and
    for draws on a GPU the GPU's label (its random streams depend on the GPU model)."""
    return {"source": "generated", "seed": seed, "batch_size": batch_size,
            **({"jpeg_quality": 85} if jpeg else {}), **({"rng": rng_label} if rng_label else {})}


def _corruption_cells(corruptions: str | None, severities: str | None) -> list[tuple[str, int]]:
    from robustbench_rpc.data.imagenet_c import parse_corruptions, parse_severities

    names = parse_corruptions(corruptions or "standard")
    levels = parse_severities(severities or "1-5")
    return [(c, s) for c in names for s in levels]


def _imagenet_c_jobs(
    spec: Callable[[str, str, dict[str, Any]], CellSpec],
    paths: DataPaths,
    preprocessing: Mapping[str, Any],
    selection: SampleSelection,
    corruptions: str | None,
    severities: str | None,
    allow_missing: bool,
    labels_file: str | None,
    params_per_seed: list[dict[str, Any]],
) -> list[Job]:
    from robustbench_rpc.data import build_dataset

    where = paths.resolve("imagenet-c")
    if where == "generated":
        clean = build_dataset("imagenet", paths.resolve("imagenet"), IMAGENET_C_PREP, labels_file=labels_file,
                              subset=selection.subset, limit=selection.limit)
        size = tuple(preprocessing.get("input_size", (3, 224, 224)))[-2:]
        cells = [(spec("imagenet-c", "corruption", {"name": c, "severity": s, **params}), c, s)
                 for params in params_per_seed for c, s in _corruption_cells(corruptions, severities)]
        return [GeneratedCorruptionJob(cells, FileSource(clean),
                                       to_model=resize_to(size, str(preprocessing.get("interpolation", "bicubic"))))]
    dataset_c = build_dataset("imagenet-c", where, preprocessing, corruptions=corruptions or "standard",
                              severities=severities or "1-5", subset=selection.subset, limit=selection.limit,
                              allow_missing=allow_missing)
    return [
        ClassifyJob(spec("imagenet-c", "corruption", {"name": c, "severity": s, "source": "released"}),
                    FileSource(dataset_c.dataset(c, s), name="imagenet-c"))
        for c, s in dataset_c.cells()
    ]


def total_samples(jobs: Sequence[Job]) -> int:
    """Return the number of sample evaluations the jobs will perform (for the overall progress bar)."""
    total = 0
    for job in jobs:
        total += len(job.source) * len(job.specs)  # a job with several cells runs each on every image
    return total

