"""Live counters for the local status endpoint: /status (JSON) and /metrics (Prometheus)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Stats:
    """Written by the pipeline thread, read by the HTTP thread; a lock keeps snapshots whole."""

    def __init__(self, runtime: str, model: str, source: str):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.data = {"runtime": runtime, "model": model, "source": source, "frames": 0, "dropped_frames": 0,
                     "fps": 0.0, "faces": 0, "negative_share": 0.0, "counts": {}, "alert_state": "clear",
                     "alerts_raised": 0, "stage_ms": {}, "sink_failures": {}, "camera": "up",
                     "camera_down_total": 0, "sinks": {}}
        self._last_t: float | None = None

    def update(self, result, dropped: int, stage_ms: dict, sink_failures: dict):
        now = time.monotonic()
        with self._lock:
            d = self.data
            if self._last_t is not None and now > self._last_t:
                inst = 1.0 / (now - self._last_t)
                d["fps"] = inst if d["fps"] == 0 else 0.9 * d["fps"] + 0.1 * inst
            self._last_t = now
            d["frames"] += 1
            d["camera"] = "up"
            d["dropped_frames"] = dropped
            d["faces"] = result.mood.faces
            d["negative_share"] = round(result.mood.negative_share, 4)
            d["counts"] = result.mood.counts
            d["alert_state"] = result.alert_state
            d["alerts_raised"] += result.transition == "raised"
            d["stage_ms"] = {k: round(v, 3) for k, v in stage_ms.items()}
            d["sink_failures"] = dict(sink_failures)

    def camera_down(self):
        """No frames: nothing is known about the queue, so no mood and no alert is asserted."""
        with self._lock:
            self.data.update(camera="down", fps=0.0, faces=0, negative_share=None, counts={}, alert_state="unknown")
            self.data["camera_down_total"] += 1
            self._last_t = None  # the fps average restarts with the next frame

    def camera_up(self):
        with self._lock:
            self.data["camera"] = "up"

    def set_sinks(self, sinks: dict):
        """Per-sink delivery counts from Fanout.stats()."""
        with self._lock:
            self.data["sinks"] = sinks

    def snapshot(self) -> dict:
        with self._lock:
            return {**json.loads(json.dumps(self.data)), "uptime_s": round(time.monotonic() - self.started, 1)}


# Fanout.stats() key -> metric (name, help, type)
SINK_METRICS = (
    ("sent", "sink_sent_total", "Events handed to the sink.", "counter"),
    ("delivered", "sink_delivered_total", "Events (MQTT: messages) the receiver accepted.", "counter"),
    ("queued", "sink_queued", "Events waiting in the sink's in-memory queue.", "gauge"),
    ("spooled", "sink_spooled", "Undelivered events in the sink's spool.", "gauge"),
    ("in_memory", "sink_spool_in_memory", "Spooled events held in memory because the disk refused them.", "gauge"),
    ("dead_lettered", "sink_dead_lettered_total", "Events rejected for good, moved to the dead-letter folder.", "counter"),
    ("dropped", "sink_spool_dropped_total", "Oldest spooled events dropped (spool cap or full disk).", "counter"),
    ("lost", "sink_lost_total", "Events neither delivered nor spooled (sink stuck, no spool).", "counter"),
)


def prometheus(s: dict) -> str:
    lines = []

    def metric(name, value, help_, kind="gauge", labels=""):
        lines.extend([f"# HELP queue_mood_{name} {help_}", f"# TYPE queue_mood_{name} {kind}"])
        if isinstance(value, dict):
            for k, v in value.items():
                lines.append(f'queue_mood_{name}{{{labels}="{k}"}} {v}')
        else:
            lines.append(f"queue_mood_{name} {'NaN' if value is None else value}")

    metric("frames_total", s["frames"], "Frames processed.", "counter")
    metric("dropped_frames_total", s["dropped_frames"], "Live frames dropped because processing was slower.", "counter")
    metric("fps", round(s["fps"], 3), "Frames processed per second (smoothed).")
    metric("faces", s["faces"], "Tracked faces in the mood window.")
    metric("negative_share", s["negative_share"], "Share of tracked faces with a confident negative expression.")
    metric("faces_by_emotion", s["counts"], "Tracked faces per smoothed emotion.", labels="emotion")
    metric("alert_raised", int(s["alert_state"] == "raised"), "1 while an alert is raised.")
    metric("alerts_raised_total", s["alerts_raised"], "Alerts raised since start.", "counter")
    metric("stage_latency_ms", s["stage_ms"], "Median stage latency over recent frames.", labels="stage")
    metric("sink_failures_total", s["sink_failures"], "Failed deliveries per sink.", "counter", labels="sink")
    metric("camera_up", int(s["camera"] == "up"), "1 while the source delivers frames, 0 once it is silent.")
    metric("camera_down_total", s["camera_down_total"], "Times the source went silent.", "counter")
    per_sink = s["sinks"]
    for key, name, help_, kind in SINK_METRICS:
        metric(name, {sink: c[key] for sink, c in per_sink.items()}, help_, kind, labels="sink")
    metric("uptime_seconds", s["uptime_s"], "Seconds since start.")
    return "\n".join(lines) + "\n"


class StatusServer:
    """A tiny HTTP server on a daemon thread; binds 127.0.0.1 unless configured otherwise."""

    def __init__(self, stats: Stats, host: str = "127.0.0.1", port: int = 8765):
        stats_ref = stats

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                snap = stats_ref.snapshot()
                if self.path.rstrip("/") == "/status":
                    body, ctype = json.dumps(snap, indent=2).encode(), "application/json"
                elif self.path.rstrip("/") == "/metrics":
                    body, ctype = prometheus(snap).encode(), "text/plain; version=0.0.4"
                else:
                    self.send_error(404, "try /status or /metrics")
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the journal for alerts, not for scrapes
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        # poll_interval: how long stop() waits for the serving loop; short, so a stop stays prompt.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="status-http", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
