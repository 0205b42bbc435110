"""The results store: one self-describing Parquet file per finished cell, written atomically, plus provenance.

Layout of a results directory::

    manifest.json                     format name, schema version, model identities, list of runs
    runs/<run id>.json                the provenance of each run (versions, device, seeds, command line, ...)
    cells/<slug>-<key>.parquet        the per-sample records of one finished cell; the cell spec, the run's
                                      provenance and the row count live in the file's key-value metadata
    parts/<slug>-<key>.part<i>of<n>.parquet
                                      a *partial* cell of a ``--shard i/n --shard-by samples`` run: the records
                                      of the canonical batches ``b % n == i``, with ``part`` metadata (index,
                                      count, batch size, plan hash, batch numbers); only ``merge`` reads them

Every file is written to a temporary name in the same directory, flushed to disk and renamed into place, so a
process killed at any moment leaves either the previous state or the finished file. Temporary files (``.tmp-*``)
are never read and are removed by later runs once stale. Readers of finished cells (:meth:`ResultsStore.has`,
:meth:`ResultsStore.cell_files`, tables, tidy, compare, resume) look only in ``cells/`` and reject a file that
carries ``part`` metadata, so a partial cell is never taken for a result.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.atomic import TEMP_PREFIX, atomic_write, atomic_write_bytes
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.journal import journal_directories
from robustbench_rpc.results.schema import SCHEMA_VERSION, CellSpec, required_columns

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: ``format`` field of manifest.json; identifies a robustbench-rpc results directory.
RESULTS_FORMAT = "robustbench-rpc-results"
#: Key of the JSON blob in each cell file's Parquet key-value metadata.
METADATA_KEY = b"robustbench_rpc"
#: A temporary file untouched for this long belongs to a dead writer and is removed.
STALE_TEMP_SECONDS = 60.0


class CorruptCellWarning(UserWarning):
    """A cell file could not be read or failed verification; it is treated as unfinished."""


class CorruptCellError(UserError):
    """A cell file that was asked for explicitly is corrupt."""


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def model_identity(spec: CellSpec) -> dict[str, Any]:
    """Return what identifies the evaluated model of a cell: name, checkpoint digest and model options."""
    return {
        "model": spec.model,
        "checkpoint_sha256": spec.checkpoint_sha256,
        "model_options": dict(spec.model_options),
    }


def _identity_text(identity: dict[str, Any]) -> str:
    sha = identity.get("checkpoint_sha256")
    text = f"model {identity.get('model')!r} with checkpoint {sha[:12] + '...' if sha else 'none'}"
    if identity.get("model_options"):
        text += f" and options {json.dumps(identity['model_options'], sort_keys=True, default=str)}"
    return text


def _same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@dataclass(frozen=True)
class CellFile:
    """A verified cell file: its path, spec and metadata (spec, provenance, extra, row count)."""

    path: Path
    spec: CellSpec
    meta: dict[str, Any]

    @property
    def num_rows(self) -> int:
        """Number of records (samples) in the cell."""
        return int(self.meta["num_rows"])


class ResultsStore:
    """A results directory: finished cells as Parquet files, the runs' provenance and a manifest.

    ``create=True`` makes the directory when missing (for a run that writes); ``create=False`` opens an existing
    one read-only and raises :class:`UserError` when it is missing, empty, foreign or of another schema version.
    Cells of a model identity (name, checkpoint SHA-256, model options) other than the one already stored are
    refused unless ``allow_mixed=True``.
    """

    def __init__(self, root: str | Path, *, create: bool = False, allow_mixed: bool = False) -> None:
        self.root = Path(root)
        self.allow_mixed = allow_mixed
        self.cells_dir = self.root / "cells"
        self.runs_dir = self.root / "runs"
        self.parts_dir = self.root / "parts"
        self.manifest_path = self.root / "manifest.json"
        if create:
            self._create()
        self.manifest = self._read_manifest()
        if create:
            self.clean_temp_files()

    # ----------------------------------------------------------------------------------------------- opening
    def _create(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise UserError(f"Results path {root} is a file; expected a directory for the results.")
        if root.is_dir() and not self.manifest_path.exists():
            foreign = [p.name for p in root.iterdir() if not p.name.startswith(".")]
            if foreign:
                raise UserError(
                    f"Directory {root} is not empty and is not a robustbench-rpc results directory "
                    f"(no manifest.json); choose a new or empty directory for the results."
                )
        try:
            self.cells_dir.mkdir(parents=True, exist_ok=True)
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            if not self.manifest_path.exists():
                manifest = {
                    "format": RESULTS_FORMAT,
                    "schema_version": SCHEMA_VERSION,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "models": [],
                    "runs": [],
                }
                atomic_write_bytes(self.manifest_path, _json_bytes(manifest))
            probe = self.cells_dir / f"{TEMP_PREFIX}probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise UserError(f"Cannot write to results directory {root}: {reason}.") from exc

    def _read_manifest(self) -> dict[str, Any]:
        root = self.root
        if not root.exists():
            raise UserError(f"Results directory {root} does not exist.")
        if not root.is_dir():
            raise UserError(f"Results path {root} is a file; expected a results directory.")
        if not self.manifest_path.exists():
            if not any(p for p in root.iterdir() if not p.name.startswith(".")):
                raise UserError(f"Results directory {root} is empty; expected the output of a robustbench-rpc run.")
            raise UserError(f"Directory {root} is not a robustbench-rpc results directory (it has no manifest.json).")
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"Results manifest {self.manifest_path} is unreadable ({exc}).") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != RESULTS_FORMAT:
            raise UserError(f"{self.manifest_path} is not a robustbench-rpc results manifest.")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(
                f"Results directory {root} uses results schema version {version}, but this robustbench-rpc "
                f"reads version {SCHEMA_VERSION}; re-run the evaluation into a new directory."
            )
        return manifest

    def _save_manifest(self) -> None:
        atomic_write_bytes(self.manifest_path, _json_bytes(self.manifest))

    def clean_temp_files(self, max_age_s: float = STALE_TEMP_SECONDS) -> list[Path]:
        """Remove temporary files left by writers that died (older than ``max_age_s``); return them."""
        removed = []
        now = time.time()
        journals = journal_directories(self.root)
        for directory in (self.root, self.cells_dir, self.runs_dir, self.parts_dir, *journals):
            if not directory.is_dir():
                continue
            for path in directory.glob(f"{TEMP_PREFIX}*"):
                try:
                    if now - path.stat().st_mtime >= max_age_s:
                        path.unlink()
                        removed.append(path)
                except OSError:  # another process removed or renamed it meanwhile
                    continue
        return removed

    # ------------------------------------------------------------------------------------------------ models
    @property
    def model_identities(self) -> list[dict[str, Any]]:
        """Model identities (name, checkpoint SHA-256, options) of the cells in this directory."""
        return list(self.manifest.get("models", []))

    def check_compatible(self, identity: dict[str, Any] | CellSpec) -> None:
        """Raise :class:`UserError` when ``identity`` differs from the stored model and mixing is not allowed."""
        if isinstance(identity, CellSpec):
            identity = model_identity(identity)
        if self.allow_mixed:
            return
        for known in self.model_identities:
            if not _same_identity(known, identity):
                raise UserError(
                    f"Results directory {self.root} holds results of {_identity_text(known)}, not "
                    f"{_identity_text(identity)}; use another directory or pass --allow-mixed."
                )

    def _register_identity(self, identity: dict[str, Any]) -> None:
        if not any(_same_identity(known, identity) for known in self.model_identities):
            self.manifest = self._read_manifest()  # another process may have added runs meanwhile
            self.manifest.setdefault("models", []).append(identity)
            self._save_manifest()

    # -------------------------------------------------------------------------------------------------- runs
    def start_run(self, provenance: dict[str, Any], model: dict[str, Any] | CellSpec | None = None) -> str:
        """Record the provenance of a run in ``runs/<run id>.json`` and the manifest; return the run id.

        With ``model`` (an identity or any cell spec of the run) the run is first checked against the models
        already stored, so that a run of another model is refused before anything is computed.
        """
        if model is not None:
            identity = model_identity(model) if isinstance(model, CellSpec) else model
            self.check_compatible(identity)
            self._register_identity(identity)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        run_id = f"{stamp}-{os.getpid()}"
        atomic_write_bytes(self.runs_dir / f"{run_id}.json", _json_bytes({"run_id": run_id, **provenance}))
        self.manifest = self._read_manifest()  # another process may have added runs meanwhile
        self.manifest.setdefault("runs", []).append(
            {"run_id": run_id, "file": f"runs/{run_id}.json", "time": provenance.get("time")}
        )
        self._save_manifest()
        return run_id

    def abandon_run(self, run_id: str, *, created: bool) -> None:
        """Forget a run that stored nothing (it was refused): its record, or the whole directory it created."""
        self.manifest = self._read_manifest()
        others = [e for e in self.manifest.get("runs", []) if e.get("run_id") != run_id]
        has_results = any(self.cells_dir.glob("*.parquet")) or \
            (self.parts_dir.is_dir() and any(self.parts_dir.glob("*.parquet")))
        has_results = has_results or bool(journal_directories(self.root))  # finished batches of other passes
        if created and not others and not has_results:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)
            return
        (self.runs_dir / f"{run_id}.json").unlink(missing_ok=True)
        self.manifest["runs"] = others
        self._save_manifest()

    def import_run(self, record: dict[str, Any]) -> None:
        """Copy the provenance of a run made elsewhere (e.g. a shard being merged) under its own run id."""
        run_id = str(record["run_id"])
        if any(entry.get("run_id") == run_id for entry in self.manifest.get("runs", [])):
            return
        atomic_write_bytes(self.runs_dir / f"{run_id}.json", _json_bytes(record))
        self.manifest = self._read_manifest()
        self.manifest.setdefault("runs", []).append(
            {"run_id": run_id, "file": f"runs/{run_id}.json", "time": record.get("time")}
        )
        self._save_manifest()

    def runs(self) -> list[dict[str, Any]]:
        """Return the provenance of every recorded run, oldest first."""
        out = []
        for entry in self.manifest.get("runs", []):
            path = self.root / entry["file"]
            if path.exists():
                out.append(json.loads(path.read_text()))
        return out

    # ------------------------------------------------------------------------------------------------- cells
    def cell_path(self, spec: CellSpec) -> Path:
        """Return the file path of a cell (whether or not it exists)."""
        return self.cells_dir / f"{spec.slug()}-{spec.key()}.parquet"

    def _verify(self, path: Path, *, part: bool = False) -> CellFile:
        """Read and check a cell (or, with ``part``, a part) file's metadata; ``ValueError`` says what is wrong."""
        import pyarrow.parquet as pq

        try:
            file_meta = pq.read_metadata(path)
        except Exception as exc:  # pyarrow raises several types for truncated or garbled files
            raise ValueError(f"unreadable Parquet file ({exc})") from exc
        raw = (file_meta.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError("no robustbench-rpc metadata")
        try:
            meta = json.loads(raw)
            spec = CellSpec.from_dict(meta["spec"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable cell metadata ({exc})") from exc
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise UserError(
                f"Cell file {path} uses results schema version {meta.get('schema_version')}, but this "
                f"robustbench-rpc reads version {SCHEMA_VERSION}; re-run the evaluation into a new directory."
            )
        if int(meta.get("num_rows", -1)) != file_meta.num_rows:
            raise ValueError(f"{file_meta.num_rows} rows where the metadata says {meta.get('num_rows')}")
        part_meta = meta.get("part")
        if bool(part_meta) != part:
            raise ValueError("a partial cell of a --shard-by samples run, not a finished cell" if part_meta
                             else "a finished cell, not a part")
        tail = spec.key() + (part_suffix(part_meta["index"], part_meta["count"]) if part_meta else "")
        if meta.get("key") != spec.key() or not path.stem.endswith(tail):
            raise ValueError("the cell spec does not match the file's key")
        return CellFile(path=path, spec=spec, meta=meta)

    def _verified_or_warn(self, path: Path, *, part: bool = False) -> CellFile | None:
        try:
            return self._verify(path, part=part)
        except ValueError as exc:
            warnings.warn(
                f"{'Part' if part else 'Cell'} file {path} is corrupt ({exc}); it is treated as unfinished (left "
                "out of tables; the next run of its command computes it again).",
                CorruptCellWarning,
                stacklevel=3,
            )
            return None

    def has(self, spec: CellSpec) -> bool:
        """Return True when the cell is finished: its file exists and passes verification."""
        path = self.cell_path(spec)
        return path.exists() and self._verified_or_warn(path) is not None

    def write_cell(
        self,
        spec: CellSpec,
        records: pd.DataFrame,
        provenance: dict[str, Any],
        extra: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> Path:
        """Store the records of a finished cell atomically, with its spec and provenance; return the file path."""
        return self._write_records(self.cell_path(spec), spec, records, provenance, extra, run_id)

    def _write_records(self, path: Path, spec: CellSpec, records: pd.DataFrame, provenance: dict[str, Any],
                       extra: dict[str, Any] | None, run_id: str | None,
                       part: dict[str, Any] | None = None) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        required = required_columns(spec.condition, spec.params.get("task"))
        missing = [c for c in required if c not in records.columns]
        if missing:
            raise ValueError(f"records of cell {spec.slug()} lack the schema columns {', '.join(missing)}")
        identity = model_identity(spec)
        self.check_compatible(identity)
        self._register_identity(identity)  # before the cell, so a crash never leaves an unregistered model
        table = pa.Table.from_pandas(records, preserve_index=False)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "key": spec.key(),
            "spec": spec.to_dict(),
            "num_rows": table.num_rows,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run_id": run_id,
            "provenance": provenance,
            "extra": extra or {},
        }
        if part:
            meta["part"] = part
        blob = json.dumps(meta, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: blob})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        except OSError as exc:
            raise UserError(f"Cannot write cell file {path}: {exc.strerror or exc}.") from exc
        return path

    def read_cell(self, spec: CellSpec, columns: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Return the records and metadata of a finished cell (``columns`` limits the columns read)."""
        path = self.cell_path(spec)
        if not path.exists():
            raise UserError(f"Results directory {self.root} has no finished cell {spec.slug()} ({spec.key()}).")
        return self._read(path, columns)

    def _read(self, path: Path, columns: list[str] | None = None, *,
              part: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
        import pyarrow.parquet as pq

        try:
            cell = self._verify(path, part=part)
            table = pq.read_table(path, columns=columns)
        except ValueError as exc:
            raise CorruptCellError(f"Cell file {path} is corrupt ({exc}); re-run to recompute it.") from exc
        except OSError as exc:
            raise CorruptCellError(f"Cell file {path} is unreadable ({exc}); re-run to recompute it.") from exc
        return records_from_table(table), cell.meta

    def cell_files(self) -> list[CellFile]:
        """Return the verified cell files, sorted by name; corrupt ones are skipped with a warning."""
        if not self.cells_dir.is_dir():
            return []
        out = []
        for path in sorted(self.cells_dir.glob("*.parquet")):
            if path.name.startswith("."):
                continue
            cell = self._verified_or_warn(path)
            if cell is not None:
                out.append(cell)
        return out

    def read_records(self, cell: CellFile, columns: list[str] | None = None) -> pd.DataFrame:
        """Read the records of a listed cell file (only ``columns`` that exist in it, when given)."""
        import pyarrow.parquet as pq

        if columns is not None:
            present = set(pq.read_schema(cell.path).names)
            columns = [c for c in columns if c in present]
        return self._read(cell.path, columns)[0]

    # ------------------------------------------------------------------------------------------------- parts
    def part_path(self, spec: CellSpec, index: int, count: int) -> Path:
        """Return the file path of part ``index`` of ``count`` of a cell (whether or not it exists)."""
        return self.parts_dir / f"{spec.slug()}-{spec.key()}{part_suffix(index, count)}.parquet"

    def write_part(self, spec: CellSpec, records: pd.DataFrame, provenance: dict[str, Any],
                   extra: dict[str, Any] | None = None, *, part: dict[str, Any], run_id: str | None = None) -> Path:
        """Store a partial cell (``part`` holds at least ``index`` and ``count``) under ``parts/``; return its path."""
        path = self.part_path(spec, int(part["index"]), int(part["count"]))
        return self._write_records(path, spec, records, provenance, extra, run_id, part)

    def read_part(self, spec: CellSpec, index: int, count: int, plan_hash: str | None = None) -> CellFile | None:
        """Return part ``index`` of ``count`` of a cell when it exists, verifies and (given ``plan_hash``) was
        computed for that plan; None otherwise."""
        path = self.part_path(spec, index, count)
        found = self._verified_or_warn(path, part=True) if path.exists() else None
        if found is not None and plan_hash is not None and found.meta["part"].get("plan_hash") != plan_hash:
            return None
        return found

    def part_files(self) -> list[CellFile]:
        """Return the verified part files, sorted by name; corrupt ones are skipped with a warning."""
        if not self.parts_dir.is_dir():
            return []
        paths = sorted(p for p in self.parts_dir.glob("*.parquet") if not p.name.startswith("."))
        return [part for part in (self._verified_or_warn(p, part=True) for p in paths) if part is not None]

    def read_part_records(self, part: CellFile) -> pd.DataFrame:
        """Read the records of a listed part file."""
        return self._read(part.path, part=True)[0]

    def iter_cells(self, columns: list[str] | None = None) -> Iterator[tuple[CellSpec, pd.DataFrame, dict]]:
        """Yield ``(spec, records, meta)`` for every finished cell."""
        for cell in self.cell_files():
            yield cell.spec, self.read_records(cell, columns), cell.meta

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"


def open_stores(
    sources: ResultsStore | str | Path | Iterable[ResultsStore | str | Path],
) -> list[ResultsStore]:
    """Open one or several results directories read-only (a :class:`UserError` for a bad one)."""
    if isinstance(sources, (ResultsStore, str, Path)):
        sources = [sources]
    stores = [s if isinstance(s, ResultsStore) else ResultsStore(Path(s), create=False) for s in sources]
    if not stores:
        raise UserError("No results directory was given; expected at least one.")
    return stores


def part_suffix(index: int, count: int) -> str:
    """Return the file-name tail of part ``index`` of ``count`` (e.g. ``.part0of4``)."""
    return f".part{int(index)}of{int(count)}"


def records_from_table(table: Any) -> pd.DataFrame:
    """Convert a records Arrow table to pandas, with list columns (``top5``) as Python lists of ints."""
    import pyarrow as pa

    frame = table.to_pandas()
    for field in table.schema:
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            frame[field.name] = [None if v is None else list(v.tolist()) for v in frame[field.name]]
    return frame
