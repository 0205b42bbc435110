"""The library entry points: :func:`evaluate` (datasets and corruptions) and :func:`attack` (budget sweeps).

Both load (or take) a model that sees pixels in [0, 1], plan the cells, skip the finished ones in ``out``, run the
rest, write each finished cell atomically with its provenance, and return a :class:`RunSummary`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from robustbench_rpc.errors import UserError

#: Where ``--decode`` decodes JPEGs: cpu (libjpeg-turbo in the loader, PIL's pixels) or gpu (nvjpeg on the device).
DECODE_CHOICES = ("cpu", "gpu")


@dataclass
class RunSummary:
    """What a run did: where, which cells were computed or skipped (already finished), and their metrics."""

    out: Path
    written: list[Any] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)
    table: Any = None  # pandas DataFrame of the tidy rows of this run's cells (None on ranks other than 0)
    rank: int = 0  # this process's rank in a distributed run (only rank 0 writes and has the table)
    part: str | None = None  # "i/n" for a --shard-by samples run: it wrote parts of cells, not finished cells
    notes: list[str] = field(default_factory=list)  # what the terminal should say (skipped images, ...)
    resumed_batches: int = 0  # finished batches read back from the journal of an interrupted run

    def __str__(self) -> str:
        if self.part is not None:
            return (f"{len(self.written)} part(s) of cells computed, {len(self.skipped)} already finished (sample "
                    f"shard {self.part}), in {self.out}; combine the shards with 'robustbench-rpc merge'")
        return f"{len(self.written)} cell(s) computed, {len(self.skipped)} already finished, results in {self.out}"


@dataclass
class ModelRequest:
    """A model to evaluate: a registered name / factory with options, or a ready ``nn.Module`` taking pixels."""

    model: str | nn.Module
    checkpoint: str | Path | None = None
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    trust_checkpoint: bool = False
    use_ema: bool = False
    num_classes: int | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def load(self, seed: int = 0) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
        """Return (pixel-space model, model info for provenance, identity fields for cell specs)."""
        from robustbench_rpc.models.checkpoint import weights_fingerprint
        from robustbench_rpc.models.wrapper import NormalizedModel, load_model

        if isinstance(self.model, nn.Module):
            model = self.model
            info = model.info.as_dict() if isinstance(model, NormalizedModel) and model.info else {}
            name = self.name or info.get("name") or type(model).__name__
            info.setdefault("name", name)
            sha = info.get("checkpoint_sha256")
            options = {**info.get("options", {}), **self.options}
            if sha is None:  # a ready module: its weights identify it
                options["weights_sha256"] = weights_fingerprint(model)
        else:
            builder_options = dict(self.options)
            num_classes = builder_options.pop("num_classes", self.num_classes)
            model = load_model(
                self.model,
                str(self.checkpoint) if self.checkpoint else None,
                trust_checkpoint=self.trust_checkpoint,
                use_ema=self.use_ema,
                num_classes=num_classes,
                preprocessing=self.preprocessing or None,
                **builder_options,
            )
            name = self.name or self.model
            info = model.info.as_dict()
            sha = info.get("checkpoint_sha256")
            options = dict(self.options)
            if name != self.model:  # a label given by the user: keep the architecture in the identity
                options["architecture"] = self.model
            if sha is None and ":" not in self.model:
                options["weights_sha256"] = weights_fingerprint(model)
                print(f"Warning: {self.model} has no checkpoint, so it runs with random weights (seed {seed}); "
                      "pass --checkpoint for meaningful numbers.", file=sys.stderr)
            if self.num_classes is not None:
                options["num_classes"] = self.num_classes
            if self.use_ema:
                options["use_ema"] = True
            if self.preprocessing:
                options["preprocessing"] = {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in self.preprocessing.items()}
        if not hasattr(model, "preprocessing"):
            model.preprocessing = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic",
                                   **self.preprocessing}
        identity = {"model": name, "checkpoint_sha256": sha, "model_options": options}
        return model, info, identity


@dataclass
class RunOptions:
    """Engine settings shared by :func:`evaluate` and :func:`attack`."""

    batch_size: int = 64
    workers: int = 0
    prefetch_factor: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    decode: str = "cpu"
    seed: int = 0
    force: bool = False
    allow_mixed: bool = False
    progress: bool = True
    shard: str | None = None
    shard_by: str = "cells"
    command_line: Sequence[str] | None = None
    spec: dict[str, Any] | None = None  # the benchmark spec the run belongs to (path, SHA-256, name): provenance

    def validate(self) -> None:
        """Check the numbers users type."""
        from robustbench_rpc.engine.device import check_precision
        from robustbench_rpc.engine.distributed import parse_shard, parse_shard_by

        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}.")
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise UserError(f"--prefetch must be >= 1, got {self.prefetch_factor}.")
        check_precision(self.precision)
        if self.decode not in DECODE_CHOICES:
            raise UserError(f"Unknown --decode {self.decode!r}; expected cpu (libjpeg-turbo in the loader) or gpu "
                            "(nvjpeg on the CUDA device).")
        parse_shard(self.shard)
        self.shard_by = parse_shard_by(self.shard_by, self.shard)


def device_rng_label(corruption_rng: str, device: Any) -> str | None:
    """The label of generated corruptions' draws on a GPU (``"cuda:<GPU name>"``: seeded streams differ between
    GPU models), or None for the default CPU draws; ``device`` draws on a CPU run are refused."""
    if corruption_rng != "device":
        return None
    if device.type != "cuda":
        raise UserError(f"--corruption-rng device draws on the run's GPU, but this run is on {device}; the default "
                        "(cpu) already draws on the CPU.")
    import torch

    return f"cuda:{torch.cuda.get_device_name(device)}"


def _plan_cells(jobs: Sequence[Any]) -> list[Any]:
    return [spec for job in jobs for spec in job.specs]


def _select_shard(jobs: list[Any], shard: tuple[int, int] | None, shard_by: str = "cells",
                  batch_size: int = 1) -> list[Any]:
    """Keep the cells of ``shard`` (position p of the plan belongs to shard p % n); by samples, keep every cell."""
    from dataclasses import replace

    from robustbench_rpc.engine.distributed import shard_of
    from robustbench_rpc.engine.runner import GeneratedCorruptionJob

    if shard is None:
        return jobs
    index, count = shard
    if shard_by == "samples":
        batches = max(-(-len(job.source) // batch_size) for job in jobs)
        if index >= batches:
            raise UserError(f"--shard {index}/{count} --shard-by samples has no samples: the largest dataset of "
                            f"the plan has only {batches} batch(es) of {batch_size}; use at most {batches} shards "
                            "or a smaller --batch-size.")
        return jobs
    keep = {spec.key() for p, spec in enumerate(_plan_cells(jobs)) if shard_of(p, count) == index}
    out = []
    for job in jobs:
        if isinstance(job, GeneratedCorruptionJob):
            cells = [c for c in job.cells if c[0].key() in keep]
            if cells:
                out.append(replace(job, cells=cells))
        elif hasattr(job, "only"):  # a segmentation job: several cells in one pass
            kept = job.only(keep)
            if kept is not None:
                out.append(kept)
        elif job.specs[0].key() in keep:
            out.append(job)
    if not out:
        raise UserError(f"--shard {index}/{count} has no cells: the plan has only {len(_plan_cells(jobs))} "
                        f"cell(s); use at most that many shards.")
    return out


def _finished(store: Any, job: Any, spec: Any, part: Any = None) -> bool:
    """True when ``spec`` (or, with ``part``, this sample shard's part of it, for the same plan) is stored.

    A result computed on other data than the job's source is refused rather than reused.
    """
    if part is not None:
        found = store.read_part(spec, part.index, part.count, part.plan_hash)
        if found is None:
            return False
        meta = found.meta
    elif not store.has(spec):
        return False
    else:
        _, meta = store.read_cell(spec, columns=["index"])
    from robustbench_rpc.results.schema import CONTENT_KEYS

    stored = (meta.get("extra") or {}).get("dataset_fingerprint") or {}
    now = job.source.fingerprint()
    changed = [k for k in CONTENT_KEYS if k in stored and k in now and stored[k] != now[k]]
    if changed:
        raise UserError(
            f"Cell {spec.slug()} in {store.root} was computed on other {spec.dataset} data "
            f"({stored.get('root', '?')}, {stored.get('num_files', stored.get('num_samples', '?'))} files) than "
            f"now ({now.get('root', '?')}, {now.get('num_files', now.get('num_samples', '?'))} files); use another "
            "--out or pass --force to recompute."
        )
    return True


def _check_outputs(model: nn.Module, jobs: list[Any]) -> None:
    """Refuse a model whose number of outputs does not fit a dataset's classes (e.g. a 10-class head on ImageNet)."""
    inner = getattr(model, "model", model)
    outputs = getattr(inner, "num_classes", None)
    if not isinstance(outputs, int) or outputs <= 0:
        return
    for job in jobs:
        source = job.source
        classes = getattr(getattr(source, "dataset", source), "num_classes", None)
        if isinstance(classes, int) and classes != outputs:
            raise UserError(f"The model has {outputs} outputs but {source.name} has {classes} classes; evaluate it "
                            f"on a dataset with its own classes (or load a {classes}-class head).")


def _device_label(device: Any) -> str:
    """The device as the journal records it: a GPU's name too, since its kernels decide the numbers."""
    import torch

    if getattr(device, "type", None) == "cuda" and torch.cuda.is_available():
        return f"{device}:{torch.cuda.get_device_name(device)}"
    return str(device)


def run_plan(request: ModelRequest, out: str | Path, run: RunOptions, build_jobs: Any, what: str) -> RunSummary:
    """Load the model, plan with ``build_jobs(identity, preprocessing, device, model)``, run into ``out``.

    The shared path of :func:`evaluate`, :func:`attack` and the audit's probes: resumable, shardable, distributed.
    """
    return _run(request, out, run, build_jobs, what)


def _run(request: ModelRequest, out: str | Path, run: RunOptions, build_jobs: Any, what: str) -> RunSummary:
    from robustbench_rpc.atomic import check_writable_dir
    from robustbench_rpc.engine.distributed import init_distributed, shutdown

    run.validate()
    check_writable_dir(Path(out), "--out")
    ctx, device_name = init_distributed(run.device)
    try:
        summary = _run_ranked(request, out, run, build_jobs, what, ctx, device_name)
    except BaseException as exc:
        from robustbench_rpc.engine.distributed import CollectiveError

        shutdown(ctx, finished=isinstance(exc, CollectiveError))
        raise
    shutdown(ctx)
    return summary


def _run_ranked(request: ModelRequest, out: str | Path, run: RunOptions, build_jobs: Any, what: str, ctx: Any,
                device_name: str | None) -> RunSummary:
    import torch

    from robustbench_rpc.engine.device import prepare_model, resolve_device
    from robustbench_rpc.engine.distributed import (
        check_plan_agreement,
        collective_step,
        main_step,
        parse_shard,
        plan_fingerprint,
    )
    from robustbench_rpc.engine.guards import NoReadableImagesError, UnscorableBatchError
    from robustbench_rpc.engine.plan import total_samples
    from robustbench_rpc.engine.progress import ProgressReporter
    from robustbench_rpc.engine.runner import Engine, EngineOptions, SamplePart
    from robustbench_rpc.results.journal import drop_journals, prune_journals
    from robustbench_rpc.results.provenance import collect_provenance
    from robustbench_rpc.results.store import ResultsStore
    from robustbench_rpc.results.tidy import cell_metrics

    shard = parse_shard(run.shard)

    def prepare() -> tuple[Any, ...]:
        device = resolve_device(device_name)
        if run.precision == "fp16" and device.type != "cuda":  # refused before anything is written
            raise UserError(f"--amp fp16 autocasts on a CUDA GPU (as the official evaluation), but this run is on "
                            f"{device}; use --amp bf16 or fp32 on the CPU.")
        if run.decode == "gpu" and device.type != "cuda":
            raise UserError(f"--decode gpu decodes JPEGs with nvjpeg on a CUDA device, but this run is on {device}; "
                            "use --decode cpu, or --device cuda on a machine with a GPU.")
        torch.manual_seed(run.seed)
        model, info, identity = request.load(run.seed)
        # autocast and nvjpeg change the numbers: such results are kept apart from fp32, CPU-decoded ones
        changed = {**({"precision": run.precision} if run.precision != "fp32" else {}),
                   **({"decode": run.decode} if run.decode != "cpu" else {})}
        if changed:
            identity = {**identity, "model_options": {**identity["model_options"], **changed}}
        jobs = build_jobs(identity, model.preprocessing, device, model)
        if not jobs:
            raise UserError(f"Nothing to {what}: the plan has no cells.")
        _check_outputs(model, jobs)
        return device, model, info, jobs

    device, model, info, jobs = collective_step(ctx, prepare, "planning")
    plan_keys = [spec.key() for spec in _plan_cells(jobs)]
    settings = {"seed": run.seed, "batch_size": run.batch_size, "precision": run.precision}
    plan_hash = plan_fingerprint(plan_keys, **settings)
    shard_by = run.shard_by if shard else None
    check_plan_agreement(ctx, plan_fingerprint(plan_keys, shard=run.shard, shard_by=shard_by, **settings),
                         {"cells": len(plan_keys), "shard": run.shard, "shard_by": shard_by, **settings})
    all_specs = _plan_cells(jobs)
    jobs = collective_step(ctx, lambda: _select_shard(jobs, shard, run.shard_by, run.batch_size),
                           "selecting the shard")
    part = SamplePart(shard[0], shard[1], plan_hash) if shard and shard_by == "samples" else None
    plan_info = {"hash": plan_hash, "shard": f"{shard[0]}/{shard[1]}" if shard else None, "shard_by": shard_by,
                 "cells": [{"key": s.key(), "slug": s.slug()} for s in all_specs], **settings}
    options = EngineOptions(batch_size=run.batch_size, workers=run.workers, device=device, precision=run.precision,
                            seed=run.seed, force=run.force, pin_memory=device.type == "cuda",
                            prefetch_factor=run.prefetch_factor, channels_last=run.channels_last, decode=run.decode,
                            dist=ctx, part=part, journal_root=Path(out),
                            journal_context={"device": _device_label(device), "compile": run.compile,
                                             "torch": torch.__version__})
    store: Any = None
    provenance: dict[str, Any] = {}
    created = not Path(out).exists()

    def open_store() -> tuple[str, list[str]]:
        nonlocal store, provenance
        store = ResultsStore(out, create=True, allow_mixed=run.allow_mixed)
        first = jobs[0].specs[0]
        store.check_compatible(first)
        fingerprints = {}
        for job in jobs:
            fingerprints.setdefault(job.source.name, job.source.fingerprint())
        provenance = collect_provenance(
            run.command_line if run.command_line is not None else sys.argv, str(device), run.seed, info,
            fingerprints, precision=run.precision, batch_size=run.batch_size, channels_last=run.channels_last,
            compile=run.compile, decode=run.decode, world_size=ctx.world_size, distributed_backend=ctx.backend,
            plan=plan_info, **({"spec": run.spec} if run.spec else {}),
        )
        todo = [s.key() for job in jobs for s in job.specs if run.force or not _finished(store, job, s, part)]
        if run.force:  # those cells are computed anew: their journals too (once, before any rank starts)
            drop_journals(out, todo)
        run_id = store.start_run(provenance, model=first)
        return run_id, todo

    run_id, todo = main_step(ctx, open_store, "opening the results directory")
    model = prepare_model(model, device, run.channels_last, run.compile)
    summary = RunSummary(Path(out), rank=ctx.rank, part=f"{shard[0]}/{shard[1]}" if part else None)
    pending_jobs = [job for job in jobs if any(s.key() in set(todo) for s in job.specs)]
    share = -(-total_samples(pending_jobs) // ctx.world_size)
    engine = Engine(model, store, provenance, run_id, options, todo=set(todo))
    try:
        with ProgressReporter(share, enabled=run.progress and ctx.is_main, description=what) as progress:
            engine.progress = progress
            engine.run(jobs)
    except (UnscorableBatchError, NoReadableImagesError):
        if ctx.is_main and not engine.written:  # refused before anything was stored: leave nothing behind
            store.abandon_run(run_id, created=created)
        raise
    if ctx.is_main:
        prune_journals(out)  # journals whose cells are all written (left by a kill between the two)
    summary.written, summary.skipped = engine.written, engine.skipped
    summary.notes, summary.resumed_batches = engine.notes, engine.resumed_batches
    if not ctx.is_main:
        return summary
    import pandas as pd

    rows = []
    for job in jobs if part is None else []:  # a sample shard holds parts: no metrics until they are merged
        for spec in job.specs:
            records, _ = store.read_cell(spec)
            for metric, value, n in cell_metrics(spec, records):
                rows.append({"dataset": spec.dataset, "condition": spec.condition,
                             "name": spec.params.get("name"), "severity": spec.params.get("severity"),
                             "norm": spec.params.get("norm"), "eps": spec.params.get("eps"),
                             "metric": metric, "value": value, "n": n})
    summary.table = pd.DataFrame(rows, columns=["dataset", "condition", "name", "severity", "norm", "eps",
                                                "metric", "value", "n"])
    return summary


def evaluate(
    model: str | nn.Module,
    checkpoint: str | Path | None = None,
    *,
    out: str | Path,
    suite: str | Sequence[str] = "clean",
    data_root: str | Path | None = None,
    paths: Mapping[str, str | None] | None = None,
    model_options: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    num_classes: int | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    limit: int | None = None,
    subset: str | None = None,
    corruptions: str | None = None,
    severities: str | None = None,
    allow_missing: bool = False,
    labels_file: str | None = None,
    class_list: str | None = None,
    jpeg: bool = False,
    corruption_rng: str = "cpu",
    ar_all_classes: bool = False,
    seeds: Sequence[int] | str | None = None,
    **run_options: Any,
) -> RunSummary:
    """Evaluate a model on a suite (clean, imagenet-c, imagenet-a, imagenet-r, imagenet-o, folder, digits, digits-c,
    imagenet-v2, imagenet-sketch, stylized-imagenet, objectnet, imagenet-c-bar, imagenet-3dcc).

    ``paths`` maps dataset names (imagenet, imagenet-c, imagenet-a, imagenet-r, imagenet-o, folder) to directories
    (``imagenet-c`` may be ``"generated"`` to corrupt the validation images on the fly); ``data_root`` is searched
    for the usual sub-folders. ``run_options`` are :class:`RunOptions` fields (batch_size, device, seed, ...).
    ``seeds`` runs every generated-corruption cell once per seed (tables show mean ± std over the seeds).
    """
    from robustbench_rpc.engine.plan import (
        DataPaths,
        SampleSelection,
        build_evaluation_jobs,
        check_corruption_rng,
        parse_suite,
    )

    entries = parse_suite(suite)
    request = ModelRequest(model, checkpoint, model_name, dict(model_options or {}), trust_checkpoint, use_ema,
                           num_classes, dict(preprocessing or {}))
    run = RunOptions(**run_options)
    data_paths = DataPaths(Path(data_root) if data_root else None, dict(paths or {}))
    selection = SampleSelection(subset, limit)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}.")

    check_corruption_rng(corruption_rng)
    if seeds is not None:
        from robustbench_rpc.engine.attack_plan import check_seeds

        seeds = check_seeds(seeds)

    def build(identity: dict[str, Any], prep: Mapping[str, Any], device: Any, model: nn.Module) -> list[Any]:
        return build_evaluation_jobs(identity, entries, data_paths, prep, selection, corruptions=corruptions,
                                     severities=severities, allow_missing=allow_missing, labels_file=labels_file,
                                     class_list=class_list, seed=run.seed, jpeg=jpeg, batch_size=run.batch_size,
                                     rng_label=device_rng_label(corruption_rng, device),
                                     ar_all_classes=ar_all_classes, seeds=seeds)

    return _run(request, out, run, build, "evaluate")


def attack(
    model: str | nn.Module,
    checkpoint: str | Path | None = None,
    *,
    out: str | Path,
    attacks: str | Sequence[str] = "pgd",
    eps: str | Sequence[float] | None = None,
    norm: str | None = None,
    protocol: str | None = None,
    attack_options: Mapping[str, Any] | None = None,
    compat: bool | str = False,
    dataset: str = "imagenet",
    data: str | Path | None = None,
    model_options: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    num_classes: int | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    limit: int | None = None,
    subset: str | None = None,
    labels_file: str | None = None,
    class_list: str | None = None,
    save_adv: str | Path | None = None,
    surrogate: str | nn.Module | None = None,
    attack_dtype: str | None = None,
    seeds: Sequence[int] | str | None = None,
    **run_options: Any,
) -> RunSummary:
    """Attack a model over budgets: every (attack, eps) is one cell of the results directory ``out``.

    ``seeds`` (e.g. ``[0, 1, 2, 3]`` or ``"0-3"``) runs every stochastic attack cell once per seed (the seed is a
    coordinate of the cell; tables show the mean and standard deviation over seeds).

    ``attacks`` are registry names (pgd, fgsm, spsa, sld, cw, noise, square, apgd-ce, apgd-dlr, autoattack,
    transfer); ``eps`` a list of floats or text such as ``"1/255:6/255"``; ``protocol="paper"`` uses the paper's
    preset instead. ``dataset`` is imagenet (``data`` = validation folder), folder, or digits (embedded, no data
    needed). ``surrogate`` (``NAME[:CHECKPOINT]`` or a module) is the transfer attack's surrogate (default for an RPC
    model: the same weights with PAP off); ``attack_dtype`` ('float64') sets every attack's ``attack_dtype``.
    """
    from robustbench_rpc.atomic import check_writable_dir
    from robustbench_rpc.engine.attack_plan import build_attack_jobs

    if save_adv is not None:
        check_writable_dir(Path(save_adv), "--save-adv")
    request = ModelRequest(model, checkpoint, model_name, dict(model_options or {}), trust_checkpoint, use_ema,
                           num_classes, dict(preprocessing or {}))
    run = RunOptions(**run_options)
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}.")

    if seeds is not None:
        from robustbench_rpc.engine.attack_plan import check_seeds

        seeds = check_seeds(seeds)
    options = dict(attack_options or {})
    if attack_dtype is not None:
        options["attack_dtype"] = attack_dtype

    def build(identity: dict[str, Any], prep: Mapping[str, Any], device: Any, model: nn.Module) -> list[Any]:
        from robustbench_rpc.engine.surrogate import load_surrogate

        def transfer_surrogate() -> tuple[nn.Module, dict[str, Any]]:
            return load_surrogate(surrogate, model, device, trust_checkpoint=trust_checkpoint)

        return build_attack_jobs(identity, prep, attacks=attacks, eps=eps, norm=norm, protocol=protocol,
                                 attack_options=options, compat=compat, dataset=dataset,
                                 data=data, limit=limit, subset=subset, labels_file=labels_file,
                                 class_list=class_list, save_adv=save_adv, seed=run.seed,
                                 batch_size=run.batch_size, surrogate=transfer_surrogate, seeds=seeds)

    return _run(request, out, run, build, "attack")
