"""Sends each event to every configured sink without ever blocking the caller.

Each sink has its own worker thread and bounded queue: `send` only enqueues, so a webhook
that never answers or a command that sleeps delays its own deliveries, never the frame loop
nor the other sinks. A worker also flushes its sink every `flush_every_s` while idle, so a
spool is retried while the service runs, not only at the next alert. `close` gives the
workers `close_timeout_s` in all; what a sink has not handled by then is put in its spool
(spooling sinks) or counted as lost. One sink failing never affects the others.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING

from edge.paths import expand_path
from edge.sinks.base import SINKS, AlertEvent, DisabledSink, Sink, SinkUnavailable
from edge.sinks.log import LogSink
from edge.sinks.spool import DEFAULT_SPOOL_DIR, Spool

if TYPE_CHECKING:  # edge.config builds [sinks] from this package's registry
    from edge.config import SinksConfig

log = logging.getLogger(__name__)


def configurable() -> list[str]:
    """Keys of the sinks that have a [sinks.<key>] table, in send order."""
    return [key for key, cls in sorted(SINKS.items(), key=lambda kv: kv[1].order) if cls.Config is not None]


QUEUE_MAX = 1000  # events waiting for one sink; alerts are rare, so only a stuck sink fills it
FLUSH_EVERY_S = 2.0
CLOSE_TIMEOUT_S = 0.75  # all sinks together, so a stop signal is honoured within 2 s on a busy Pi
# After that, for spooling what busy sinks still had queued, all sinks together; a spool write in
# progress (a stalled SD card holds one for many seconds) is waited for SPOOL_WAIT_S at most.
RESCUE_TIMEOUT_S = 1.0
SPOOL_WAIT_S = 0.25

_FLUSH, _STOP = object(), object()


class _Update(dict):
    """A status snapshot for Sink.update, told apart from events in a worker's queue."""


class _Worker:
    """One sink's thread: sends queued events in order, flushes when idle, closes on _STOP."""

    def __init__(self, sink: Sink, fanout: "Fanout", queue_max: int, flush_every_s: float):
        self.sink, self.fanout, self.flush_every_s = sink, fanout, flush_every_s
        self.queue: queue.Queue = queue.Queue(queue_max)
        self.sent = 0  # events handed to the sink
        self.lost = 0  # events neither handled by the sink nor spooled
        self.in_hand: AlertEvent | None = None  # the event its sink's send() is working on
        self.thread = threading.Thread(target=self._run, name=f"sink-{sink.key}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=self.flush_every_s)
            except queue.Empty:
                item = _FLUSH
            if item is _STOP:
                self.fanout.call(self.sink, "retry_spool", True)  # what is still in memory is lost after this
                self.fanout.call(self.sink, "close")
                return
            if item is _FLUSH:
                self.fanout.call(self.sink, "retry_spool")
                self.fanout.call(self.sink, "flush")
            elif isinstance(item, _Update):
                self.fanout.call(self.sink, "update", dict(item))
            else:
                self.in_hand = item
                self.fanout.call(self.sink, "send", item)
                self.in_hand = None
                self.sent += 1

    def submit(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            if isinstance(item, AlertEvent) and not self.rescue(item):
                log.error("Sink %s: event %s %s lost: its queue is full and it has no spool (%d lost so far).",
                          self.sink.key, item.kind, item.event_id, self.lost)

    def rescue_all(self, events: list[AlertEvent], deadline: float) -> int:
        """Spool events the worker will not handle, from a thread of its own waited for until
        deadline: a stalled disk must not hold the stop (systemd kills it at TimeoutStopSec). The
        number lost; those not written by the deadline are named in the log."""
        done: list[bool] = []

        def save() -> None:  # results only: lost is counted once, below, on this thread
            for event in events:
                done.append(self.save(event))

        saver = threading.Thread(target=save, name=f"sink-{self.sink.key}-stop", daemon=True)
        saver.start()
        saver.join(max(0.0, deadline - time.monotonic()))
        handled = len(done)
        late = events[handled:]
        lost = handled - sum(done[:handled]) + len(late)
        self.lost += lost
        if late:
            log.error("Sink %s: events %s could not be written to its spool in time at the stop (a stalled disk?); "
                      "they are lost unless the write ends before the process does.", self.sink.key,
                      ", ".join(f"{e.kind} {e.event_id}" for e in late))
        return lost

    def rescue(self, event: AlertEvent) -> bool:
        """An event the worker will not handle: into the spool if the sink has one, else counted lost."""
        if self.save(event):
            return True
        self.lost += 1
        return False

    def save(self, event: AlertEvent) -> bool:
        """Into the sink's spool; False when it has none or the write failed (the caller counts it)."""
        try:
            return bool(self.sink.keep(event))
        except Exception as exc:  # noqa: BLE001 - counted as lost by the caller
            log.error("Sink %s: could not spool event %s (%s).", self.sink.key, event.event_id, exc)
            return False

    def leftovers(self) -> list[AlertEvent]:
        out = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return out
            if isinstance(item, AlertEvent):
                out.append(item)


class Fanout:
    def __init__(self, sinks: list[Sink], device_name: str = "", *, queue_max: int = QUEUE_MAX,
                 flush_every_s: float = FLUSH_EVERY_S, close_timeout_s: float = CLOSE_TIMEOUT_S):
        self.sinks = list(sinks)
        self.device_name = device_name
        self.close_timeout_s = close_timeout_s
        self.failures: Counter[str] = Counter()  # sink key -> exceptions caught (stats() adds the sink's own)
        self._lock = threading.Lock()
        self._workers = [_Worker(s, self, queue_max, flush_every_s) for s in self.sinks]
        self._closed = False

    def call(self, sink: Sink, action: str, *args) -> None:
        """Run one sink method, catching, logging and counting any exception (worker threads)."""
        try:
            getattr(sink, action)(*args)
        except Exception as exc:  # noqa: BLE001 - the pipeline must keep running
            with self._lock:
                self.failures[sink.key] += 1
                n = self.failures[sink.key]
            # One line for the journal; the traceback only for someone debugging.
            log.error("Sink %s failed in %s (%d failures so far): %s", sink.key, action, n,
                      str(exc) or type(exc).__name__)
            log.debug("Sink %s failure in %s:", sink.key, action, exc_info=exc)

    def send(self, event: AlertEvent) -> None:
        # An id lets receivers drop the duplicates that at-least-once delivery can produce.
        if not event.event_id or not event.device:
            event = dataclasses.replace(event, event_id=event.event_id or uuid.uuid4().hex,
                                        device=event.device or self.device_name)
        for w in self._workers:
            w.submit(event)

    def flush(self) -> None:
        """Ask every sink to deliver what is pending (returns at once)."""
        for w in self._workers:
            w.submit(_FLUSH)

    def update(self, status: dict) -> None:
        """The current status for sinks that show live values (returns at once; dropped, not
        queued behind, when such a sink is busy: the next one replaces it)."""
        for w in self._workers:
            if type(w.sink).update is not Sink.update and w.queue.empty():
                w.submit(_Update(status))

    def close(self) -> None:
        """Flush and close every sink within close_timeout_s; spool or count what is left."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.close_timeout_s
        rescue_by = deadline + RESCUE_TIMEOUT_S
        for w in self._workers:
            try:
                w.queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
        for w in self._workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))
            if w.thread.is_alive():
                # it may be in a stalled spool write: the rescue and the count below wait so long at most
                spool = getattr(w.sink, "spool", None)
                if spool is not None:
                    spool.wait_s = SPOOL_WAIT_S
                left = w.leftovers()
                lost = w.rescue_all(left, rescue_by) if left else 0
                if not left:
                    what = "no events were queued behind it"
                elif getattr(w.sink, "spool", None) is not None:
                    what = f"its {len(left)} queued events were put in its spool" + (f", {lost} lost" if lost else "")
                else:
                    what = f"its {len(left)} queued events are lost (it has no spool)"
                busy = w.in_hand
                if busy is not None:  # the sink's own send decides its fate, so it is named, not counted
                    what = (f"{busy.kind} {busy.event_id} was in hand, delivered or spooled only if that call ends "
                            f"before the process does; {what}")
                log.warning("Sink %s still busy %.1f s after the stop; %s.", w.sink.key, self.close_timeout_s, what)
                self.call(w.sink, "abort")
            self._count_unsaved(w)

    def _count_unsaved(self, w: _Worker) -> None:
        """Events a spool held in memory (its folder refused them) end with this process: lost."""
        try:
            n = w.sink.unsaved()
        except Exception as exc:  # noqa: BLE001 - a count for the log, never worth failing a stop
            log.error("Sink %s: cannot count the events held in memory (%s).", w.sink.key, exc)
            return
        if n:
            w.lost += n
            spool = getattr(w.sink, "spool", None)
            why = f"its spool {spool.dir} cannot be written ({spool.disk_error})" if spool is not None else \
                "they were never written to disk"
            if spool is not None and not spool.drop_memory():
                why += ", unless the write in progress there ends before the process does"
            log.error("Sink %s: %d undelivered alerts held in memory are lost with this stop: %s.", w.sink.key, n,
                      why)

    def stats(self) -> dict[str, dict]:
        """Per sink: sent, delivered, spooled (on disk + in memory), dead-lettered, dropped, lost, failures.
        failures: the sink's own count plus the exceptions caught here; every sink, 0 included, so
        each /metrics counter exists before its first failure (Prometheus's increase() cannot see
        a counter's first step otherwise)."""
        out = {}
        for w in self._workers:
            s = w.sink
            spool: Spool | None = getattr(s, "spool", None)
            # `is None`, not truthiness: an empty Spool is falsy (len 0), and its dead and dropped
            # counts are totals that must not fall back to 0 once it empties
            has = spool is not None
            out[s.key] = {"queued": w.queue.qsize(), "sent": w.sent, "delivered": s.delivered,
                          "spooled": len(spool) if has else 0, "in_memory": spool.in_memory if has else 0,
                          "dead_lettered": spool.dead if has else 0, "dropped": spool.dropped if has else 0,
                          "lost": w.lost + s.given_up, "failures": self.failures[s.key] + s.failed}
            if isinstance(s, DisabledSink):
                out[s.key]["disabled"] = s.why
        return out

    def check(self) -> dict[str, str]:
        out = {}
        for sink in self.sinks:
            try:
                out[sink.key] = sink.check()
            except Exception as exc:  # noqa: BLE001
                out[sink.key] = f"check failed: {exc}"
        return out


def build_sinks(sinks_cfg: SinksConfig, device_name: str, **fanout_options) -> Fanout:
    """The log sink plus every configured section, each spooling sink in <spool_dir>/<key>; a
    sink that cannot start here is a DisabledSink, so the others still run."""
    root = expand_path(sinks_cfg.spool_dir or DEFAULT_SPOOL_DIR)
    sinks: list[Sink] = [LogSink()]
    for key in configurable():
        cfg = getattr(sinks_cfg, key, None)
        if cfg is None:
            continue
        try:
            sinks.extend(SINKS[key].build(cfg, root, device_name))
        except SinkUnavailable as exc:
            log.error("Sink %s cannot start and is disabled; the monitor and the other sinks run on: %s", key, exc)
            sinks.append(DisabledSink(key, str(exc)))
    return Fanout(sinks, device_name, **fanout_options)
