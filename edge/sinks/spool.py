"""A small on-disk queue of undelivered events: one JSON file per event, oldest first.

It survives a process restart and a reboot, and is capped so a long network outage
cannot fill the SD card."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from edge.paths import expand_path

log = logging.getLogger(__name__)

STATE_DIR = Path("~/.local/state/queue-mood")
DEFAULT_SPOOL_DIR = STATE_DIR / "spool"
DEFAULT_CAP = 10_000


class Spool:
    """`put(dict) -> id`, `pending()` oldest first, `ack(id)` once delivered. Thread-safe."""

    def __init__(self, directory: str | Path, cap: int = DEFAULT_CAP):
        if cap < 1:
            raise ValueError("spool cap must be >= 1")
        self.dir = expand_path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cap = cap
        self.dropped = 0  # events lost to the cap since this object was made
        self._lock = threading.Lock()
        for tmp in self.dir.glob(".*.tmp"):  # half-written by a process that died mid-put
            tmp.unlink(missing_ok=True)
        self._ids = sorted(p.stem for p in self.dir.glob("*.json"))
        # Ids are nanosecond stamps kept strictly increasing across restarts: a Pi has no
        # real-time clock, so after a reboot the wall clock can be behind the spooled files.
        self._last = int(self._ids[-1]) if self._ids else 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def _path(self, event_id: str) -> Path:
        return self.dir / f"{event_id}.json"

    def put(self, item: dict) -> str:
        data = json.dumps(item, separators=(",", ":")).encode()
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            event_id = f"{self._last:020d}"
            tmp = self.dir / f".{event_id}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self._path(event_id))  # readers never see a partial file
            self._ids.append(event_id)
            over = len(self._ids) - self.cap
            if over > 0:
                for old in self._ids[:over]:
                    self._path(old).unlink(missing_ok=True)
                del self._ids[:over]
                self.dropped += over
                log.warning("Spool %s is full (%d events): dropped the %d oldest (%d dropped so far).",
                            self.dir, self.cap, over, self.dropped)
        return event_id

    def pending(self) -> Iterator[tuple[str, dict]]:
        """(id, item) oldest first; read lazily, so a large spool is not loaded at once."""
        with self._lock:
            ids = list(self._ids)
        for event_id in ids:
            try:
                item = json.loads(self._path(event_id).read_bytes())
            except FileNotFoundError:  # acked or dropped meanwhile
                continue
            except (OSError, ValueError) as exc:
                # No fsync (SD wear): a power cut can leave an empty file; it can never be sent.
                log.warning("Spool %s: removing unreadable event %s (%s).", self.dir, event_id, exc)
                self.ack(event_id)
                continue
            yield event_id, item

    def ack(self, event_id: str) -> None:
        with self._lock:
            try:
                self._ids.remove(event_id)
            except ValueError:
                pass
            self._path(event_id).unlink(missing_ok=True)
