"""A small on-disk queue of undelivered events: one JSON file per event, oldest first.

It survives a process restart, a reboot and disk trouble:
- each event is written to a temporary file, fsynced and renamed, so a reader (or the next
  start) never sees a partial file, and a failed write leaves no `.tmp` behind; the next start
  renames into place a `.tmp` a power cut left complete (cut after the fsync, before the rename
  reached the disk) and removes the others;
- it is capped (count), and when the disk is full the oldest event is dropped to make room for
  the new one (one per event, and none once a drop did not help: a disk that other files fill,
  or the root reserve that only root may use); both are counted in `dropped` and logged;
- when the folder cannot be created or written (read-only, full, wrong owner) events are held
  in memory instead, with one ERROR line saying they are at risk; they move back to disk as
  soon as a write succeeds again, at the next event or the sink's idle flush (`retry`);
- a file that cannot be read now (out of file descriptors, a permission) is kept and read
  again later, holding up the events behind it to keep them in order; after
  UNREADABLE_HOLD_S it no longer does (a bad sector or a file another user owns must not stop
  every later alert), and it is still retried each time; only one whose content is not an
  event is removed;
- a delivered event whose file cannot be removed (read-only) is removed at the next retry that
  the folder allows, so only a restart before then sends it again;
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

from edge.files import sync_folder, write_atomic
from edge.paths import expand_path
from edge.sinks.restamp import restamped

log = logging.getLogger(__name__)

STATE_DIR = Path("~/.local/state/queue-mood")
DEFAULT_SPOOL_DIR = STATE_DIR / "spool"
DEFAULT_CAP = 10_000
RETRY_S = 10.0  # between idle tries to move events held in memory back to disk (each is an SD-card write)
# How long a file that cannot be read holds up the events behind it: long enough for a passing
# cause (out of file descriptors), short against an alert a manager is waiting for.
UNREADABLE_HOLD_S = 300.0
DEAD_DIR = "dead"
EVENT_NAME = re.compile(r"[0-9]{20}")  # what put() names its files (the stem); anything else is not ours


def encode(item: dict) -> bytes:
    return json.dumps(item, separators=(",", ":")).encode()


def decode(data: bytes):
    """A spool file's event; ValueError (UnicodeDecodeError included) for a torn or foreign file."""
    return json.loads(data)


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
        self._id_lock = threading.Lock()  # for ids only, never held across a write
        # How long put() waits for a write in progress (None: as long as it takes). Set at a stop:
        # a stalled SD card can hold a write for many seconds, and systemd kills a slow stop.
        self.wait_s: float | None = None
        self._mem: dict[str, dict] = {}  # events the disk refused, held until it works again
        self._disk_error = ""  # why the disk failed last; "" while it works
        self._next_retry = 0.0  # monotonic time of the next idle try to move _mem to disk
        self._read_error = ""  # why the last spool file could not be read; "" while reads work
        self._unreadable_since: dict[str, float] = {}  # monotonic time each unreadable file first failed
        self._passed: set[str] = set()  # unreadable files no longer holding up the events behind them
        # Delivered events whose files the folder would not let go of (read-only): removed when it
        # takes writes again, else the next start sends them a second time.
        self._unremoved: set[str] = set()
        self._ids: list[str] = []
        dead: list[str] = []
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._finish_writes()
            self._ids, strays = event_ids(self.dir)
            dead = event_ids(self.dir / DEAD_DIR)[0]
            if strays:  # a copy an operator left, an editor's backup: not ours, and not worth a crash
                log.warning("Spool %s: ignoring %d files that are not spooled events (%s).", self.dir, len(strays),
                            ", ".join(strays[:3]) + (", ..." if len(strays) > 3 else ""))
        except OSError as exc:
            self._disk_failed(exc)
        # Ids are nanosecond stamps kept strictly increasing across restarts: a Pi has no
        # real-time clock, so after a reboot the wall clock can be behind the spooled files, and
        # behind the dead letters (an empty spool): a new one would sort as the oldest there,
        # the first the cap removes.
        self._last = int(max(self._ids[-1:] + dead[-1:], default=0))

    def _finish_writes(self) -> None:
        """The writes a stop or a power cut interrupted (write_atomic's hidden `.<id>.json.tmp`, in the
        spool and dead/): one holding a whole event is renamed into place under its own id, so it is
        sent in its turn (a power cut after the fsync, before the rename reached the disk: else an
        alert lost); the others are removed: torn, empty, not an event's name, or an event already
        under its name. One line says how many. One that cannot be read or moved now is left for the
        next start."""
        restored = removed = 0
        for folder in (self.dir, self.dir / DEAD_DIR):
            for tmp in folder.glob(".*.tmp"):
                name = tmp.name[1:-len(".tmp")]
                try:
                    if (name.endswith(".json") and EVENT_NAME.fullmatch(name[:-len(".json")])
                            and not (self.dir / name).exists() and not (self.dir / DEAD_DIR / name).exists()
                            and self._whole(tmp)):
                        os.replace(tmp, folder / name)
                        sync_folder(folder)
                        restored += 1
                    else:
                        tmp.unlink(missing_ok=True)
                        removed += 1
                except OSError:
                    pass
        if restored or removed:
            log.log(logging.WARNING if removed else logging.INFO,
                    "Spool %s: a stop or power cut interrupted %d writes; restored %d whole events, removed %d files "
                    "that held none (torn, or spooled already).", self.dir, restored + removed, restored, removed)

    @staticmethod
    def _whole(tmp: Path) -> bool:
        """Whether tmp holds an event as pending() reads one; then on the disk (fsync), before its rename."""
        with open(tmp, "rb") as f:
            try:
                decode(f.read())
            except ValueError:
                return False
            os.fsync(f.fileno())  # a process killed before its fsync left it in the page cache only
        return True

    # The counts are read without the lock: put() and dead_letter() hold it across fsync, which
    # takes seconds on a busy SD card, and the frame loop reads them every second (Fanout.stats).
    # len() of a list or dict is atomic.
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def in_memory(self) -> int:
        """Events held in memory because the disk refused them (lost if the process stops)."""
        return len(self._mem)

    def held(self) -> dict[str, dict]:
        """A copy of the events held in memory, taken without the lock: at a stop a stalled write
        may hold the lock for many seconds (a dict copy is one step under the GIL)."""
        return self._mem.copy()

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
        """Write one event to disk; on a full disk drop the oldest on-disk event and try once more,
        unless the disk already failed: then a drop has not helped (space that other files or the
        root reserve hold), and dropping more would empty the spool for nothing."""
        data = encode(item)
        try:
            self._write_file(event_id, data)
            return True
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT) and not self._disk_error
            oldest = next((i for i in self._ids if i not in self._mem and i != event_id), None) if full else None
            if oldest is None:
                self._disk_failed(exc)
                return False
        self._drop([oldest], "the disk is full")
        try:
            self._write_file(event_id, data)
            return True
        except OSError as exc:
            self._disk_failed(exc)
            return False

    def _write_file(self, event_id: str, data: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path(event_id), data)

    def _disk_back(self) -> None:
        """Move the events held in memory to disk, oldest first; the outage ends once all are there."""
        held = [i for i in self._ids if i in self._mem]
        for event_id in held:
            if not self._write(event_id, self._mem[event_id]):
                return  # still failing: _write kept the reason, and the next try goes on from here
            del self._mem[event_id]
        if held:
            log.warning("Spool %s is writable again; moved %d events from memory to disk.", self.dir, len(held))
        else:  # those held were delivered meanwhile: the outage's end, nothing moved
            log.info("Spool %s is writable again.", self.dir)
        self._disk_error = ""

    def retry(self, now: bool = False) -> None:
        """Try to move the events held in memory back to disk, and to remove the files of delivered
        events the folder kept, at most every RETRY_S unless `now` (a stop): called on the sink's
        idle flush, so they need no new alert to get there."""
        if not (self._mem or self._unremoved) or (time.monotonic() < self._next_retry and not now):
            return
        with self._lock:
            self._next_retry = time.monotonic() + RETRY_S
            self._remove_delivered()
            if self._mem:
                self._disk_back()

    def _unlink_delivered(self, event_id: str) -> bool:
        try:
            self._path(event_id).unlink(missing_ok=True)
        except OSError as exc:
            if not self._unremoved:  # one line per outage: a backlog delivered meanwhile is thousands
                log.warning("Spool %s: cannot remove delivered events (%s); retrying, and if it stays so they are "
                            "sent again at the next start (receivers drop repeats by event id).", self.dir,
                            exc.strerror or exc)
            self._unremoved.add(event_id)
            return False
        self._unremoved.discard(event_id)
        return True

    def _remove_delivered(self) -> None:
        count = len(self._unremoved)
        for event_id in sorted(self._unremoved):
            if not self._unlink_delivered(event_id):
                return
        if count:
            log.info("Spool %s takes writes again: removed the files of %d delivered events.", self.dir, count)

    def _drop(self, ids: list[str], why: str) -> None:
        for old in ids:
            if self._remove(old) is None:
                try:
                    self._path(old).unlink(missing_ok=True)
                except OSError:
                    pass
        self.dropped += len(ids)
        log.warning("Spool %s: %s; dropped the %d oldest events (%d dropped so far).", self.dir, why, len(ids),
                    self.dropped)

    def _new_id(self) -> str:
        with self._id_lock:
            self._last = max(time.time_ns(), self._last + 1)
            return f"{self._last:020d}"

    def _acquire(self) -> bool:
        """The lock, waiting wait_s at most once it is set (the stop: a stalled write must not hold it)."""
        return self._lock.acquire(timeout=-1 if self.wait_s is None else self.wait_s)

    def put(self, item: dict) -> str:
        """Spool one event; its id. Once `wait_s` is set and a write in progress holds the spool
        longer, the event is written beside it, to a file of its own (an OSError if that fails):
        the next start delivers it, though this object does not list it."""
        if not self._acquire():
            event_id = self._new_id()  # after the id of the write in progress: the order holds
            write_atomic(self._path(event_id), encode(item))
            return event_id
        try:
            event_id = self._new_id()
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
        finally:
            self._lock.release()
        return event_id

    def pending(self) -> Iterator[tuple[str, dict]]:
        """(id, item) oldest first; read lazily, so a large spool is not loaded at once. Each item
        as it is sent: every spooled sink delivers from here, so here an event stamped before NTP
        set the clock is stamped again (edge.sinks.restamp)."""
        with self._lock:
            ids = list(self._ids)
        for event_id in ids:
            with self._lock:
                held = self._mem.get(event_id)
            if held is not None:
                yield event_id, restamped(held)
                continue
            try:
                data = self._path(event_id).read_bytes()
            except FileNotFoundError:  # acked or dropped meanwhile, or removed by hand
                with self._lock:  # gone for good: no longer counted, nor taking room under the cap
                    if event_id not in self._mem:
                        self._remove(event_id)
                continue
            except OSError as exc:  # the file may be fine (out of file descriptors, a permission): keep it
                if self._unreadable(event_id, exc):
                    return  # and stop here, so the events behind it are not delivered before it
                continue
            self._read_error = ""
            self._unreadable_since.pop(event_id, None)
            self._passed.discard(event_id)
            try:
                item = decode(data)
            except ValueError as exc:  # UnicodeDecodeError included: a torn or foreign file, never an event
                # kept in dead/ (and counted), not deleted: it may be an alert a person can still read
                self.dead_letter(event_id, f"its file is not JSON: {exc}")
                continue
            yield event_id, restamped(item)

    def _unreadable(self, event_id: str, exc: OSError) -> bool:
        """Log why event_id cannot be read (one line per cause); True while it still holds up
        the events behind it, UNREADABLE_HOLD_S from its first failure."""
        if event_id in self._passed:  # said once; retried quietly at each try
            return False
        why = exc.strerror or str(exc)
        if why != self._read_error:
            log.warning("Spool %s: cannot read event %s (%s); it is kept and read again at the next try; if "
                        "this repeats, check the file's owner and permissions.", self.dir, event_id, why)
        self._read_error = why
        now = time.monotonic()
        if now - self._unreadable_since.setdefault(event_id, now) < UNREADABLE_HOLD_S:
            return True
        self._passed.add(event_id)
        log.warning("Spool %s: event %s has been unreadable for %.0f minutes; the events behind it are sent without "
                    "it from now on (it is still retried).", self.dir, event_id, UNREADABLE_HOLD_S / 60)
        return False

    def _remove(self, event_id: str) -> dict | None:
        """Forget one event; its item if it was held in memory."""
        self._unreadable_since.pop(event_id, None)
        self._passed.discard(event_id)
        try:
            self._ids.remove(event_id)
        except ValueError:
            pass
        return self._mem.pop(event_id, None)

    def drop_memory(self) -> bool:
        """Forget what is held in memory (the process is stopping and it is counted lost), so the
        counts shown at the end do not list it as still spooled. False, with nothing forgotten,
        when a write in progress holds the spool longer than wait_s: it may yet move them to disk."""
        if not self._acquire():
            return False
        try:
            for event_id in list(self._mem):
                self._remove(event_id)
        finally:
            self._lock.release()
        return True

    def ack(self, event_id: str) -> None:
        with self._lock:
            if self._remove(event_id) is None:
                self._unlink_delivered(event_id)

    def discard(self, event_id: str) -> None:
        """Remove an event a newer one made worthless (MQTT's superseded retained state), as ack
        does; left as it is when a write in progress holds the spool past wait_s (the stop)."""
        if not self._acquire():
            return
        try:
            if self._remove(event_id) is None:
                self._unlink_delivered(event_id)
        finally:
            self._lock.release()

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
                    write_atomic(dead / f"{event_id}.json", encode(held))
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
