"""Appends one JSON line per event to a local file (easy to tail, grep or load later).

Made to run for months on an SD card:
- the file is rotated by size (`max_mb`): it becomes `<path>.1`, the older ones move up to
  `<path>.<keep>`, and the oldest beyond that is deleted;
- each line is fsynced (alerts are rare), so a power cut loses nothing written;
- a line that cannot be written (a full disk, a read-only remount) is held in memory and
  written, in order, on the next event or within `RETRY_S`; a failed write is cut back off
  the file, so no torn or doubled line is left. At most `HOLD_MAX` lines are held; beyond
  that the oldest are dropped (`given_up`, logged). Each failed write counts in `failed`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import check_range
from edge.paths import FILE_KEY, expand_path
from edge.sinks.base import AlertEvent, Sink, SinkUnavailable, register
from edge.files import write_all
from edge.sinks.spool import STATE_DIR

log = logging.getLogger(__name__)
# A new file: the service and its group (the admins who tail it), not every user of the Pi; like
# the monitor's other state files (edge.files). A file made beforehand keeps its own mode, through
# rotation too (_open).
MODE = 0o640

HOLD_MAX = 1000  # lines held in memory while the file cannot be written
RETRY_S = 10.0  # between tries of held lines when no new event comes (each is an SD-card write)
TAIL_BYTES = 65536  # how far back a torn last line is looked for (an event is about 250 bytes)
MB = 1 << 20


@dataclass
class JsonlSinkConfig:
    """Alert sink: one JSON line per event appended to a local file."""

    path: str = field(default="", metadata=FILE_KEY)  # the file; empty: ~/.local/state/queue-mood/alerts.jsonl
    max_mb: float = 10.0  # a file this large (MiB) is rotated to <path>.1; 0: never rotate (an event is about 250 bytes)
    keep: int = 3  # rotated files kept (<path>.1 the newest); 0: a full file is deleted

    def validate(self, p):
        check_range(self.max_mb, 0, 100_000, f"{p}.max_mb", "MiB")
        check_range(self.keep, 0, 100, f"{p}.keep", "files")


@register
class JsonlSink(Sink):
    key = "jsonl"
    Config = JsonlSinkConfig
    order = 10

    def __init__(self, path: str = "", max_mb: float = 10.0, keep: int = 3):
        self.path = expand_path(path or STATE_DIR / "alerts.jsonl")
        # A folder there would lose every event at its first write. Checked here, where the
        # service runs, not when the config loads: edge bundle reads the config on another machine.
        if self.path.is_dir():
            raise SinkUnavailable(f"{self.path} is a folder; set [sinks.jsonl] path to a file")
        self.max_bytes, self.keep = int(max_mb * MB), keep
        self._fd: int | None = None  # opened on first use, so configuring the sink never writes
        self._held: deque[bytes] = deque()  # lines not written yet, oldest first
        self._error = ""  # why the last write failed; "" while writes work
        self._next_try = 0.0  # monotonic time of the next flush() try of held lines
        self.given_up = 0  # lines given up on: more than HOLD_MAX held, or still held at close

    def send(self, event: AlertEvent) -> None:
        self._held.append(json.dumps(event.to_dict(), separators=(",", ":")).encode() + b"\n")
        if len(self._held) > HOLD_MAX:
            self._held.popleft()
            self.given_up += 1
            log.error("JSON-lines file %s: more than %d events waiting to be written; dropped the oldest "
                      "(%d dropped so far).", self.path, HOLD_MAX, self.given_up)
        self._write_held()

    def flush(self) -> None:
        if self._held and time.monotonic() >= self._next_try:
            self._write_held()

    def _write_held(self) -> None:
        data = b"".join(self._held)
        try:
            fd = self._open(len(data))
            size = os.fstat(fd).st_size
            try:
                write_all(fd, data)
                os.fsync(fd)
            except OSError:
                try:  # cut off what part was written: the next try writes these lines whole
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                raise
        except OSError as exc:
            self._close()  # reopened next time: the disk may come back remounted
            self.failed += 1
            self._next_try = time.monotonic() + RETRY_S
            if not self._error:  # one line per outage
                log.error("JSON-lines file %s cannot be written (%s): holding events in memory and retrying.",
                          self.path, exc.strerror or exc)
            self._error = exc.strerror or str(exc)
            return
        if self._error:
            log.warning("JSON-lines file %s is writable again: wrote %d held events.", self.path, len(self._held))
            self._error = ""
        self.delivered += len(self._held)
        self._held.clear()

    def _open(self, incoming: int) -> int:
        """The file's descriptor, reopened when the file was moved or deleted (by hand, by
        logrotate) and rotated first when `incoming` bytes would take it past max_mb."""
        if self._fd is not None and not self._is_open_file():
            self._close()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd, readable = self._open_file()
            if readable:
                self._end_torn_line(self._fd)
        st = os.fstat(self._fd)
        if self.max_bytes and st.st_size and st.st_size + incoming > self.max_bytes:
            try:
                self._rotate()
            except OSError as exc:  # the folder refuses renames: a file past max_mb beats a lost event
                log.warning("JSON-lines file %s could not be rotated (%s); appending to it.", self.path,
                            exc.strerror or exc)
            self._fd = self._open_file()[0]
            # The new file takes the old one's mode (as logrotate's `create` does): one an admin made
            # 0600, or 0644 for a reader of their own, keeps it past the first rotation, not MODE.
            with contextlib.suppress(OSError):
                os.fchmod(self._fd, stat.S_IMODE(st.st_mode) & 0o777)
        return self._fd

    def _open_file(self) -> tuple[int, bool]:
        """(descriptor, readable): read-write for the torn-line check, write-only for a file the
        service may write but not read (mode 0200, a log another user reads), as before that check."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, MODE), True
        except PermissionError:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, MODE)
        log.info("JSON-lines file %s may be written but not read: appending without checking its last line for "
                 "one a power cut left partial.", self.path)
        return fd, False

    def _end_torn_line(self, fd: int) -> None:
        """A file that does not end in a newline was cut mid-line (a power cut during a write; ext4
        can leave NUL bytes there instead): cut that partial line off, so the next event is a line
        of its own, not glued onto it. With no newline in the last TAIL_BYTES, end it with one."""
        size = os.fstat(fd).st_size
        if not size or os.pread(fd, 1, size - 1) == b"\n":
            return
        start = max(0, size - TAIL_BYTES)
        tail = os.pread(fd, size - start, start)
        cut = tail.rfind(b"\n") + 1
        if cut or not start:  # the whole file may be one partial line: cut to empty
            os.ftruncate(fd, start + cut)
            done = f"cut its last {size - start - cut} bytes"
        else:
            write_all(fd, b"\n")
            done = "ended it with a newline"
        log.warning("JSON-lines file %s ended in a partial line (a power cut during a write?): %s, so the next "
                    "event starts a line of its own.", self.path, done)

    def _is_open_file(self) -> bool:
        try:
            on_disk, held = os.stat(self.path), os.fstat(self._fd)
        except OSError:
            return False
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _rotate(self) -> None:
        self._close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.keep - 1, 0, -1):
                if self.rotated(n).exists():
                    os.replace(self.rotated(n), self.rotated(n + 1))
            os.replace(self.path, self.rotated(1))
        log.info("JSON-lines file %s reached %.3g MiB: rotated (%d older files kept).", self.path,
                 self.max_bytes / MB, self.keep)

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def close(self) -> None:
        if self._held:
            self._write_held()
        if self._held:
            self.given_up += len(self._held)
            log.error("JSON-lines file %s still cannot be written at shutdown: %d events lost.", self.path,
                      len(self._held))
            self._held.clear()
        self._close()

    def check(self) -> str:
        """A real write probe, as the doctor's spool check: as root, os.access passes any path,
        even one in /proc. An existing file is opened for appending and written nothing (its
        contents stay; a file that takes no writes, as in /proc, refuses even that); else a
        probe file, or a probe folder where the sink would make folders, is made and removed."""
        try:
            if self.path.exists():  # O_NONBLOCK: a FIFO without a reader must not hang the doctor
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
                try:
                    os.write(fd, b"")
                finally:
                    os.close(fd)
            else:
                d = self.path.parent
                while not d.exists():
                    d = d.parent
                if d == self.path.parent:
                    fd, probe = tempfile.mkstemp(prefix=".doctor-probe-", dir=d)
                    try:
                        write_all(fd, b"\n")
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                        os.unlink(probe)
                else:
                    os.rmdir(tempfile.mkdtemp(prefix=".doctor-probe-", dir=d))
        except OSError as exc:
            return f"cannot write {self.path} ({exc.strerror or exc})"
        return f"writes {self.path}"
