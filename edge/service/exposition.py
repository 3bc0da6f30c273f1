"""/metrics in the Prometheus text format, written by prometheus_client from one Stats
snapshot per scrape (a custom collector: no global registry, no state of its own).

Series (HQ's rules and dashboard in deploy/fleet/ use these names; the store and checkout
labels come from the scrape config, one target per Pi):
queue_mood_info{device,runtime,version,commit,bundle_created,model_sha256} (edge.release; "" where not known),
queue_mood_frames_total, queue_mood_dropped_frames_total,
queue_mood_fps, queue_mood_faces, queue_mood_negative_share, queue_mood_faces_by_emotion{emotion},
queue_mood_alert_raised, queue_mood_alerts_raised_total, queue_mood_face_frames_total, queue_mood_stage_latency_ms{stage},
queue_mood_sink_failures_total{sink}, queue_mood_sink_disabled{sink}, queue_mood_camera_up, queue_mood_camera_down_total,
queue_mood_camera_read_failures_total, queue_mood_camera_reopens_total,
queue_mood_sink_{sent,delivered,dead_lettered,spool_dropped,lost}_total{sink},
queue_mood_sink_{queued,spooled,spool_in_memory}{sink}, queue_mood_uptime_seconds,
queue_mood_process_cpu_share (after the first few seconds), queue_mood_clock_synced (on Linux),
queue_mood_disk_{free,size}_bytes{disk}, queue_mood_disk_read_only{disk} (under edge run, for each disk it
reads: see below),
and where the board says: queue_mood_cpu_temperature_celsius, queue_mood_throttled, queue_mood_under_voltage.

The disk label names the folder of the monitor's state on that disk: "spool" (sinks.spool_dir),
"jsonl" (the JSON-lines sink's file) or "history" (status.history_db); folders on one disk are
one series, under the first of these names (a short name, not a path: a path differs from Pi
to Pi and would make HQ's rules and dashboard per-Pi)."""

from __future__ import annotations

from typing import Callable

from edge.release import COMMIT_LEN

# Fanout.stats() key -> (metric name, help, counter?)
SINK_SERIES = (
    ("sent", "sink_sent", "Events handed to the sink.", True),
    ("delivered", "sink_delivered", "Events the receiver accepted (MQTT: not counting state messages).", True),
    ("queued", "sink_queued", "Events waiting in the sink's in-memory queue.", False),
    ("spooled", "sink_spooled", "Undelivered events in the sink's spool.", False),
    ("in_memory", "sink_spool_in_memory", "Spooled events held in memory because the disk refused them.", False),
    ("dead_lettered", "sink_dead_lettered", "Events rejected for good, moved to the dead-letter folder.", True),
    ("dropped", "sink_spool_dropped", "Oldest spooled events dropped (spool cap or full disk).", True),
    ("lost", "sink_lost", "Events neither delivered nor spooled (sink stuck, no spool; or held in memory at a stop).",
     True),
)


def render(snapshot: Callable[[], dict]) -> tuple[bytes, str]:
    """(body, content type) for one scrape; ImportError when prometheus_client is missing."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, snapshot: Callable[[], dict]):
        self.snapshot = snapshot

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        s = self.snapshot()

        def family(cls, name, help_, value=None, label=None, values=None):
            m = cls(f"queue_mood_{name}", help_, labels=[label] if label else None)
            for key, v in (values.items() if label else [(None, value)]):
                m.add_metric([key] if label else [], v)
            return m

        def gauge(*a, **k):
            return family(GaugeMetricFamily, *a, **k)

        def counter(*a, **k):
            return family(CounterMetricFamily, *a, **k)

        r = s["release"]
        yield InfoMetricFamily("queue_mood", "The monitor on this device and the release it runs.",
                               value={"device": s["device"], "runtime": s["runtime"], "version": r["version"],
                                      "commit": r["commit"] or "", "bundle_created": r["bundle_created"] or "",
                                      "model_sha256": (r["model_sha256"] or "")[:COMMIT_LEN]})
        yield counter("frames", "Frames processed.", s["frames"])
        yield counter("dropped_frames", "Live frames dropped because processing was slower.", s["dropped_frames"])
        yield gauge("fps", "Frames processed per second (smoothed).", s["fps"])
        # negative_share is None while the camera is down and before the first frame: the queue is
        # unknown, so these are NaN, never a clear queue of 0 faces (HQ's rules and dashboard leave NaN series out of sums)
        share = s["negative_share"]

        def known(value):
            return float("nan") if share is None else value

        yield gauge("faces", "Tracked faces in the mood window (NaN while the camera is down or before the first frame).", known(s["faces"]))
        yield gauge("negative_share", "Share of tracked faces with a confident negative expression.", known(share))
        yield gauge("faces_by_emotion", "Tracked faces per smoothed emotion.", label="emotion",
                    values={k: known(v) for k, v in s["counts"].items()})
        yield gauge("alert_raised", "1 while an alert is raised (NaN while the camera is down or before the first frame).",
                    known(int(s["alert_state"] == "raised")))
        yield counter("alerts_raised", "Alerts raised since start.", s["alerts_raised"])
        yield counter("face_frames", "Frames with at least one tracked face (none for hours where last week had them: "
                      "the camera may be knocked askew or covered).", s["face_frames"])
        yield gauge("stage_latency_ms", "Median stage latency over recent frames.", label="stage",
                    values=s["stage_ms"])
        yield counter("sink_failures", "Failed deliveries per sink.", label="sink", values=s["sink_failures"])
        # A sink that could not start exports its failure counter at 1 from the first scrape, a
        # step increase() never sees: this gauge is what HQ's QueueMonitorSinkDisabled reads.
        yield gauge("sink_disabled", "1 for a configured sink that could not start on this machine (disabled).",
                    label="sink", values={sink: int("disabled" in c) for sink, c in s["sinks"].items()})
        yield gauge("camera_up", "1 while the source delivers frames, 0 once it is silent.", int(s["camera"] == "up"))
        yield counter("camera_down", "Times the source went silent.", s["camera_down_total"])
        yield counter("camera_read_failures", "Reads a live camera failed (timeouts, driver errors).",
                      s["camera_read_failures"])
        yield counter("camera_reopens", "Attempts to reopen a live camera or stream that stopped, failed ones too.", s["camera_reopens"])
        for key, name, help_, is_counter in SINK_SERIES:
            values = {sink: c[key] for sink, c in s["sinks"].items()}
            yield (counter if is_counter else gauge)(name, help_, label="sink", values=values)
        yield gauge("uptime_seconds", "Seconds since start.", s["uptime_s"])
        h = s["health"]
        if h.get("process_cpu_share") is not None:
            yield gauge("process_cpu_share", "CPU seconds this process used per second, all threads (1.0 = one core "
                        "busy), over the last few seconds.", h["process_cpu_share"])
        if h.get("clock_synced") is not None:
            yield gauge("clock_synced", "1 once an NTP client has synchronized the clock; while 0, events' wall_time "
                        "may be far off (a Pi has no real-time clock).", int(h["clock_synced"]))
        if h.get("disks"):  # a disk that cannot be read is not there: no series, never 0 bytes free
            yield gauge("disk_free_bytes", "Bytes this user may still write on the disk of the monitor's state "
                        "folder (statvfs f_bavail).", label="disk",
                        values={k: d["free_bytes"] for k, d in h["disks"].items()})
            yield gauge("disk_size_bytes", "Size in bytes of the disk of the monitor's state folder.", label="disk",
                        values={k: d["size_bytes"] for k, d in h["disks"].items()})
            yield gauge("disk_read_only", "1 while the disk of the monitor's state folder is mounted read-only (ext4 "
                        "does so to an SD card with errors): undelivered alerts, JSON lines and the page's history "
                        "cannot be written there.", label="disk", values={k: d["read_only"] for k, d in h["disks"].items()})
        if h["cpu_temperature_c"] is not None:
            yield gauge("cpu_temperature_celsius", "CPU temperature.", h["cpu_temperature_c"])
        if h["throttled_flags"] is not None:
            now = h["throttled_now"]
            yield gauge("throttled", "1 while the Pi firmware caps the clock or throttles (heat or power).",
                        int(any(n != "under-voltage" for n in now)))
            yield gauge("under_voltage", "1 while the Pi firmware reports under-voltage.", int("under-voltage" in now))
