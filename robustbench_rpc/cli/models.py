"""``robustbench-rpc models``: list the registered models and describe one (with a checkpoint's compatibility)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from robustbench_rpc.cli import options as opt

app = typer.Typer(help="List registered models and inspect a model or checkpoint.", no_args_is_help=True)


def _count_params(name: str) -> int:
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(name)
    return sum(p.numel() for p in model.parameters())


@app.command("list")
def list_command(
    timm_pattern: Annotated[
        str | None, typer.Option("--timm", help="Also list timm models matching this pattern, e.g. 'deit*'.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List this package's models (task, family, attention, parameters) and optionally timm models."""
    from rich.console import Console
    from rich.table import Table

    from robustbench_rpc.models.registry import CATALOGUE, ensure_registered
    from robustbench_rpc.models.segmentation import SEGMENTATION_MODELS, segmentation_params

    ensure_registered()
    rows: list[dict[str, Any]] = [
        {"name": e.name, "task": "classification", "family": e.family, "attention": e.attention,
         "params": _count_params(e.name), "description": e.description}
        for e in CATALOGUE.values()
    ]
    rows += [
        {"name": e.name, "task": "segmentation", "family": "segmenter", "attention": "rpc" if e.encoder ==
         "rpc_symvit" else "symmetric" if e.encoder == "symvit" else "softmax", "params": segmentation_params(e.name),
         "description": e.description}
        for e in SEGMENTATION_MODELS.values()
    ]
    if timm_pattern:
        import timm

        for name in timm.list_models(timm_pattern):
            if name not in CATALOGUE:
                rows.append({"name": name, "task": "classification", "family": "timm", "attention": "softmax",
                             "params": _count_params(name), "description": "timm model"})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Registered models", show_lines=False)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("task", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("attention", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("description", style="dim", overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["task"], row["family"], row["attention"], f"{row['params'] / 1e6:.2f}M",
                      row["description"])
    Console().print(table)


def describe_model(model: Any) -> dict[str, Any]:
    """Return a JSON-serialisable description of a loaded (wrapped) model."""
    inner = model.model
    info = model.info.as_dict()
    arch: dict[str, Any] = {}
    for attr in ("embed_dim", "depth", "num_classes", "num_features"):
        value = getattr(inner, attr, None)
        if isinstance(value, int):
            arch[attr] = value
    blocks = getattr(inner, "blocks", None)
    if blocks is not None and len(blocks) and hasattr(blocks[0], "attn"):
        heads = getattr(blocks[0].attn, "num_heads", None)
        if heads is not None:
            arch["num_heads"] = int(heads)
    patch = getattr(inner, "patch_embed", None)
    if patch is not None and hasattr(patch, "patch_size"):
        arch["patch_size"] = list(patch.patch_size) if hasattr(patch.patch_size, "__len__") else patch.patch_size
    info["architecture"] = arch
    info["preprocessing"] = {k: list(v) if isinstance(v, tuple) else v for k, v in model.preprocessing.items()}
    return info


@app.command("info")
def info_command(
    name: Annotated[str, typer.Argument(help="Model name (see `models list`), package.module:factory, or a "
                                              "checkpoint file (prints what it says about itself).")],
    checkpoint: opt.CheckpointPath = None,
    trust_checkpoint: opt.TrustCheckpoint = False,
    ema: opt.UseEma = False,
    num_classes: opt.NumClasses = None,
    model_arg: opt.ModelArgs = None,
    rpc_iters: opt.RpcIters = None,
    rpc_lambda: opt.RpcLambda = None,
    rpc_layers: opt.RpcLayers = None,
    rpc_threshold: opt.RpcThreshold = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Describe a model (architecture, RPC settings, parameters, checkpoint SHA-256, key compatibility) or a
    checkpoint file (its layout, the family and config its weights show, its recorded recipe, the name to use)."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from robustbench_rpc.models.wrapper import load_model

    if checkpoint is None and ":" not in name and Path(name).expanduser().is_file():
        _print_checkpoint(name, trust_checkpoint, as_json)
        return

    kwargs = opt.model_kwargs(model_arg, rpc_iters, rpc_lambda, rpc_layers, rpc_threshold)
    from robustbench_rpc.models.segmentation import is_segmentation_model, load_segmentation_model

    if is_segmentation_model(name):
        seg = load_segmentation_model(name, str(checkpoint) if checkpoint else None,
                                      trust_checkpoint=trust_checkpoint, num_classes=num_classes, **kwargs)
        identity = seg.identity()
        if as_json:
            typer.echo(json.dumps(identity, indent=2, default=str))
            return
        seg_table = Table(title=f"Segmentation model {name}", show_header=False)
        seg_table.add_column("field", style="bold")
        seg_table.add_column("value")
        for key, value in identity.items():
            seg_table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
        Console().print(seg_table)
        return
    model = load_model(
        name,
        str(checkpoint) if checkpoint else None,
        trust_checkpoint=trust_checkpoint,
        use_ema=ema,
        num_classes=num_classes,
        **kwargs,
    )
    info = describe_model(model)
    if model.info.recipe:
        info["recipe"] = model.info.recipe
    if checkpoint:
        info["key_compatibility"] = "all keys and shapes match (strict load)"
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    table = Table(title=f"Model {name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("name", "family", "attention", "rpc", "num_params", "checkpoint", "checkpoint_sha256",
                "checkpoint_layout", "use_ema", "key_compatibility"):
        if info.get(key) is not None:
            value = f"{info[key]:,}" if key == "num_params" else str(info[key])
            table.add_row(key, value)
    for key, value in info["architecture"].items():
        table.add_row(key, str(value))
    for key, value in info["preprocessing"].items():
        table.add_row(f"preprocessing.{key}", str(value))
    if info["options"]:
        table.add_row("options", json.dumps(info["options"]))
    Console().print(table)


def _print_checkpoint(path: str, trust: bool, as_json: bool) -> None:
    """Print :func:`robustbench_rpc.models.recipe.describe_checkpoint` as JSON or a table."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from robustbench_rpc.models.recipe import describe_checkpoint

    info = describe_checkpoint(path, trust)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    table = Table(title=escape(f"Checkpoint {path}"), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in ("checkpoint_sha256", "checkpoint_layout", "ema_weights", "tensors", "weights_family"):
        table.add_row(key, escape(str(info[key])))
    for key, value in info["weights_config"].items():
        table.add_row(f"weights.{key}", escape(str(value)))
    recipe = info["recipe"]
    if recipe is None:
        table.add_row("recipe", "none recorded (heads follow the model name)")
    else:
        table.add_row("recipe.name", escape(f"{recipe['name']} ({recipe['source']})"))
        if recipe["num_heads"] is not None:
            table.add_row("recipe.num_heads", escape(f"{recipe['num_heads']} ({recipe['heads_source']})"))
        if recipe["rpc"]:
            table.add_row("recipe.rpc", escape(json.dumps(recipe["rpc"])))
    for key, value in info["training_metadata"].items():
        table.add_row(key, escape(str(value)))
    table.add_row("load as", escape(str(info["load_as"] or "unknown family")))
    Console().print(table)
