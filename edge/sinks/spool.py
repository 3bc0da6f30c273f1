"""A small on-disk queue of undelivered events: one JSON file per event, oldest first.

It survives a process restart, a reboot and disk trouble:
- each event is written to a temporary file, fsynced and renamed, so a reader (or the next
  start) never sees a partial file, and a failed write leaves no `.tmp` behind;
- it is capped (count), and when the disk is full the oldest events are dropped to make room;
  both are counted in `dropped` and logged;
- when the folder cannot be created or written (read-only, full, wrong owner) events are held
  in memory instead, with one ERROR line saying they are at risk; they move back to disk as
  soon as a write succeeds again;
- an event a receiver rejects for good (`dead_letter`) is moved to `<dir>/dead/` with one log
  line, so it never blocks the events behind it; that folder keeps the newest `cap` events.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Iterator

from edge.paths import expand_path

log = logging.getLogger(__name__)

STATE_DIR = Path("~/.local/state/queue-mood")
DEFAULT_SPOOL_DIR = STATE_DIR / "spool"
DEFAULT_CAP = 10_000
DEAD_DIR = "dead"
EVENT_NAME = re.compile(r"[0-9]{20}")  # what put() names its files (the stem); anything else is not ours


def write_atomic(path: Path, data: bytes) -> None:
    """Write-then-rename with fsync of the file and its folder; on failure nothing is left."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
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


def event_ids(folder: Path) -> tuple[list[str], list[str]]:
    """(ids of the event files in folder oldest first, names of the other *.json files)."""
    ids, strays = [], []
    for p in folder.glob("*.json"):
        if EVENT_NAME.fullmatch(p.stem):
            ids.append(p.stem)
        else:
            strays.append(p.name)
    return sorted(ids), sorted(strays)


class Spool:
    """`put(dict) -> id`, `pending()` oldest first, `ack(id)` once delivered,
    `dead_letter(id, why)` once rejected for good. Thread-safe."""

    def __init__(self, directory: str | Path, cap: int = DEFAULT_CAP):
        if cap < 1:
            raise ValueError("spool cap must be >= 1")
        self.dir = expand_path(directory)
        self.cap = cap
        self.dropped = 0  # events lost to the cap or a full disk since this object was made
        self.dead = 0  # events moved to the dead-letter folder
        self._lock = threading.Lock()
        self._mem: dict[str, dict] = {}  # events the disk refused, held until it works again
        self._disk_error = ""  # why the disk failed last; "" while it works
        self._ids: list[str] = []
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for tmp in self.dir.glob(".*.tmp"):  # half-written by a process that died mid-put
                tmp.unlink(missing_ok=True)
            self._ids, strays = event_ids(self.dir)
            if strays:  # a copy an operator left, an editor's backup: not ours, and not worth a crash
                log.warning("Spool %s: ignoring %d files that are not spooled events (%s).", self.dir, len(strays),
                            ", ".join(strays[:3]) + (", ..." if len(strays) > 3 else ""))
        except OSError as exc:
            self._disk_failed(exc)
        # Ids are nanosecond stamps kept strictly increasing across restarts: a Pi has no
        # real-time clock, so after a reboot the wall clock can be behind the spooled files.
        self._last = int(self._ids[-1]) if self._ids else 0

    # The counts are read without the lock: put() and dead_letter() hold it across fsync, which
    # takes seconds on a busy SD card, and the frame loop reads them every second (Fanout.stats).
    # len() of a list or dict is atomic.
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def in_memory(self) -> int:
        """Events held in memory because the disk refused them (lost if the process stops)."""
        return len(self._mem)

    @property
    def disk_error(self) -> str:
        return self._disk_error

    def _path(self, event_id: str) -> Path:
        return self.dir / f"{event_id}.json"

    def _disk_failed(self, exc: OSError) -> None:
        if not self._disk_error:  # one ERROR per outage, not one per event
            log.error("Spool %s cannot be written (%s): holding undelivered events in memory; alerts are at risk "
                      "if the service stops before they are delivered.", self.dir, exc.strerror or exc)
        self._disk_error = exc.strerror or str(exc)

    def _write(self, event_id: str, item: dict) -> bool:
        """Write one event to disk, dropping the oldest on-disk events while the disk is full."""
        data = json.dumps(item, separators=(",", ":")).encode()
        while True:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                write_atomic(self._path(event_id), data)
                return True
            except OSError as exc:
                on_disk = [i for i in self._ids if i not in self._mem and i != event_id]
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) and on_disk:
                    self._drop([on_disk[0]], "the disk is full")
                    continue
                self._disk_failed(exc)
                return False

    def _disk_back(self) -> None:
        log.warning("Spool %s is writable again; moving %d events from memory to disk.", self.dir, len(self._mem))
        self._disk_error = ""
        for event_id in [i for i in self._ids if i in self._mem]:
            if not self._write(event_id, self._mem[event_id]):
                return
            del self._mem[event_id]

    def _drop(self, ids: list[str], why: str) -> None:
        for old in ids:
            self._ids.remove(old)
            if self._mem.pop(old, None) is None:
                try:
                    self._path(old).unlink(missing_ok=True)
                except OSError:
                    pass
        self.dropped += len(ids)
        log.warning("Spool %s: %s; dropped the %d oldest events (%d dropped so far).", self.dir, why, len(ids),
                    self.dropped)

    def put(self, item: dict) -> str:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            event_id = f"{self._last:020d}"
            self._ids.append(event_id)
            had_error = bool(self._disk_error)
            if self._write(event_id, item):
                if had_error:
                    self._disk_back()
            else:
                self._mem[event_id] = item
            over = len(self._ids) - self.cap
            if over > 0:
                self._drop(self._ids[:over], f"it is full ({self.cap} events)")
        return event_id

    def pending(self) -> Iterator[tuple[str, dict]]:
        """(id, item) oldest first; read lazily, so a large spool is not loaded at once."""
        with self._lock:
            ids = list(self._ids)
        for event_id in ids:
            with self._lock:
                held = self._mem.get(event_id)
            if held is not None:
                yield event_id, held
                continue
            try:
                item = json.loads(self._path(event_id).read_bytes())
            except FileNotFoundError:  # acked or dropped meanwhile
                continue
            except (OSError, ValueError) as exc:
                log.warning("Spool %s: removing unreadable event %s (%s).", self.dir, event_id, exc)
                self.ack(event_id)
                continue
            yield event_id, item

    def _remove(self, event_id: str) -> dict | None:
        """Forget one event; its item if it was held in memory."""
        try:
            self._ids.remove(event_id)
        except ValueError:
            pass
        return self._mem.pop(event_id, None)

    def drop_memory(self) -> None:
        """Forget what is held in memory (the process is stopping and it is counted lost), so the
        counts shown at the end do not list it as still spooled."""
        with self._lock:
            for event_id in list(self._mem):
                self._remove(event_id)

    def ack(self, event_id: str) -> None:
        with self._lock:
            if self._remove(event_id) is None:
                try:
                    self._path(event_id).unlink(missing_ok=True)
                except OSError as exc:  # read-only now: the next start resends it (receivers dedupe by id)
                    log.warning("Spool %s: cannot remove delivered event %s (%s).", self.dir, event_id, exc.strerror)

    def _trim_dead(self, dead: Path) -> None:
        """Remove the oldest dead letters beyond the cap: months of rejections must not fill the card."""
        ids = event_ids(dead)[0]
        over = len(ids) - self.cap
        if over <= 0:
            return
        for old in ids[:over]:
            try:
                (dead / f"{old}.json").unlink(missing_ok=True)
            except OSError:
                pass
        log.warning("Spool %s: the dead-letter folder keeps %d events; removed the %d oldest.", dead, self.cap, over)

    def dead_letter(self, event_id: str, why: str) -> None:
        """Move an event the receiver rejected for good to <dir>/dead/, with one log line."""
        with self._lock:
            held = self._remove(event_id)
            dead = self.dir / DEAD_DIR
            try:
                dead.mkdir(exist_ok=True)
                if held is not None:
                    write_atomic(dead / f"{event_id}.json", json.dumps(held).encode())
                else:
                    os.replace(self._path(event_id), dead / f"{event_id}.json")
                where = f"moved to {dead}"
                self._trim_dead(dead)
            except OSError as exc:
                where = f"discarded ({exc.strerror or exc})"
                try:
                    self._path(event_id).unlink(missing_ok=True)
                except OSError:
                    pass
            self.dead += 1
        log.error("Spool %s: event %s rejected for good (%s); %s.", self.dir, event_id, why, where)
