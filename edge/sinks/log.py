"""Always-on sink: one log line per event, so every alert is visible in the journal."""

from __future__ import annotations

import logging

from edge.sinks.base import AlertEvent, Sink, register

log = logging.getLogger("edge.alerts")


@register
class LogSink(Sink):
    key = "log"

    def send(self, event: AlertEvent) -> None:
        if event.kind.startswith("camera_"):  # no mood to report: the camera itself is the news
            log.log(logging.WARNING if event.kind == "camera_down" else logging.INFO, "%s device=%s t=%.1fs",
                    event.kind.replace("_", " "), event.device or "-", event.t_s)
            self.delivered += 1
            return
        counts = ", ".join(f"{k}={v}" for k, v in sorted(event.counts.items())) or "none"
        level = logging.WARNING if event.kind == "raised" else logging.INFO
        log.log(level, "alert %s: negative share %.0f%% of %d faces (%s) device=%s t=%.1fs",
                event.kind, 100 * event.negative_share, event.faces, counts, event.device or "-", event.t_s)
        self.delivered += 1
