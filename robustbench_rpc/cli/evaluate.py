"""``robustbench-rpc evaluate`` and ``robustbench-rpc attack``: run a suite or an attack sweep into a results dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from robustbench_rpc.cli import options as opt
from robustbench_rpc.errors import UserError
from robustbench_rpc.names import eps_text

DATA_PANEL = "Data"
RUN_PANEL = "Run"

Out = Annotated[Path, typer.Option("--out", "-o", help="Results directory (created; re-runs resume).",
                                   rich_help_panel=RUN_PANEL)]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.", rich_help_panel=RUN_PANEL)]
Workers = Annotated[int, typer.Option("--workers", help="DataLoader worker processes.", rich_help_panel=RUN_PANEL)]
Prefetch = Annotated[int | None, typer.Option("--prefetch", help="Batches each data worker loads ahead "
                                              "(with --workers > 0; default 2).", rich_help_panel=RUN_PANEL)]
Shard = Annotated[str | None, typer.Option("--shard", help="Evaluate shard i of n (0-based, e.g. 0/4) into this "
                                           "shard's own --out: with --shard-by cells the plan's cells p with "
                                           "p % n == i, with --shard-by samples every cell on the batches b with "
                                           "b % n == i (same --batch-size everywhere); combine the shards with "
                                           "'robustbench-rpc merge'.", rich_help_panel=RUN_PANEL)]
ShardBy = Annotated[str, typer.Option("--shard-by", help="How --shard splits the plan: cells (default) or samples "
                                      "(for plans with few cells, e.g. one attack on 50,000 images; each shard "
                                      "writes parts of cells that only merge reads).", rich_help_panel=RUN_PANEL)]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda, cuda:N.",
                                     rich_help_panel=RUN_PANEL)]
Amp = Annotated[str, typer.Option("--amp", help="Precision: fp32, bf16 or fp16 (autocast).", rich_help_panel=RUN_PANEL)]
ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="Use channels_last memory format.",
                                            rich_help_panel=RUN_PANEL)]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model.", rich_help_panel=RUN_PANEL)]
Decode = Annotated[str, typer.Option("--decode", help="Where JPEGs are decoded: cpu (libjpeg-turbo in the loader "
                                     "workers, PIL's exact pixels) or gpu (nvjpeg on the CUDA device, workers only "
                                     "read files; equal pixels for grayscale and 4:4:4 JPEGs, 4:2:0 chroma differs: "
                                     "mean 0.5/255 after resizing; recorded with the model, like --amp).",
                                     rich_help_panel=RUN_PANEL)]
Seed = Annotated[int, typer.Option("--seed", help="Seed of every random choice (corruptions, attacks).",
                                   rich_help_panel=RUN_PANEL)]
Limit = Annotated[int | None, typer.Option("--limit", help="Use only the first N samples of each dataset.",
                                              rich_help_panel=DATA_PANEL)]
Subset = Annotated[str | None, typer.Option("--subset", help="Named subset: robustbench-5k.",
                                               rich_help_panel=DATA_PANEL)]
Force = Annotated[bool, typer.Option("--force", help="Recompute cells that are already finished.",
                                     rich_help_panel=RUN_PANEL)]
AllowMixed = Annotated[bool, typer.Option("--allow-mixed", help="Allow another model/checkpoint in the same "
                                          "results directory.", rich_help_panel=RUN_PANEL)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.", rich_help_panel=RUN_PANEL)]
Labels = Annotated[str | None, typer.Option("--labels", help="Labels file for a flat ImageNet val layout.",
                                               rich_help_panel=DATA_PANEL)]
Classes = Annotated[str | None, typer.Option("--classes", help="Class list for --suite folder / --dataset folder.",
                                                rich_help_panel=DATA_PANEL)]
Task = Annotated[str, typer.Option("--task", help="classification (default) or segmentation (a Segmenter model, "
                                   "--data digit-scenes, ade20k:PATH or segfolder:PATH; aAcc / mIoU / mAcc).",
                                   rich_help_panel=DATA_PANEL)]
ImageSize = Annotated[int | None, typer.Option("--image-size", help="Segmentation: resize every image (and its "
                                               "mask, nearest) to N x N first (quick runs; part of the cells).",
                                               rich_help_panel=DATA_PANEL)]


def _model_request(model: str, checkpoint: Path | None, trust: bool, ema: bool, num_classes: int | None,
                   model_arg: list[str] | None, rpc: tuple[Any, ...], prep: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "model": model,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "trust_checkpoint": trust,
        "use_ema": ema,
        "num_classes": num_classes,
        "model_options": opt.model_kwargs(model_arg, *rpc),
        "preprocessing": opt.preprocessing_overrides(*prep),
    }


#: ``--data``: the one dataset's folder, the same option for ``evaluate`` and ``attack``.
DataPath = Annotated[str | None, typer.Option("--data", help="The folder of the one dataset asked for "
                                              "(imagenet, folder, imagenet-a...); several: use --imagenet etc.",
                                              rich_help_panel=DATA_PANEL)]


def _data_dataset(suite: str) -> str:
    """Return the dataset whose folder ``--data`` gives: the suite must need exactly one folder."""
    from robustbench_rpc.engine.plan import DATASET_OF_SUITE, parse_suite
    from robustbench_rpc.errors import UserError

    needed = list(dict.fromkeys(DATASET_OF_SUITE[s] for s in parse_suite(suite) if DATASET_OF_SUITE[s] != "digits"))
    if len(needed) != 1 or "imagenet-o" in needed:
        raise UserError(f"--data gives the folder of one dataset, but --suite {suite} needs "
                        f"{', '.join(needed) if needed else 'none'}; pass --imagenet, --imagenet-c, ... instead.")
    return needed[0]


def _path_pairs(items: list[str]) -> dict[str, str]:
    """Parse ``--path DATASET=DIR`` options."""
    from robustbench_rpc.engine.plan import DATASET_OF_SUITE
    from robustbench_rpc.errors import UserError, did_you_mean

    known = sorted(set(DATASET_OF_SUITE.values()) - {"digits"})
    out = {}
    for item in items:
        name, sep, where = item.partition("=")
        name = name.strip().lower()
        if not sep or not where:
            raise UserError(f"--path {item!r} is not DATASET=DIR; e.g. --path imagenet-v2=/data/imagenetv2.")
        if name not in known:
            raise UserError(f"--path names unknown dataset {name!r}; expected one of {', '.join(known)}"
                            f"{did_you_mean(name, known)}.")
        out[name] = where
    return out


def _attack_data(dataset: str, data: str | None, imagenet: str | None, folder: str | None,
                 data_root: Path | None) -> str | None:
    """Return the attack's image folder from ``--data``, ``--imagenet`` / ``--folder`` or ``--data-root``."""
    from robustbench_rpc.errors import UserError

    given = {"--data": data, "--imagenet": imagenet, "--folder": folder}
    chosen = {k: v for k, v in given.items() if v}
    if len(chosen) > 1:
        raise UserError(f"Give the attack's images once; got {' and '.join(chosen)}.")
    if imagenet and dataset != "imagenet" or folder and dataset != "folder":
        raise UserError(f"{next(iter(chosen))} does not go with --dataset {dataset}.")
    if chosen:
        return next(iter(chosen.values()))
    if data_root is not None and dataset == "imagenet":
        from robustbench_rpc.engine.plan import DataPaths

        return DataPaths(data_root).resolve("imagenet")
    return None


def _segmentation_run(batch_size: int, workers: int, prefetch: int | None, device: str, amp: str,
                      channels_last: bool, compile_model: bool, seed: int, force: bool, allow_mixed: bool,
                      shard: str | None, shard_by: str, quiet: bool) -> dict[str, Any]:
    """The run options of a segmentation command (those of classification that apply)."""
    return {"batch_size": batch_size, "workers": workers, "prefetch_factor": prefetch, "device": device,
            "precision": amp, "channels_last": channels_last, "compile": compile_model, "seed": seed, "force": force,
            "allow_mixed": allow_mixed, "shard": shard, "shard_by": shard_by, "progress": not quiet}


def _missing(value: Any) -> bool:
    return value is None or value != value  # None or NaN


def _print_notes(summary: Any) -> None:
    """Say on the terminal what the run's cells record quietly: skipped images, batches resumed from a journal."""
    for note in getattr(summary, "notes", []):
        typer.echo(note, err=True)
    resumed = getattr(summary, "resumed_batches", 0)
    if resumed:
        typer.echo(f"Resumed {resumed} finished batch(es) from the journal of an interrupted run.", err=True)


def _value_text(metric: str, value: float) -> str:
    """A metric's text in the summary table: perturbation norms as budgets (``4/255``), the rest two decimals."""
    if metric in ("linf_max", "l2_max"):
        return eps_text(value, "Linf" if metric == "linf_max" else "L2")
    return f"{value:.2f}"


def _print_summary(summary: Any, title: str) -> None:
    if getattr(summary, "rank", 0) != 0:  # distributed: rank 0 reports for everyone
        return
    _print_notes(summary)
    if getattr(summary, "part", None) is not None:  # a sample shard: parts of cells, no metrics before the merge
        typer.echo(str(summary))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    frame = summary.table
    keep = ("top1", "top5", "aupr", "auroc", "robust_top1", "success_rate", "linf_max", "l2_max", "aAcc", "mIoU",
            "mAcc")
    columns = ("dataset", "condition", "name", "severity", "norm", "eps", "metric", "value", "n")
    rows = []
    if frame is not None and not frame.empty:
        for row in frame[frame["metric"].isin(keep)].itertuples(index=False):
            rows.append((
                row.dataset, row.condition, "" if _missing(row.name) else str(row.name),
                "" if _missing(row.severity) else str(int(row.severity)), "" if _missing(row.norm) else str(row.norm),
                "" if _missing(row.eps) else eps_text(row.eps, row.norm), row.metric,
                _value_text(row.metric, row.value), str(row.n),
            ))
    used = [i for i, _ in enumerate(columns) if any(r[i] for r in rows)] or list(range(len(columns)))
    table = Table(title=title)
    for i in used:
        table.add_column(columns[i], justify="right" if columns[i] in ("value", "n", "severity", "eps") else "left",
                         no_wrap=True)
    for r in rows:
        table.add_row(*(r[i] for i in used))
    console.print(table)
    console.print(str(summary))


def evaluate_command(
    model: opt.ModelName,
    suite: Annotated[str, typer.Option("--suite", "--dataset", "-s", help="Comma list: clean (= imagenet), "
                                       "imagenet-c, imagenet-a, imagenet-r, imagenet-o, folder, digits, digits-c, "
                                       "imagenet-v2, imagenet-sketch, stylized-imagenet, objectnet, imagenet-c-bar, "
                                       "imagenet-3dcc.", rich_help_panel=DATA_PANEL)] = "clean",
    out: Out = Path("results"),
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Folder holding imagenet/val, "
                         "imagenet-c, imagenet-a, imagenet-r, imagenet-o.", rich_help_panel=DATA_PANEL)] = None,
    imagenet: Annotated[str | None, typer.Option("--imagenet", help="ImageNet validation folder.",
                                                    rich_help_panel=DATA_PANEL)] = None,
    imagenet_c: Annotated[str | None, typer.Option("--imagenet-c", help="ImageNet-C folder, or 'generated' to "
                          "corrupt the validation images on the fly.", rich_help_panel=DATA_PANEL)] = None,
    imagenet_a: Annotated[str | None, typer.Option("--imagenet-a", help="ImageNet-A folder (<wnid>/*).",
                                                      rich_help_panel=DATA_PANEL)] = None,
    imagenet_r: Annotated[str | None, typer.Option("--imagenet-r", help="ImageNet-R folder (<wnid>/*).",
                                                      rich_help_panel=DATA_PANEL)] = None,
    imagenet_o: Annotated[str | None, typer.Option("--imagenet-o", help="ImageNet-O folder (<wnid>/*); needs "
                                                      "--imagenet for the in-distribution images.",
                                                      rich_help_panel=DATA_PANEL)] = None,
    folder: Annotated[str | None, typer.Option("--folder", help="An ImageFolder of wnid classes "
                                                  "(--suite folder).", rich_help_panel=DATA_PANEL)] = None,
    data: DataPath = None,
    path: Annotated[list[str] | None, typer.Option("--path", help="DATASET=DIR (repeatable) for imagenet-v2, "
                    "imagenet-sketch, stylized-imagenet, objectnet, imagenet-c-bar, imagenet-3dcc (and the others).",
                    rich_help_panel=DATA_PANEL)] = None,
    ar_all_classes: Annotated[bool, typer.Option("--ar-all-classes", help="Score ImageNet-A/R by the argmax over "
                              "all 1000 classes instead of their 200-class mask (the official default).",
                              rich_help_panel=DATA_PANEL)] = False,
    corruptions: Annotated[str | None, typer.Option("--corruptions", help="all, standard (default), extra or "
                           "names like fog,snow.", rich_help_panel=DATA_PANEL)] = None,
    severities: Annotated[str | None, typer.Option("--severities", help="e.g. 1-5 (default) or 1,3,5.",
                                                      rich_help_panel=DATA_PANEL)] = None,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Evaluate the ImageNet-C cells that exist.",
                                                rich_help_panel=DATA_PANEL)] = False,
    jpeg: Annotated[bool, typer.Option("--jpeg", help="Generated ImageNet-C: JPEG quality-85 round trip, like the "
                                       "released files.", rich_help_panel=DATA_PANEL)] = False,
    corruption_rng: Annotated[str, typer.Option("--corruption-rng", help="Generated corruptions: draw on the cpu "
                              "(the same images on every machine) or on the run's GPU with 'device' (several "
                              "times faster there, other images that depend on the GPU model; recorded in the "
                              "cells).", rich_help_panel=DATA_PANEL)] = "cpu",
    labels: Labels = None,
    classes: Classes = None,
    limit: Limit = None,
    subset: Subset = None,
    checkpoint: opt.CheckpointPath = None,
    trust_checkpoint: opt.TrustCheckpoint = False,
    ema: opt.UseEma = False,
    num_classes: opt.NumClasses = None,
    model_arg: opt.ModelArgs = None,
    rpc_iters: opt.RpcIters = None,
    rpc_lambda: opt.RpcLambda = None,
    rpc_layers: opt.RpcLayers = None,
    rpc_threshold: opt.RpcThreshold = None,
    mean: opt.Mean = None,
    std: opt.Std = None,
    input_size: opt.InputSize = None,
    crop_pct: opt.CropPct = None,
    interpolation: opt.Interpolation = None,
    batch_size: BatchSize = 64,
    workers: Workers = 0,
    prefetch: Prefetch = None,
    device: Device = "auto",
    amp: Amp = "fp32",
    channels_last: ChannelsLast = False,
    compile_model: Compile = False,
    decode: Decode = "cpu",
    seed: Seed = 0,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Run every generated-corruption cell (digits-c, "
                     "--imagenet-c generated) once per seed, e.g. 0,1,2,3 or 0-3 (the seed is a coordinate of the "
                     "cell; tables show mean +/- std). Released datasets run once.",
                     rich_help_panel=RUN_PANEL)] = None,
    force: Force = False,
    allow_mixed: AllowMixed = False,
    shard: Shard = None,
    shard_by: ShardBy = "cells",
    quiet: Quiet = False,
    task: Task = "classification",
    image_size: ImageSize = None,
    keep_predictions: Annotated[int, typer.Option("--keep-predictions", help="Segmentation: save the first N "
                                "clean predictions as PNGs beside the truth (for the report).",
                                rich_help_panel=RUN_PANEL)] = 4,
) -> None:
    """Evaluate a model on ImageNet, ImageNet-C (released or generated), ImageNet-A/R/O, a folder or the digits;
    with --task segmentation a segmentation model on clean and corrupted (generated) images."""
    from robustbench_rpc.api import evaluate
    from robustbench_rpc.cli.segment import check_task, refuse_classification_options, run_segmentation_evaluate

    request = _model_request(model, checkpoint, trust_checkpoint, ema, num_classes, model_arg,
                             (rpc_iters, rpc_lambda, rpc_layers, rpc_threshold),
                             (mean, std, input_size, crop_pct, interpolation))
    if check_task(task, model) == "segmentation":
        refuse_classification_options({
            "--imagenet": imagenet, "--imagenet-c": imagenet_c, "--imagenet-a": imagenet_a, "--imagenet-r": imagenet_r,
            "--imagenet-o": imagenet_o, "--folder": folder, "--path": path, "--data-root": data_root,
            "--labels": labels, "--classes": classes, "--subset": subset, "--jpeg": jpeg, "--allow-missing":
            allow_missing, "--ar-all-classes": ar_all_classes, "--corruption-rng device": corruption_rng != "cpu",
            "--ema": ema, "--decode gpu": decode != "cpu", "--mean/--std/--input-size/--crop-pct/--interpolation":
            bool(request["preprocessing"])})
        summary = run_segmentation_evaluate(
            model, data, suite, _segmentation_run(batch_size, workers, prefetch, device, amp, channels_last,
                                                  compile_model, seed, force, allow_mixed, shard, shard_by, quiet),
            request, out=out, corruptions=corruptions, severities=severities, limit=limit, image_size=image_size,
            keep_predictions=keep_predictions)
        _print_summary(summary, f"{model}: segmentation")
        return
    if image_size is not None:
        raise UserError("--image-size applies to --task segmentation; classification models set their input size "
                        "with --input-size.")
    paths = {"imagenet": imagenet, "imagenet-c": imagenet_c, "imagenet-a": imagenet_a, "imagenet-r": imagenet_r,
             "imagenet-o": imagenet_o, "folder": folder}
    paths.update(_path_pairs(path or []))
    if data is not None:
        paths[_data_dataset(suite)] = data
    summary = evaluate(
        **request, out=out, suite=suite, data_root=data_root, paths=paths,
        limit=limit, subset=subset, corruptions=corruptions, severities=severities, allow_missing=allow_missing,
        labels_file=labels, class_list=classes, jpeg=jpeg, corruption_rng=corruption_rng, batch_size=batch_size,
        workers=workers, device=device, precision=amp, channels_last=channels_last, compile=compile_model,
        decode=decode, seed=seed, force=force, allow_mixed=allow_mixed, progress=not quiet, prefetch_factor=prefetch,
        shard=shard, shard_by=shard_by, ar_all_classes=ar_all_classes, seeds=seeds,
    )
    _print_summary(summary, f"{model}: evaluation")


def attack_command(
    model: opt.ModelName,
    attack: Annotated[str | None, typer.Option("--attack", "-a", help="Comma list: pgd, fgsm, spsa, sld, cw, "
                      "noise, square, apgd-ce, apgd-dlr, autoattack, transfer.")] = None,
    eps: Annotated[str | None, typer.Option("--eps", "-e", help="Budgets: 1/255,2/255 or a range 1/255:6/255 "
                   "(pixel units; fractions of 255 accepted).")] = None,
    norm: Annotated[str | None, typer.Option("--norm", help="Linf, L2 or L1 (default: the attack's own).")] = None,
    protocol: Annotated[str | None, typer.Option("--protocol", help="Preset: 'paper' (the official evaluation's "
                        "seven attacks as it computed them: PGD-20, FGSM, SPSA-10, CW, AutoAttack at 1/255..6/255, "
                        "SLD and noise, in normalized space, threat model 'paper') or 'paper-pixel' (our default "
                        "pixel-space versions at the same budgets).")] = None,
    attack_option: Annotated[list[str] | None, typer.Option("--option", help="Attack option KEY=VALUE or "
                             "ATTACK.KEY=VALUE (repeatable), e.g. steps=40, square.queries=1000.")] = None,
    compat: Annotated[str | None, typer.Option("--compat", help="Reproduce the official code's threat model: "
                      "'normalized' (normalized space, no clamping, against clean predictions), 'pixel' (the same with "
                      "pixel budgets) or 'paper' (normalized, with the official SPSA, SLD, noise and CW, defects "
                      "included). Not the default.")
                      ] = None,
    dataset: Annotated[str, typer.Option("--dataset", "--suite", "-s", help="imagenet (= clean), folder or "
                                         "digits (embedded).", rich_help_panel=DATA_PANEL)] = "imagenet",
    data: DataPath = None,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Folder holding imagenet/val.",
                                                   rich_help_panel=DATA_PANEL)] = None,
    imagenet: Annotated[str | None, typer.Option("--imagenet", help="ImageNet validation folder.",
                                                    rich_help_panel=DATA_PANEL)] = None,
    folder: Annotated[str | None, typer.Option("--folder", help="An ImageFolder of wnid classes "
                                                  "(--dataset folder).", rich_help_panel=DATA_PANEL)] = None,
    save_adv: Annotated[Path | None, typer.Option("--save-adv", help="Keep adversarial examples here "
                        "(tensors, and PNGs of a few samples).")] = None,
    surrogate: Annotated[str | None, typer.Option("--surrogate", help="The transfer attack's surrogate: "
                         "NAME_OR_FACTORY[:CHECKPOINT] (default for an RPC model: the same weights, PAP off).")
                         ] = None,
    attack_dtype: Annotated[str | None, typer.Option("--attack-dtype", help="float32 or float64: the precision "
                            "the attacks compute in (scored in float32); PAP is ill-conditioned in float32.")
                            ] = None,
    out: Out = Path("results"),
    labels: Labels = None,
    classes: Classes = None,
    limit: Limit = None,
    subset: Subset = None,
    checkpoint: opt.CheckpointPath = None,
    trust_checkpoint: opt.TrustCheckpoint = False,
    ema: opt.UseEma = False,
    num_classes: opt.NumClasses = None,
    model_arg: opt.ModelArgs = None,
    rpc_iters: opt.RpcIters = None,
    rpc_lambda: opt.RpcLambda = None,
    rpc_layers: opt.RpcLayers = None,
    rpc_threshold: opt.RpcThreshold = None,
    mean: opt.Mean = None,
    std: opt.Std = None,
    input_size: opt.InputSize = None,
    crop_pct: opt.CropPct = None,
    interpolation: opt.Interpolation = None,
    batch_size: BatchSize = 64,
    workers: Workers = 0,
    prefetch: Prefetch = None,
    device: Device = "auto",
    amp: Annotated[str, typer.Option("--amp", help="Precision of the final forward on the adversarial images: fp32, "
                   "bf16 or fp16 (autocast, as the official evaluation; fp16 needs a CUDA GPU); the attack itself "
                   "runs in fp32 or --attack-dtype. Recorded with the model.", rich_help_panel=RUN_PANEL)] = "fp32",
    decode: Decode = "cpu",
    seed: Seed = 0,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Run every stochastic attack cell once per seed, "
                     "e.g. 0,1,2,3 or 0-3 (the seed is a coordinate of the cell; tables show mean +/- std).",
                     rich_help_panel=RUN_PANEL)] = None,
    force: Force = False,
    allow_mixed: AllowMixed = False,
    shard: Shard = None,
    shard_by: ShardBy = "cells",
    quiet: Quiet = False,
    task: Task = "classification",
    image_size: ImageSize = None,
) -> None:
    """Attack a model over a range of budgets; every (attack, eps) becomes a cell of the results directory (with
    --task segmentation: pgd, fgsm or segpgd on the per-pixel cross-entropy, robust aAcc / mIoU / mAcc)."""
    from robustbench_rpc.api import attack as run_attacks
    from robustbench_rpc.attacks import parse_options
    from robustbench_rpc.cli.segment import check_task, refuse_classification_options, run_segmentation_attack

    request = _model_request(model, checkpoint, trust_checkpoint, ema, num_classes, model_arg,
                             (rpc_iters, rpc_lambda, rpc_layers, rpc_threshold),
                             (mean, std, input_size, crop_pct, interpolation))
    if check_task(task, model) == "segmentation":
        refuse_classification_options({
            "--norm": norm, "--protocol": protocol, "--compat": compat, "--dataset": dataset != "imagenet",
            "--data-root": data_root, "--imagenet": imagenet, "--folder": folder, "--save-adv": save_adv,
            "--surrogate": surrogate, "--attack-dtype": attack_dtype, "--seeds": seeds, "--labels": labels,
            "--classes": classes, "--subset": subset, "--ema": ema, "--decode gpu": decode != "cpu",
            "--mean/--std/--input-size/--crop-pct/--interpolation": bool(request["preprocessing"])})
        summary = run_segmentation_attack(
            model, data, attack, eps, parse_options(attack_option or []),
            _segmentation_run(batch_size, workers, prefetch, device, amp, False, False, seed, force, allow_mixed,
                              shard, shard_by, quiet),
            request, out=out, limit=limit, image_size=image_size)
        _print_summary(summary, f"{model}: segmentation attacks")
        return
    if image_size is not None:
        raise UserError("--image-size applies to --task segmentation.")
    dataset = "imagenet" if dataset.strip().lower() == "clean" else dataset
    data = _attack_data(dataset, data, imagenet, folder, data_root)
    summary = run_attacks(
        **request, out=out, attacks=attack or "", eps=eps, norm=norm, protocol=protocol,
        attack_options=parse_options(attack_option or []), compat=compat or False, dataset=dataset, data=data,
        limit=limit, subset=subset, labels_file=labels, class_list=classes, save_adv=save_adv,
        surrogate=surrogate, attack_dtype=attack_dtype, seeds=seeds,
        batch_size=batch_size, workers=workers, device=device, precision=amp, decode=decode, seed=seed, force=force,
        allow_mixed=allow_mixed, progress=not quiet, prefetch_factor=prefetch, shard=shard, shard_by=shard_by,
    )
    _print_summary(summary, f"{model}: attacks")
