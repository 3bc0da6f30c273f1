"""Sends each event to every configured sink; one sink failing never affects the others."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from pathlib import Path

from edge.config import SinksConfig
from edge.sinks.base import SINKS, AlertEvent, Sink
from edge.sinks.log import LogSink
from edge.sinks.spool import DEFAULT_SPOOL_DIR, Spool

log = logging.getLogger(__name__)

OPTIONAL = ("jsonl", "webhook", "mqtt", "gpio", "command")  # SinksConfig fields, in send order


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
    root = Path(sinks_cfg.spool_dir or DEFAULT_SPOOL_DIR).expanduser()
    sinks: list[Sink] = [LogSink()]
    for key in OPTIONAL:
        cfg = getattr(sinks_cfg, key)
        if cfg is None:
            continue
        cls = SINKS[key]
        extra: dict = {}
        if getattr(cls, "spooled", False):
            extra["spool"] = Spool(root / key)
        if key == "mqtt":
            extra["device_name"] = device_name
        sinks.append(cls(**dataclasses.asdict(cfg), **extra))
        if key == "mqtt" and cfg.discovery:
            from edge.sinks.homeassistant import HomeAssistantSink

            sinks.append(HomeAssistantSink(cfg.host, cfg.port, cfg.username, cfg.password, cfg.keepalive_s,
                                           device_name=device_name, prefix=cfg.discovery_prefix))
    return Fanout(sinks, device_name)
