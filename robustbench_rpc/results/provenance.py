"""Provenance of a run: software versions, machine, device, seeds, checkpoint digest, dataset fingerprint.

:func:`collect_provenance` records it when a run starts; :func:`model_provenance` reads it back from results
directories, per model, for the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from robustbench_rpc.results.store import ResultsStore

#: Distributions whose versions go into every provenance record.
TRACKED_PACKAGES = ("robustbench-rpc", "torch", "torchvision", "timm", "torchattacks", "pyautoattack", "numpy")


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Return the installed version of each distribution (None when not installed), without importing it."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions.get("robustbench-rpc") is None and "robustbench-rpc" in versions:
        from robustbench_rpc import __version__

        versions["robustbench-rpc"] = __version__
    return versions


def fingerprint_directory(root: str | Path, files: Sequence[str | Path] | None = None) -> dict[str, Any]:
    """Return a cheap fingerprint of a dataset: root, file count, total bytes, SHA-256 of the sorted listing.

    The listing holds each file's path relative to ``root`` and its size, so the fingerprint changes when files
    are added, removed, renamed or resized, without reading the images. ``files`` restricts it to those files.
    """
    root = Path(root)
    if files is None:
        paths = sorted(
            str(Path(dirpath, name).relative_to(root))
            for dirpath, _dirs, names in os.walk(root)
            for name in names
            if not name.startswith(".")
        )
    else:
        paths = sorted(str(Path(p).relative_to(root) if Path(p).is_absolute() else p) for p in files)
    digest = hashlib.sha256()
    total = 0
    for rel in paths:
        size = (root / rel).stat().st_size
        total += size
        digest.update(f"{rel}\t{size}\n".encode())
    return {
        "root": str(root.resolve()),
        "file_count": len(paths),
        "total_bytes": total,
        "listing_sha256": digest.hexdigest(),
    }


def collect_provenance(
    command_line: Sequence[str] | str | None,
    device: str,
    seed: int | None,
    model_info: dict[str, Any],
    dataset_fingerprint: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Return the provenance of a run as a JSON-serialisable dict (versions, machine, device, seed, inputs).

    ``model_info`` is :meth:`ModelInfo.as_dict` (it carries ``checkpoint_sha256``); ``dataset_fingerprint`` is
    e.g. :func:`fingerprint_directory` of the dataset root (or one per dataset, keyed by name); ``extra`` keys
    (precision, batch size, world size, ...) are added as they are.
    """
    if command_line is None:
        command_line = list(sys.argv)
    elif isinstance(command_line, str):
        command_line = [command_line]
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(command_line),
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": device,
        "seed": seed,
        "model": dict(model_info),
        "checkpoint_sha256": model_info.get("checkpoint_sha256"),
        "dataset": dict(dataset_fingerprint),
        **extra,
    }


def model_provenance(stores: list[ResultsStore]) -> dict[str, dict[str, Any]]:
    """Return, per model label, its identity, results directories and the provenance of each of its runs.

    A run's provenance is its ``runs/<run id>.json`` merged with the provenance stored in its cell files (the
    cell's own values win); runs are listed oldest first with the datasets and the number of cells they wrote.
    """
    from robustbench_rpc.results.store import model_identity
    from robustbench_rpc.results.tidy import model_labels

    cells = []
    for store in stores:
        run_files = {run.get("run_id"): run for run in store.runs()}
        for cell in store.cell_files():
            cells.append((store, cell, run_files))
    labels = model_labels([model_identity(cell.spec) for _, cell, _ in cells])
    models: dict[str, dict[str, Any]] = {}
    for (store, cell, run_files), label in zip(cells, labels, strict=True):
        entry = models.setdefault(label, {**model_identity(cell.spec), "results_dirs": [], "runs": {}})
        if str(store.root) not in entry["results_dirs"]:
            entry["results_dirs"].append(str(store.root))
        run_id = cell.meta.get("run_id")
        provenance = {**run_files.get(run_id, {}), **(cell.meta.get("provenance") or {})}
        key = run_id or json.dumps(provenance, sort_keys=True, default=str)
        run = entry["runs"].setdefault(
            key, {"run_id": run_id, "provenance": provenance, "datasets": [], "cells": 0}
        )
        run["cells"] += 1
        if cell.spec.dataset not in run["datasets"]:
            run["datasets"].append(cell.spec.dataset)
        fingerprint = (cell.meta.get("extra") or {}).get("dataset_fingerprint")
        if isinstance(fingerprint, dict):  # the engine also stores each cell's dataset fingerprint
            run.setdefault("cell_fingerprints", {}).setdefault(cell.spec.dataset, fingerprint)
    for entry in models.values():
        entry["runs"] = sorted(entry["runs"].values(), key=lambda r: str(r["provenance"].get("time") or ""))
    return models
