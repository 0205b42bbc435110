"""Atomic file writes: a temporary file next to the target, flushed to disk and renamed into place.

Shared by the results store and by reporting's exports, plots and report (importable from anywhere, like
``errors`` and ``names``). A process killed at any moment leaves either the previous file or the finished one;
temporary files start with :data:`TEMP_PREFIX`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

#: Name prefix of the temporary files (the store removes stale ones).
TEMP_PREFIX = ".tmp-"


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry (the rename) to disk where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, fsync it and rename it to ``path``."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def check_writable_dir(path: Path, option: str) -> None:
    """Raise ``UserError`` unless ``path`` is (or can be created as) a directory this process can write into.

    Checked before any work, so that a run is refused at once rather than after hours of computing.
    """
    from robustbench_rpc.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; expected a directory (a new one, or one to add to).")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{option} {path} cannot be created: {probe} is a file, not a directory.")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        if probe == path:
            raise UserError(f"{option} {path} is not writable (permission denied); choose a directory you can "
                            "write to.")
        raise UserError(f"{option} {path} cannot be created: permission denied on {probe}; choose a location "
                        "you can write to.")
