"""``diagnose``: the attention diagnostics of a model on a dataset, clean and under one corruption, as stored cells.

Two cells per run (condition ``diagnose``): the clean images (params ``input="clean"``) and the same images under
one corruption and severity (``input="corrupted"``, ``name``, ``severity``). Their records are the
:data:`~robustbench_rpc.results.schema.DIAGNOSE_COLUMNS` (one row per layer, head, iteration and quantity), with
the run's provenance; a re-run skips the finished cells. :func:`diagnostics_frame` reads them back as one frame.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_rpc.errors import UserError

__all__ = ["DATASETS", "DiagnoseSummary", "diagnose", "diagnostics_frame"]

#: Datasets ``diagnose`` reads: the embedded digits, or ImageNet val (``data`` = its folder).
DATASETS = ("digits", "imagenet")


@dataclass
class DiagnoseSummary:
    """What a diagnose run did: where, the cells written or already there, and the frame of both cells."""

    out: Path
    written: list[Any] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)
    frame: Any = None  # pandas DataFrame, as diagnostics_frame returns for this run's cells

    def __str__(self) -> str:
        return (f"{len(self.written)} diagnose cell(s) computed, {len(self.skipped)} already finished, "
                f"results in {self.out}")


def _images(dataset: str, data: str | Path | None, preprocessing: Mapping[str, Any], limit: int,
            labels_file: str | None = None) -> Any:
    from robustbench_rpc.engine.plan import digits_source
    from robustbench_rpc.engine.sources import FileSource

    _check_data(dataset, data)
    if dataset == "digits":
        return digits_source("test", limit)
    from robustbench_rpc.data import build_dataset

    return FileSource(build_dataset("imagenet", str(Path(data).expanduser()), preprocessing, limit=limit,
                                    labels_file=labels_file))


def _check_data(dataset: str, data: str | Path | None) -> None:
    if dataset not in DATASETS:
        raise UserError(f"Unknown dataset {dataset!r} for diagnose; expected one of {', '.join(DATASETS)}.")
    if dataset == "digits" and data is not None:
        raise UserError("The digits are embedded; drop --data (it is for --dataset imagenet).")
    if dataset == "imagenet":
        if data is None:
            raise UserError("--dataset imagenet needs --data, the ImageNet validation folder.")
        if not Path(data).expanduser().exists():
            raise UserError(f"imagenet path {Path(data).expanduser()} does not exist.")


def _load_pixels(source: Any) -> torch.Tensor:
    batches = list(source.batches(batch_size=max(len(source), 1)))
    images = [b.images for b in batches if len(b.images)]
    if not images:
        raise UserError(f"Dataset {source.name} gave no readable images to diagnose.")
    return torch.cat(images)


def diagnose(
    model: str | nn.Module,
    checkpoint: str | Path | None = None,
    *,
    out: str | Path,
    dataset: str = "digits",
    data: str | Path | None = None,
    limit: int = 32,
    corruption: str = "gaussian_noise",
    severity: int = 3,
    seed: int = 0,
    model_options: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    num_classes: int | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    labels_file: str | None = None,
    device: str = "cpu",
    force: bool = False,
) -> DiagnoseSummary:
    """Diagnose ``model``'s attention on ``limit`` images of ``dataset``, clean and under ``corruption``/``severity``.

    ``model`` is a registered name, a timm name, ``package.module:factory`` or a ready module taking pixels in
    [0, 1]; the two cells go into the results directory ``out`` (created; finished cells are kept unless
    ``force``). ``device``: where the model runs (``auto``, ``cpu``, ``cuda:N``); the measures are computed in
    float64 there. Returns a :class:`DiagnoseSummary` whose ``frame`` holds both cells' records.
    """
    from robustbench_rpc.api import ModelRequest
    from robustbench_rpc.corruptions import check_corruption_name, check_severity, corrupt
    from robustbench_rpc.diagnostics.layers import batch_records
    from robustbench_rpc.diagnostics.probes import find_attention
    from robustbench_rpc.engine.device import resolve_device
    from robustbench_rpc.results.provenance import collect_provenance
    from robustbench_rpc.results.schema import CellSpec
    from robustbench_rpc.results.store import ResultsStore

    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UserError(f"--limit must be an integer >= 1, got {limit!r}.")
    corruption = check_corruption_name(corruption)
    severity = check_severity(severity)
    _check_data(dataset, data)
    target = resolve_device(device)
    request = ModelRequest(model, checkpoint, model_name, dict(model_options or {}), trust_checkpoint, use_ema,
                           num_classes, dict(preprocessing or {}))
    torch.manual_seed(seed)
    net, info, identity = request.load(seed)
    net.eval().to(target)
    probes = find_attention(net, identity["model"])  # before any work: a model without readable attention stops here
    source = _images(dataset, data, net.preprocessing, limit, labels_file)
    clean_spec = CellSpec(dataset=source.name, condition="diagnose", params={"input": "clean", "limit": limit},
                          **identity)
    corrupt_spec = CellSpec(dataset=source.name, condition="diagnose",
                            params={"input": "corrupted", "name": corruption, "severity": severity, "limit": limit,
                                    "seed": seed}, **identity)
    specs = (clean_spec, corrupt_spec)
    existing = ResultsStore(Path(out), create=False) if (Path(out) / "manifest.json").is_file() else None
    todo = [s for s in specs if force or existing is None or not existing.has(s)]
    summary = DiagnoseSummary(Path(out), skipped=[s for s in specs if s not in todo])
    if existing is not None and todo:
        existing.check_compatible(clean_spec)  # another model's directory: refused before any work
    if todo:  # measure everything first, so that an error leaves nothing written
        import pandas as pd

        pixels = _load_pixels(source)
        frames = []
        for spec in todo:
            images = pixels
            if spec is corrupt_spec:
                images = corrupt(pixels, corruption, severity, generator=torch.Generator().manual_seed(seed))
            frames.append(pd.DataFrame(batch_records(net, images.to(target), probes)))
        provenance = collect_provenance(sys.argv, str(target), seed, info, source.fingerprint(),
                                        samples=int(pixels.shape[0]))
        store = ResultsStore(Path(out), create=True)
        store.check_compatible(clean_spec)
        run_id = store.start_run(provenance, clean_spec)
        for spec, frame in zip(todo, frames, strict=True):
            store.write_cell(spec, frame, provenance, run_id=run_id)
            summary.written.append(spec)
    store = ResultsStore(Path(out), create=False)
    summary.frame = diagnostics_frame([store], keys={clean_spec.key(), corrupt_spec.key()})
    return summary


def diagnostics_frame(sources: Iterable[Any], keys: set[str] | None = None) -> Any:
    """Return the records of every diagnose cell of the results directories, with the cells' coordinates.

    Columns: model, model_label, checkpoint_sha256, dataset, input (clean / corrupted), corruption, severity,
    then :data:`~robustbench_rpc.results.schema.DIAGNOSE_COLUMNS`. ``keys`` keeps only those cells.
    """
    import pandas as pd

    from robustbench_rpc.results.schema import DIAGNOSE_COLUMNS
    from robustbench_rpc.results.store import ResultsStore, model_identity
    from robustbench_rpc.results.tidy import model_labels

    stores = [s if isinstance(s, ResultsStore) else ResultsStore(Path(s), create=False) for s in sources]
    frames, identities = [], []
    for store in stores:
        for cell in store.cell_files():
            spec = cell.spec
            if spec.condition != "diagnose" or (keys is not None and spec.key() not in keys):
                continue
            records = store.read_records(cell)
            params = spec.params
            records.insert(0, "model", spec.model)
            records.insert(1, "checkpoint_sha256", spec.checkpoint_sha256)
            records.insert(2, "dataset", spec.dataset)
            records.insert(3, "input", params.get("input"))
            records.insert(4, "corruption", params.get("name"))
            records.insert(5, "severity", params.get("severity"))
            frames.append(records)
            identities.append(model_identity(spec))
    columns = ["model", "model_label", "checkpoint_sha256", "dataset", "input", "corruption", "severity",
               *DIAGNOSE_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=columns)
    labels = model_labels(identities)
    for records, label in zip(frames, labels, strict=True):
        records.insert(1, "model_label", label)
    return pd.concat(frames, ignore_index=True)[columns]
