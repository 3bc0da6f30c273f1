"""Sends each event to every configured sink; one sink failing never affects the others."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter

from typing import TYPE_CHECKING

from edge.paths import expand_path
from edge.sinks.base import SINKS, AlertEvent, Sink
from edge.sinks.log import LogSink
from edge.sinks.spool import DEFAULT_SPOOL_DIR

if TYPE_CHECKING:  # edge.config builds [sinks] from this package's registry
    from edge.config import SinksConfig

log = logging.getLogger(__name__)


def configurable() -> list[str]:
    """Keys of the sinks that have a [sinks.<key>] table, in send order."""
    return [key for key, cls in sorted(SINKS.items(), key=lambda kv: kv[1].order) if cls.Config is not None]


class Fanout:
    def __init__(self, sinks: list[Sink], device_name: str = ""):
        self.sinks = list(sinks)
        self.device_name = device_name
        self.failures: Counter[str] = Counter()  # sink key -> exceptions caught

    def _each(self, action: str, *args) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, action)(*args)
            except Exception as exc:  # noqa: BLE001 - the pipeline must keep running
                self.failures[sink.key] += 1
                first = self.failures[sink.key] == 1  # full traceback once; then one line each
                log.error("Sink %s failed in %s (%d failures so far): %s", sink.key, action,
                          self.failures[sink.key], exc, exc_info=first)

    def send(self, event: AlertEvent) -> None:
        # An id lets receivers drop the duplicates that at-least-once delivery can produce.
        if not event.event_id or not event.device:
            event = dataclasses.replace(event, event_id=event.event_id or uuid.uuid4().hex,
                                        device=event.device or self.device_name)
        self._each("send", event)

    def flush(self) -> None:
        self._each("flush")

    def update(self, status: dict) -> None:
        self._each("update", status)

    def close(self) -> None:
        self._each("close")

    def check(self) -> dict[str, str]:
        out = {}
        for sink in self.sinks:
            try:
                out[sink.key] = sink.check()
            except Exception as exc:  # noqa: BLE001
                out[sink.key] = f"check failed: {exc}"
        return out


def build_sinks(sinks_cfg: SinksConfig, device_name: str) -> Fanout:
    """The log sink plus every configured section, each spooling sink in <spool_dir>/<key>."""
    root = expand_path(sinks_cfg.spool_dir or DEFAULT_SPOOL_DIR)
    sinks: list[Sink] = [LogSink()]
    for key in configurable():
        cfg = getattr(sinks_cfg, key, None)
        if cfg is not None:
            sinks.extend(SINKS[key].build(cfg, root, device_name))
    return Fanout(sinks, device_name)
