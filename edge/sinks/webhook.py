"""POSTs each event as JSON (stdlib urllib). Failed events wait in an on-disk spool and are
retried, in order, with an exponential back-off so a dead server is not hit every frame."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edge.errors import check
from edge.sinks.base import AlertEvent, Sink, register
from edge.sinks.spool import DEFAULT_SPOOL_DIR, Spool

log = logging.getLogger(__name__)


def tcp_reachable(host: str, port: int, timeout_s: float = 3.0) -> str:
    """'' when a TCP connection to host:port opens, else the reason it did not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except OSError as exc:
        return str(exc) or type(exc).__name__


@dataclass
class WebhookSinkConfig:
    url: str = ""
    timeout_s: float = 5.0
    headers: dict = field(default_factory=dict)

    def validate(self, p):
        check(self.url.startswith(("http://", "https://")), f"{p}.url", self.url, "an http:// or https:// URL")


@register
class WebhookSink(Sink):
    key = "webhook"
    Config = WebhookSinkConfig
    order = 20
    spooled = True  # build_sinks passes spool=Spool(<spool_dir>/webhook)

    def __init__(self, url: str, timeout_s: float = 5.0, headers: dict | None = None, *,
                 spool: Spool | None = None, retry_min_s: float = 2.0, retry_max_s: float = 120.0):
        self.url = url
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json", "User-Agent": "queue-mood", **(headers or {})}
        self.spool = spool if spool is not None else Spool(DEFAULT_SPOOL_DIR / self.key)
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._delay = 0.0  # current back-off; 0 while the server answers
        self._next_try = 0.0  # monotonic time before which nothing is sent

    def _post(self, payload: dict) -> None:
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=self.headers,
                                     method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # non-2xx >= 400 raises
            resp.read()
            if not 200 <= resp.status < 300:
                raise OSError(f"HTTP {resp.status}")

    def _failed(self, exc: Exception) -> None:
        first = self._delay == 0
        self._delay = min(max(2 * self._delay, self.retry_min_s), self.retry_max_s)
        self._next_try = time.monotonic() + self._delay
        if first:  # once per outage, not once per retry
            log.warning("Webhook %s failed (%s); spooling events, retrying with back-off.", self.url, exc)

    def _succeeded(self) -> None:
        if self._delay:
            log.info("Webhook %s reachable again.", self.url)
        self._delay = self._next_try = 0.0

    def _drain(self) -> None:
        for event_id, payload in self.spool.pending():
            try:
                self._post(payload)
            except Exception as exc:  # noqa: BLE001 - any failure means "try later"
                self._failed(exc)
                return
            self.spool.ack(event_id)
        self._succeeded()

    def send(self, event: AlertEvent) -> None:
        payload = event.to_dict()
        if not len(self.spool) and time.monotonic() >= self._next_try:
            try:
                self._post(payload)  # the common case: no disk write at all
                self._succeeded()
                return
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
                self.spool.put(payload)
                return
        self.spool.put(payload)  # behind older events, so order is kept
        self.flush()

    def flush(self) -> None:
        if len(self.spool) and time.monotonic() >= self._next_try:
            self._drain()

    def close(self) -> None:
        if len(self.spool):
            self._drain()  # one last try on shutdown, back-off or not; the rest stays on disk

    def check(self) -> str:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        why = tcp_reachable(parts.hostname or "", port)
        backlog = f"; {len(self.spool)} events spooled" if len(self.spool) else ""
        if why:
            return f"webhook {parts.hostname}:{port} not reachable ({why}){backlog}"
        return f"webhook {parts.hostname}:{port} reachable{backlog}"
