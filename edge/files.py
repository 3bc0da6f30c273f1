"""Writing files so that a kill, a power cut or a full disk never leaves half of one: the
spool's events, the JSON-lines file, a training run's records; one writer per output folder;
and no core file at all."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from edge.errors import UserError


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
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # the data is written; a folder fsync some file systems refuse is not worth failing for


def lock_file(folder: str | Path) -> Path:
    """The hidden file whose flock holds `folder` (held_by_this_process): beside it, not in it, since
    a command may replace the folder as a whole."""
    path = Path(folder).absolute()
    return path.with_name(f".{path.name}.lock")


def _holder(inode: int) -> str:
    """Who holds a flock on the file with this inode number: "PID n" as Linux's /proc/locks says (a
    line "1: FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF"); "" when none is listed."""
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                    return f"PID {fields[4]}"
    except OSError:
        pass  # not Linux
    return ""


def held_by(folder: str | Path) -> str:
    """Who holds `folder` now (held_by_this_process): "PID n", or "" when no one does (or not on
    Linux). Reads /proc/locks only: trying the lock itself could make a starting holder fail."""
    try:
        return _holder(lock_file(folder).stat().st_ino)
    except OSError:
        return ""  # no lock file: no holder (a kill may leave one, but unlocked)


@contextmanager
def held_by_this_process(folder: str | Path, flag: str = "--out", in_use=None, required: bool = True):
    """Hold `folder` for this process while the with-block runs, so that two commands never write
    one folder at once: another hold on it, from any process (this one too), is refused with a
    UserError naming the folder, `flag` being the option that named it, or saying in_use(holder)
    when given (holder: "PID n" or "another process").

    The hold is an advisory lock (flock) on lock_file(folder), beside the folder; missing parent
    folders are made. The system drops the lock when the process ends, however it ends, so a
    killed command never blocks the next; the lock file is removed on leaving the block, and one
    a kill left behind is reused, also by another user: it is opened read-only (all flock needs)
    and made readable by all, so one that `sudo edge run` left does not lock the service out.
    required=False: a lock file this user cannot make (a read-only disk, another user's folder)
    leaves the block unheld, for a caller whose own writes there have their way with that."""
    import fcntl

    lock = lock_file(folder)
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            if not required:
                fd = None
                break
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            # an --out of this user's in a folder it may not write (check_out_folder passed it: it exists)
            raise UserError(f"{flag} {folder} cannot be used by this user: its lock file goes beside it, in "
                            f"{lock.parent}, which is read-only or another user's ({exc.strerror}); choose a folder "
                            "you can write to, or change its permissions.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.fstat(fd).st_ino) or "another process"
            os.close(fd)
            raise UserError(in_use(holder) if in_use else
                            f"{flag} {folder} is in use: another process is writing it; wait for that one to "
                            f"finish, or choose another {flag}.") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before removed this file as we locked it: a new holder locks the next one
    if fd is None:
        yield
        return
    try:
        yield
    finally:
        try:
            lock.unlink(missing_ok=True)  # while still locked, so no one takes a hold on a file about to go
        except OSError:
            pass  # another user's, in a sticky folder such as /tmp: left for the next holder to reuse
        os.close(fd)


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
