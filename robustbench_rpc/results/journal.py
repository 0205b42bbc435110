"""The batch journal: finished batches of cells still in progress, kept durably so that a killed run resumes.

A pass of the engine (one cell, or the many cells of one generated-corruption pass) journals every canonical batch
it finishes as ``<results>/journal/<key>/batch-<number>.json``, written atomically (:mod:`robustbench_rpc.atomic`).
``key`` hashes the cells of the pass and everything that decides a batch's records (batch size, seed, precision,
dataset fingerprint), so a journal is only read back by a run that would compute the very same batches; batch
numbers are canonical (independent of the rank and world size), so a resumed run may use another number of
processes. When the pass's cells are written the journal is removed. A kill loses at most the batch each process
had in flight.

Records go through JSON with Python's shortest round-trip float repr, so a resumed cell equals an uninterrupted
one bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustbench_rpc.atomic import atomic_write_bytes
from robustbench_rpc.errors import UserError

#: Sub-directory of a results directory that holds the journals of passes in progress.
JOURNAL_DIR = "journal"
#: Version of the journal's file format (a journal of another version is ignored).
JOURNAL_FORMAT = 1
_HEADER = "journal.json"


def journal_key(cell_keys: Sequence[str], context: dict[str, Any]) -> str:
    """Return the name of the journal of a pass: a hash of its cells and of what decides their batches."""
    text = json.dumps({"cells": sorted(cell_keys), "context": context, "format": JOURNAL_FORMAT}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def journal_directories(results_root: str | Path) -> list[Path]:
    """Return the journals of unfinished passes in a results directory (empty when there are none)."""
    base = Path(results_root) / JOURNAL_DIR
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


class BatchJournal:
    """The journal of one pass: ``load()`` the batches finished earlier, ``add()`` each new one, ``discard()``."""

    def __init__(self, results_root: str | Path, cell_keys: Sequence[str], context: dict[str, Any],
                 description: str = "") -> None:
        self.key = journal_key(cell_keys, context)
        self.directory = Path(results_root) / JOURNAL_DIR / self.key
        self.header = {"format": JOURNAL_FORMAT, "cells": sorted(cell_keys), "context": context,
                       "description": description}

    def _batch_path(self, number: int) -> Path:
        return self.directory / f"batch-{number:08d}.json"

    def load(self, needed: Sequence[str] | None = None) -> dict[int, dict[str, Any]]:
        """Return ``{batch number: payload}`` of the batches journaled earlier (unreadable files are ignored).

        With ``needed`` (cell keys) only batches whose payload holds rows for every one of them are returned.
        """
        header = self.directory / _HEADER
        try:
            stored = json.loads(header.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict) or stored.get("format") != JOURNAL_FORMAT or \
                stored.get("cells") != self.header["cells"]:
            return {}
        found: dict[int, dict[str, Any]] = {}
        for path in sorted(self.directory.glob("batch-*.json")):
            try:
                entry = json.loads(path.read_text())
                payload = entry["payload"]
                if needed is not None and not set(needed) <= set(payload["rows"]):
                    continue  # journaled by a run that computed fewer cells
                found[int(entry["number"])] = payload
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a file torn by a crash of the file system itself: that batch is computed again
        return found

    def add(self, number: int, payload: dict[str, Any]) -> None:
        """Write one finished batch durably (atomic rename after fsync)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            header = self.directory / _HEADER
            if not header.exists():
                atomic_write_bytes(header, json.dumps(self.header, sort_keys=True, default=str).encode())
            data = json.dumps({"number": int(number), "payload": payload}, allow_nan=True).encode()
            atomic_write_bytes(self._batch_path(number), data)
        except OSError as exc:
            raise UserError(f"Cannot keep batch {number} in the journal {self.directory}: "
                            f"{exc.strerror or exc}; free space there or choose another --out.") from None

    def discard(self) -> None:
        """Remove the journal (its cells are written), and ``journal/`` itself when no other journal is left."""
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # rmdir only succeeds when empty: other passes' journals stay
            self.directory.parent.rmdir()


def _header_cells(directory: Path) -> list[str]:
    """The cell keys a journal's header names (none when the header is missing or unreadable)."""
    try:
        return list(json.loads((directory / _HEADER).read_text())["cells"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _cell_finished(results_root: Path, key: str) -> bool:
    return any((results_root / "cells").glob(f"*-{key}.parquet")) or \
        any((results_root / "parts").glob(f"*-{key}.part*.parquet"))


def prune_journals(results_root: str | Path) -> list[Path]:
    """Remove the journals all of whose cells (or parts of them) are finished; return the removed directories.

    Such journals are left by a kill between a pass's last cell write and the removal of its journal, or by a
    pass that another run (e.g. with another batch size) finished.
    """
    root = Path(results_root)
    removed = []
    for directory in journal_directories(root):
        cells = _header_cells(directory)
        if cells and all(_cell_finished(root, key) for key in cells):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    if removed:
        with contextlib.suppress(OSError):
            (root / JOURNAL_DIR).rmdir()
    return removed


def drop_journals(results_root: str | Path, cell_keys: Sequence[str]) -> None:
    """Remove the journals of passes over any of ``cell_keys`` (``--force``: those cells are computed anew)."""
    wanted = set(cell_keys)
    for directory in journal_directories(results_root):
        if wanted & set(_header_cells(directory)):
            shutil.rmtree(directory, ignore_errors=True)
