"""Planning attack sweeps: (attack, norm, eps) cells on a dataset, from names and budgets or a preset protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from robustbench_rpc.engine.plan import SampleSelection, digits_source
from robustbench_rpc.engine.runner import AttackJob, StabilityJob
from robustbench_rpc.engine.sources import FileSource
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.schema import CellSpec

ATTACK_DATASETS = ("imagenet", "folder", "digits")


def split_attack_options(names: Sequence[str], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Assign ``key=value`` options to attacks: ``pgd.steps`` targets one attack, plain ``steps`` all of them."""
    per_attack: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in options.items():
        target, dot, option = key.partition(".")
        if dot:
            if target not in per_attack:
                raise UserError(f"Attack option {key!r} names attack {target!r}, which is not among "
                                f"the selected attacks ({', '.join(names)}).")
            per_attack[target][option] = value
        else:
            for name in names:
                per_attack[name][key] = value
    return per_attack


def _source(dataset: str, data: str | Path | None, preprocessing: Mapping[str, Any], selection: SampleSelection,
            labels_file: str | None, class_list: str | None) -> Any:
    from robustbench_rpc.data import build_dataset

    if dataset not in ATTACK_DATASETS:
        raise UserError(f"Attacks run on {', '.join(ATTACK_DATASETS)}, not on {dataset!r}.")
    if dataset == "digits":
        return digits_source("test", selection.limit)
    if data is None:
        raise UserError(f"Attacking {dataset} needs its images; pass --data PATH.")
    if not Path(data).expanduser().exists():
        raise UserError(f"--data {data} does not exist.")
    if dataset == "imagenet":
        ds = build_dataset("imagenet", data, preprocessing, labels_file=labels_file, subset=selection.subset,
                           limit=selection.limit)
    else:
        ds = build_dataset("folder", data, preprocessing, class_list=class_list, limit=selection.limit)
    return FileSource(ds)


def build_attack_jobs(
    identity: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    *,
    attacks: str | Sequence[str],
    eps: str | Sequence[float] | None,
    norm: str | None,
    protocol: str | None,
    attack_options: Mapping[str, Any],
    compat: bool | str,
    dataset: str,
    data: str | Path | None,
    limit: int | None,
    subset: str | None,
    labels_file: str | None,
    class_list: str | None,
    save_adv: str | Path | None,
    seed: int = 0,
    batch_size: int | None = None,
    surrogate: Callable[[], tuple[Any, dict[str, Any]]] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[AttackJob]:
    """Return one :class:`AttackJob` per (attack, eps), and per seed of ``seeds`` for stochastic attacks.

    Budgets are validated before any data is read. ``seeds`` (default: ``[seed]``) makes the seed a coordinate of
    every stochastic cell: one cell per seed, each drawing from its own seed. ``surrogate`` is called once when the
    plan has a transfer attack and returns (surrogate model, its identity); the identity joins the transfer cells'
    parameters.
    """
    from robustbench_rpc.attacks import build_attack_spec, parse_eps, protocol_specs
    from robustbench_rpc.attacks.protocol import protocol_threat_model

    if protocol is not None:
        compat = protocol_threat_model(protocol, compat)
        specs = list(protocol_specs(protocol))
        if attack_options:
            per = split_attack_options(sorted({s.name for s in specs}), attack_options)
            specs = [build_attack_spec(s.name, s.norm, s.eps, **{**dict(s.params), **per[s.name]}) for s in specs]
    else:
        names = [a.strip().lower() for a in (attacks.split(",") if isinstance(attacks, str) else attacks)]
        names = [n for n in names if n]
        if not names:
            raise UserError("No attack given; pass --attack NAME[,NAME...] or --protocol paper.")
        per = split_attack_options(names, attack_options)
        specs = []
        for name in names:
            first = build_attack_spec(name, norm, **per[name])  # validates the name, norm and options
            if eps is None:
                raise UserError("No budget given; pass --eps, e.g. --eps 1/255:6/255 (fractions of 255 accepted).")
            values = parse_eps(eps, norm=first.norm) if isinstance(eps, str) else list(eps)
            specs.extend(build_attack_spec(name, first.norm, float(e), **per[name]) for e in values)
    selection = SampleSelection(subset, limit)
    source = _source(dataset, data, preprocessing, selection, labels_file, class_list)
    dataset_name = "digits" if dataset == "digits" else dataset
    transfer_model, transfer_identity = None, None
    if any(s.definition.transfer for s in specs):
        if surrogate is None:
            raise UserError("The transfer attack needs a surrogate model; pass --surrogate NAME[:CHECKPOINT].")
        transfer_model, transfer_identity = surrogate()
    run_seeds = check_seeds(seeds) if seeds is not None else [int(seed)]
    jobs = []
    for spec in specs:
        for cell_seed in run_seeds if spec.definition.stochastic else [None]:
            params = {**spec.to_params(compat), **selection.params()}
            if cell_seed is not None:  # random starts / queries are drawn per batch from the cell's seed
                params.update(seed=cell_seed, batch_size=batch_size)
            if spec.definition.transfer:
                params["surrogate"] = transfer_identity
            cell = CellSpec(dataset=dataset_name, condition="attack", params=params, **identity)
            jobs.append(AttackJob(cell, source, spec, compat, save_adv,
                                  surrogate=transfer_model if spec.definition.transfer else None))
    return jobs


def check_seeds(seeds: Sequence[int] | str) -> list[int]:
    """Return the seeds of ``--seeds`` ('0,1,2,3', a range '0-3', or a list) as distinct ints >= 0, in order."""
    items: list[Any] = []
    if isinstance(seeds, str):
        for part in seeds.split(","):
            part = part.strip()
            first, dash, last = part.partition("-")
            if dash and first.strip().isdigit() and last.strip().isdigit():
                items.extend(range(int(first), int(last) + 1))
            else:
                items.append(part)
    else:
        items = list(seeds)
    out: list[int] = []
    for item in items:
        try:
            value = int(item)
            if isinstance(item, float) and not item.is_integer():
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"--seeds must be integers >= 0 such as 0,1,2,3 or 0-3, got {item!r}.") from None
        if value < 0:
            raise UserError(f"--seeds must be integers >= 0 such as 0,1,2,3 or 0-3, got {value}.")
        if value not in out:
            out.append(value)
    if not out:
        raise UserError("--seeds is empty; expected integers such as 0,1,2,3.")
    return out


def build_stability_jobs(
    identity: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    *,
    dataset: str,
    data: str | Path | None,
    limit: int | None,
    subset: str | None,
    labels_file: str | None,
    class_list: str | None,
    repeats: int,
    noise_linf: float,
    seed: int = 0,
) -> list[StabilityJob]:
    """Return the audit's stability probe: one cell of repeated passes and tiny noise on the attacked samples."""
    if repeats < 2:
        raise UserError(f"The stability probe needs at least 2 forward passes, got {repeats}.")
    selection = SampleSelection(subset, limit)
    source = _source(dataset, data, preprocessing, selection, labels_file, class_list)
    params = {"probe": "stability", "repeats": int(repeats), "noise_linf": float(noise_linf), "seed": int(seed),
              **selection.params()}
    cell = CellSpec(dataset=dataset, condition="audit", params=params, **identity)
    return [StabilityJob(cell, source, int(repeats), float(noise_linf))]
