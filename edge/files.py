"""Writing files so that a kill, a power cut or a full disk never leaves half of one: the
spool's events, the JSON-lines file, a training run's records; and no core file at all."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of data is written (a write may take only part of it: a filling disk,
    a file-size limit); an error, never a partial file, when the rest cannot be written."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if not n:  # would loop for ever
            raise OSError(errno.ENOSPC, "the disk took none of the remaining bytes")
        view = view[n:]


def temporary_name(path: Path) -> Path:
    """Where write_atomic writes `path` before renaming it into place (what a kill leaves)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write-then-rename with fsync of the file and its folder; on failure nothing is left (a
    kill leaves at most the hidden .NAME.tmp, never a partial file under the name)."""
    if isinstance(data, str):
        data = data.encode()
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only file system cannot have created it either
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a power cut
        finally:
            os.close(dfd)
    except OSError:
        pass  # the data is written; a folder fsync some file systems refuse is not worth failing for


def no_core_dumps() -> None:
    """Make this process (and what it starts) leave no core file when it crashes or is killed by
    SIGABRT, as systemd's watchdog does: a core is the process's memory, camera frames and all,
    written to its working folder or to systemd-coredump's store, and frames never go to disk
    unasked."""
    try:
        import resource
    except ImportError:  # not a Unix
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
