"""Running a benchmark spec: its plan of ``evaluate`` / ``attack`` calls, one results directory, then the outputs.

Each model variant (a ``[[models]]`` entry, times its grid) gets one :func:`robustbench_rpc.api.evaluate` call for
``[evaluate]`` and one :func:`robustbench_rpc.api.attack` call per ``[[attacks]]`` entry, with exactly the
arguments the equivalent command line would give: the records are those of the separate commands (tested). All go
into one results directory, which makes the run resumable (finished cells are skipped) and shardable (``--shard``
passes to every call); every cell's provenance names the spec (path, SHA-256, name). Then the tables (Markdown and
LaTeX), the plots and the report are written into the same directory. Under torchrun the spec joins the process
group once for all its calls, and rank 0 alone reports and writes the outputs. ``--shard i/n`` runs of a spec
are merged plan by plan by ``robustbench-rpc merge`` (it recognises the spec's runs by the spec's SHA-256).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_rpc.errors import UserError
from robustbench_rpc.spec.schema import BenchmarkSpec, ModelVariant

#: The tables written after a run (views) and their formats, unless ``[outputs]`` says otherwise.
DEFAULT_TABLES = ("paper", "paper-attacks", "attacks", "corruptions")
DEFAULT_FORMATS = ("md", "latex")
_EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv", "json": "json", "table": "txt"}


@dataclass
class Call:
    """One command of the plan: ``evaluate`` or ``attack`` for one model variant, with its keyword arguments."""

    kind: str
    variant: ModelVariant
    kwargs: dict[str, Any]
    where: str  # the spec entry it comes from, for messages

    def describe(self) -> str:
        """Return a one-line description such as ``attack pgd,fgsm 1/255,4/255``."""
        if self.kind == "evaluate":
            suite = self.kwargs["suite"]
            return f"evaluate {suite if isinstance(suite, str) else ','.join(suite)}"
        what = self.kwargs.get("protocol") and f"protocol {self.kwargs['protocol']}"
        eps = self.kwargs.get("eps")
        return f"attack {what or self.kwargs['attacks']}" + (f" eps {eps}" if eps and not what else "")


def model_kwargs(variant: ModelVariant) -> dict[str, Any]:
    """The model arguments of :func:`~robustbench_rpc.api.evaluate` / ``attack`` for a variant."""
    return {"model": variant.model, "checkpoint": variant.checkpoint, "model_name": variant.label,
            "model_options": dict(variant.options), "trust_checkpoint": variant.trust_checkpoint,
            "use_ema": variant.use_ema, "num_classes": variant.num_classes}


def variant_name(variant: ModelVariant) -> str:
    """A readable name of a variant: its label, or its model and grid values."""
    if variant.label:
        return variant.label
    grid = ",".join(f"{k}={v}" for k, v in variant.grid.items())
    return variant.model + (f"[{grid}]" if grid else "")


def run_kwargs(spec: BenchmarkSpec, *, force: bool = False, shard: str | None = None, shard_by: str = "cells",
               progress: bool = True, command_line: list[str] | None = None) -> dict[str, Any]:
    """The :class:`~robustbench_rpc.api.RunOptions` of every call: ``[run]``, one shared directory, the spec."""
    run = spec.run
    return {"batch_size": run.get("batch_size", 64), "workers": run.get("workers", 0),
            "prefetch_factor": run.get("prefetch"), "device": run.get("device", "auto"),
            "precision": run.get("precision", "fp32"), "channels_last": run.get("channels_last", False),
            "compile": run.get("compile", False), "decode": run.get("decode", "cpu"), "seed": run.get("seed", 0),
            "force": force, "allow_mixed": True, "progress": progress, "shard": shard, "shard_by": shard_by,
            "command_line": command_line, "spec": spec.provenance()}


def _text_list(value: Any) -> Any:
    """A TOML list of budgets or names as the command line writes it (``a,b``); numbers stay a list of floats."""
    if isinstance(value, list):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
        return ",".join(str(v) for v in value)
    return value


def evaluate_kwargs(spec: BenchmarkSpec) -> dict[str, Any]:
    """The data arguments of :func:`~robustbench_rpc.api.evaluate` from ``[evaluate]`` and ``[data]``."""
    section, data = spec.evaluate or {}, spec.data
    return {"suite": _text_list(section.get("suite", "clean")), "data_root": data.get("root"),
            "paths": {"imagenet": data.get("imagenet"), "imagenet-c": data.get("imagenet_c"),
                      "imagenet-a": data.get("imagenet_a"), "imagenet-r": data.get("imagenet_r"),
                      "imagenet-o": data.get("imagenet_o"), "folder": data.get("folder")},
            "limit": section.get("limit"), "subset": section.get("subset"),
            "corruptions": section.get("corruptions"), "severities": section.get("severities"),
            "seeds": section.get("seeds", spec.run.get("seeds")),
            "allow_missing": section.get("allow_missing", False), "labels_file": data.get("labels"),
            "class_list": data.get("classes"), "jpeg": section.get("jpeg", False),
            "corruption_rng": section.get("corruption_rng", "cpu")}


def attack_kwargs(spec: BenchmarkSpec, entry: dict[str, Any]) -> dict[str, Any]:
    """The arguments of :func:`~robustbench_rpc.api.attack` for one ``[[attacks]]`` entry."""
    data = spec.data
    dataset = entry.get("dataset", "imagenet")
    path = entry.get("data") or (data.get("imagenet") if dataset == "imagenet" else data.get("folder")
                                 if dataset == "folder" else None)
    seeds = entry.get("seeds", spec.run.get("seeds"))
    return {"attacks": _text_list(entry.get("attack", "")), "eps": _text_list(entry.get("eps")),
            "norm": entry.get("norm"), "protocol": entry.get("protocol"),
            "attack_options": dict(entry.get("options", {})), "compat": entry.get("compat") or False,
            "dataset": dataset, "data": path, "limit": entry.get("limit"), "subset": entry.get("subset"),
            "labels_file": data.get("labels"), "class_list": data.get("classes"),
            "surrogate": entry.get("surrogate"), "attack_dtype": entry.get("attack_dtype"), "seeds": seeds}


def plan_calls(spec: BenchmarkSpec) -> list[Call]:
    """Return the calls of the spec, model variant by model variant (evaluate first, then the attacks in order)."""
    calls = []
    for variant in spec.models:
        if spec.evaluate is not None:
            calls.append(Call("evaluate", variant, evaluate_kwargs(spec), spec.source.where("evaluate")))
        for index, entry in enumerate(spec.attacks):
            calls.append(Call("attack", variant, attack_kwargs(spec, entry), spec.source.where("attacks", index)))
    return calls


def check_models(spec: BenchmarkSpec) -> None:
    """Load every model variant once (on the CPU) so that a model that does not load stops the run before it starts.

    A variant that fails where its entry's first variant (without the grid) loads names the grid's options.
    """
    from robustbench_rpc.models.wrapper import load_model

    def load(variant: ModelVariant, options: dict[str, Any]) -> None:
        load_model(variant.model, variant.checkpoint, trust_checkpoint=variant.trust_checkpoint,
                   use_ema=variant.use_ema, num_classes=variant.num_classes, **options)

    checked: set[int] = set()
    for variant in spec.models:
        where = spec.source.where("models", variant.entry, "model")
        base = {k: v for k, v in variant.options.items() if k not in variant.grid}
        if variant.entry not in checked:
            checked.add(variant.entry)
            try:
                load(variant, base)
            except UserError as exc:
                raise UserError(f"The model at {where} does not load: {exc}") from None
        if variant.grid:
            try:
                load(variant, variant.options)
            except UserError as exc:
                keys = ", ".join(variant.grid)
                raise UserError(f"The grid over {keys} at {spec.source.where('models', variant.entry, 'grid')} "
                                f"gives {variant.model} options it does not take: {exc}") from None


def _check_attacks(spec: BenchmarkSpec) -> None:
    """Validate every attack entry's names, norms, budgets and options before anything runs."""
    from robustbench_rpc.attacks import build_attack_spec, parse_eps, protocol_specs
    from robustbench_rpc.engine.attack_plan import check_seeds, split_attack_options

    for index, entry in enumerate(spec.attacks):
        kwargs = attack_kwargs(spec, entry)
        try:
            if kwargs["seeds"] is not None:
                check_seeds(kwargs["seeds"])
            if kwargs["protocol"]:
                protocol_specs(kwargs["protocol"])
                continue
            names = [n.strip() for n in str(kwargs["attacks"]).split(",") if n.strip()]
            per = split_attack_options(names, kwargs["attack_options"])
            for name in names:
                first = build_attack_spec(name, kwargs["norm"], **per[name])
                eps = kwargs["eps"]
                values = parse_eps(str(eps), norm=first.norm) if not isinstance(eps, list) else eps
                for value in values:
                    build_attack_spec(name, first.norm, float(value), **per[name])
        except UserError as exc:
            raise UserError(f"The attack at {spec.source.where('attacks', index, 'eps' if 'eps' in entry else None)}"
                            f": {exc}") from None


def validate(spec: BenchmarkSpec, load_models: bool = True) -> list[Call]:
    """Check the attacks and (``load_models``) that every model loads; return the plan's calls."""
    _check_attacks(spec)
    if load_models:
        check_models(spec)
    return plan_calls(spec)


def _shard_is_empty(exc: UserError) -> bool:
    text = str(exc)
    return text.startswith("--shard ") and ("has no cells" in text or "has no samples" in text)


def run_spec(spec: BenchmarkSpec, out: str | Path, *, force: bool = False, shard: str | None = None,
             shard_by: str = "cells", progress: bool = True, command_line: list[str] | None = None,
             log: Callable[[str], None] = print) -> list[Any]:
    """Run every call of the spec into ``out`` (resumable), then write its outputs; return the run summaries.

    With ``shard`` each call runs its shard only (a call with nothing in this shard is skipped) and no outputs
    are written: merge the shards' directories first (``robustbench-rpc merge``), then ``run`` again without
    ``--shard`` writes them from the finished cells.
    """
    from robustbench_rpc.engine.distributed import process_group

    calls = validate(spec)
    options = run_kwargs(spec, force=force, shard=shard, shard_by=shard_by, progress=progress,
                         command_line=command_line)
    with process_group(options["device"]) as ctx:  # the other ranks wait at its end while rank 0 writes
        summaries = _run_calls(calls, out, options, shard, log if ctx.is_main else _silent)
        if ctx.is_main and shard is None:
            written = write_outputs(spec, Path(out))
            log(f"Wrote {', '.join(str(p) for p in written)}")
        elif ctx.is_main:
            log(f"Shard {shard} is in {out}. When every shard has run: robustbench-rpc merge SHARD_DIRS --out "
                f"MERGED, then robustbench-rpc run {spec.path} --out MERGED writes the tables (nothing is "
                f"recomputed).")
    return summaries


def _silent(_: str) -> None:
    """The log of the ranks other than 0 (rank 0 reports)."""


def _run_calls(calls: list[Call], out: str | Path, options: dict[str, Any], shard: str | None,
               log: Callable[[str], None]) -> list[Any]:
    """Run the plan's calls in order into ``out``; a call with nothing in this shard is skipped."""
    from robustbench_rpc.api import attack, evaluate

    summaries = []
    for number, call in enumerate(calls, 1):
        log(f"[{number}/{len(calls)}] {variant_name(call.variant)}: {call.describe()}")
        function = evaluate if call.kind == "evaluate" else attack
        try:
            summaries.append(function(**model_kwargs(call.variant), out=out, **call.kwargs, **options))
        except UserError as exc:
            if shard is not None and _shard_is_empty(exc):
                log(f"    nothing in shard {shard}")
                continue
            raise UserError(f"{call.describe()} of {variant_name(call.variant)} ({call.where}): {exc}") from None
        log(f"    {summaries[-1]}")
    return summaries


def in_spec_order(frame: Any, spec: BenchmarkSpec) -> Any:
    """Return the tidy frame with its models in the order of the spec's variants (the tables' row order)."""
    import json

    from robustbench_rpc.models.checkpoint import sha256_of

    digests: dict[str, str | None] = {}
    wanted = []
    for variant in spec.models:
        path = variant.checkpoint
        if path and path not in digests:
            digests[path] = sha256_of(path) if Path(path).is_file() else None
        wanted.append((variant.label or variant.model, digests.get(path) if path else None, variant.options))

    def position(model: Any, sha: Any, options: str) -> int:
        stored = json.loads(options) if options else {}
        for index, (name, digest, opts) in enumerate(wanted):
            if name == model and (digest is None or digest == sha) and all(
                    stored.get(k) == v for k, v in opts.items()):
                return index
        return len(wanted)

    order = [position(m, s, o) for m, s, o in zip(frame["model"], frame["checkpoint_sha256"],
                                                   frame["model_options"], strict=True)]
    return frame.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order").reset_index(
        drop=True)


def write_outputs(spec: BenchmarkSpec, out: Path) -> list[Path]:
    """Write the spec's tables (each view in each format, with its threat-model notes), plots and report."""
    from robustbench_rpc.reporting.exports import check_format, export
    from robustbench_rpc.reporting.paper import threat_model_notes
    from robustbench_rpc.reporting.views import build_view, check_view
    from robustbench_rpc.results.tidy import tidy

    outputs = spec.outputs
    views = outputs.get("tables", list(DEFAULT_TABLES))
    formats = outputs.get("formats", list(DEFAULT_FORMATS))
    views, formats = ([views] if isinstance(views, str) else views), ([formats] if isinstance(formats, str)
                                                                      else formats)
    for view in views:
        check_view(view)
    for fmt in formats:
        check_format(fmt)
    frame = in_spec_order(tidy(out), spec)
    notes = threat_model_notes(frame)
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for view in views:
        try:
            table = build_view(frame, view)
        except UserError:  # no cells for this view (e.g. no corruptions in the spec)
            continue
        shows_attacks = view in ("attacks", "paper-attacks") or any("robust" in str(c) for c in table.columns)
        for fmt in formats:
            path = tables / f"{view}.{_EXTENSIONS.get(fmt, fmt)}"
            export(table, fmt, path, title=view, notes=notes if shows_attacks else None)
            written.append(path)
    if outputs.get("report", True):
        from robustbench_rpc.reports import write_report

        written.append(write_report(out, out / "report.md", plots=outputs.get("plots", True)))
    elif outputs.get("plots", True):
        from robustbench_rpc.reporting.plots import write_plots

        plots = write_plots(frame, out / "plots")
        written.extend(p for plot in plots for p in plot.paths)
    return written
