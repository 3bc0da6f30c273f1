"""`edge run`: the service loop. Frames in, counts and alerts out; no frame or face crop is
written or sent anywhere unless --preview asks for an annotated video.

Exit codes: 0 normal end (source finished, --max-frames/--duration reached, SIGINT/SIGTERM);
2 bad input (config, model, camera, video) found before the loop starts (under systemd 60 s
later, not at once: edge.service.notify.failed_start). A live camera that
stops delivering later is reopened with back-off for as long as the service runs; should the
source's grabber thread itself end or hang, the loop stops pinging the systemd watchdog, so
systemd restarts the service.

The loop never waits unboundedly: a live source is polled with a short timeout, so stop
signals and --duration work while the camera is silent, and a camera silent for
`source.down_after_s` is reported "down" (status, log, /metrics, a camera_down event to the
sinks) until its next frame. Sinks deliver from their own threads (edge.sinks.fanout).
"""

from __future__ import annotations

import logging
import math
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from edge.card import sha256_file
from edge.config import Config, StatusConfig
from edge.errors import UserError
from edge.files import held_by_this_process, no_core_dumps
from edge.outages import FLAP_WINDOW_S, OutageLog
from edge.paths import expand_path, same_file
from edge.pipeline.annotate import check_video_path
from edge.pipeline.core import load_parts
from edge.pipeline.tracking import PeopleCount
from edge.release import current as current_release, summary as release_summary
from edge.signals import StopFlag
from edge.sinks.base import AlertEvent
from edge.service import health
from edge.words import plural

log = logging.getLogger("edge")
STATE_EVERY_S = 5.0  # how often sinks that show live values (Home Assistant) get the current mood
# A status port that cannot be had at the start (another program on it, the address not up yet at
# boot) is tried again this often: the service runs for months, and its page must not stay away with it.
LISTEN_RETRY_S = 60.0


@dataclass
class RunOptions:
    max_frames: int | None = None
    duration_s: float | None = None
    preview: str | None = None  # path of an annotated video to write (debugging only)

    def validate(self, source: str = "") -> None:
        """Checked before anything opens: a limit of 0, a negative one or nan ran without a limit
        or for one frame, and still ended as a normal stop; a preview that is the `source`
        recording itself was written over it while it was read."""
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"--max-frames {self.max_frames} is not a number of frames; pass 1 or more, or leave it "
                            "out to run until the source ends.")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise UserError(f"--duration {self.duration_s:g} is not a number of seconds; pass a finite number above 0, "
                            "or leave it out to run until the source ends.")
        if self.preview:  # here, not only once the first frame is in
            check_video_path(self.preview)
            if source and same_file(self.preview, expand_path(source)):
                raise UserError(f"--preview {self.preview} is the recording being watched ({source}), and writing it "
                                "would destroy that recording; give --preview another file name.")


def make_event(kind: str, result, device: str) -> AlertEvent:
    return _event(kind, result.t_s, device, round(result.mood.negative_share, 4), result.mood.faces, result.mood.counts)


def _event(kind: str, t_s: float, device: str, negative_share: float = 0.0, faces: int = 0,
           counts: dict | None = None) -> AlertEvent:
    # synced read first: NTP setting the clock between the two reads then leaves a true time marked
    # unsynced (restamped to itself), never a stale one marked synced (which no one would correct)
    synced = health.clock_synced()
    mono, wall = time.monotonic(), time.time()
    return AlertEvent(kind=kind, t_s=round(t_s, 3), wall_time=health.wall_iso(wall), negative_share=negative_share,
                      faces=faces, counts=counts or {}, device=device, event_id=uuid.uuid4().hex,
                      clock_synced=synced, mono_s=mono)


TICK_S = 0.25  # longest wait for a frame before the loop checks its stop conditions again
SINK_STATS_EVERY_S = 1.0
STAGE_MS_EVERY_S = 1.0  # the stage medians for /status: 0.1 ms each time, too much to pay per frame


# A camera whose outages come and go (a loose cable, a failing USB port) would send a
# camera_down and a camera_up to every sink each time: an SMS command 600 times an hour. An
# outage starting within FLAP_WINDOW_S (edge.outages) of the end of the last one the sinks were told
# of goes to them only once it has lasted FLAP_REPORT_S: a camera gone for good is still reported within
# a minute, a flapping one at most once per window. The log and the status show every change.
FLAP_REPORT_S = 60.0


class _CameraWatch:
    """Marks the source down after down_after_s without a frame and up at the next frame;
    each change is logged and shown in the status, and sent to the sinks (see FLAP_WINDOW_S)."""

    def __init__(self, source_name: str, down_after_s: float, stats, sinks, device: str):
        self.name, self.down_after_s, self.stats, self.sinks, self.device = source_name, down_after_s, stats, sinks, device
        self.last_frame = time.monotonic()
        self.down = False
        self._told = False  # the sinks have this outage's camera_down
        self._told_up_at = -math.inf  # when the last outage the sinks were told of ended
        self._untold = 0  # outages since then the sinks were not told of
        # the journal's own flap rule: an outage within a minute of the last one logged is counted, not logged
        self.outages = OutageLog()

    def frame(self) -> bool:
        """A frame came; True when it ends an outage."""
        self.last_frame = time.monotonic()
        if self.down:
            self.down = False
            self.stats.camera_up()
            more = self.outages.more()
            if self._told:
                self._told, self._told_up_at = False, self.last_frame
                log.log(self.outages.level, "%s delivers frames again: camera up%s", self.name, more)
                self.sinks.send(_event("camera_up", self.last_frame, self.device))
            else:
                self._untold += 1
                log.log(self.outages.level, "%s delivers frames again: camera up (%d short outages within %.0f min "
                        "of the last the sinks were told of, not sent to them: check the cable and power)%s",
                        self.name, self._untold, FLAP_WINDOW_S / 60, more)
            return True
        return False

    def _say_down(self, silent: float) -> None:
        log.log(logging.ERROR if self.outages.said else logging.DEBUG, "%s delivered no frame for %.0f s: camera down "
                "(fps 0, mood unknown, alert state not asserted until it is back)", self.name, silent)

    def idle(self) -> None:
        now = time.monotonic()
        silent = now - self.last_frame
        if not self.down and silent >= self.down_after_s:
            self.down = True
            self.outages.start()
            self._say_down(silent)
            self.stats.camera_down(self.last_frame)
        elif self.down and self.outages.overdue(silent - self.down_after_s):
            self._say_down(silent)
        # by when the outage started (its last frame), not now: one starting inside the window is a flap
        if self.down and not self._told and (self.last_frame - self._told_up_at >= FLAP_WINDOW_S
                                             or silent >= FLAP_REPORT_S):
            self._told, self._untold = True, 0
            self.sinks.send(_event("camera_down", now, self.device))


def _close_each(*closes) -> None:
    """Each part closed even when one before it fails (a sink that raises at the stop must not cost
    the chart its last points); the first failure is raised once all were tried, the others logged."""
    first = None
    for close in closes:
        if close is None:
            continue
        try:
            close()
        except BaseException as exc:
            if first is None:
                first = exc
            else:
                log.error("closing %s failed too: %s: %s", getattr(close, "__qualname__", close),
                          type(exc).__name__, exc)
    if first is not None:
        raise first


def _start_status_server(stats, st: StatusConfig, again: bool = False):
    """The status page's server, listening, with its address logged; None when it cannot listen
    (a WARNING the first time, DEBUG when edge run tries `again`): the monitor matters more than
    its status page."""
    from edge.config import is_loopback
    from edge.service.status import StatusServer

    try:
        server = StatusServer(stats, st).start()
    except (OSError, UserError) as exc:  # UserError: a page file gone from the install, which no port setting mends
        why, doctor = ((str(exc).rstrip("."), "") if isinstance(exc, UserError) else
                       (f"cannot listen on {st.host}:{st.port} ({exc.strerror})", " (edge doctor says what to do)"))
        log.log(logging.DEBUG if again else logging.WARNING, "status endpoint not started: %s; the monitor runs on "
                "without its page and tries again every %.0f s%s", why, LISTEN_RETRY_S, doctor)
        return None
    wildcard = st.host in ("0.0.0.0", "::")
    shown = "localhost" if is_loopback(st.host) else "<this Pi's address>" if wildcard else st.host
    log.info("status page on http://%s:%d/ (JSON: /status, Prometheus: /metrics)%s", shown, server.port,
             "; needs the token or password from [status]" if st.token or st.password else
             "; /metrics only, with [status] metrics_token (no token or password opens the page)"
             if st.metrics_token else "")
    return server


def state_folders(cfg: Config, sinks) -> dict[str, Path]:
    """The folders this monitor writes to, by the short name /metrics labels their disk with
    (health.DiskSpace): the spool's (its disk, /var/lib/queue-mood under install.sh, is the one to
    watch even with no spooling sink: it is the SD card), the JSON-lines file's and the history
    database's where they are configured."""
    from edge.sinks.jsonl import JsonlSink
    from edge.sinks.spool import DEFAULT_SPOOL_DIR

    folders = {"spool": expand_path(cfg.sinks.spool_dir or DEFAULT_SPOOL_DIR)}
    for sink in sinks.sinks:  # the running sink's file, default and all (a disabled one writes nothing)
        if isinstance(sink, JsonlSink):
            folders["jsonl"] = sink.path.parent
    if cfg.status.history_db:
        folders["history"] = expand_path(cfg.status.history_db).parent
    return folders


def spool_held(cfg: Config):
    """This run's hold on its spool folder (edge.files.held_by_this_process), so that a second edge
    run on it, such as `sudo edge run` by hand while the service runs, is refused before it opens
    the camera: each would deliver and delete the other's spooled events, and both would write one
    JSON-lines file and history database. Held when the config names the folder (the service's
    does) or a sink spools in the default one; runs of the defaults without either (a recording
    at two terminals, the tests) keep nothing there to share."""
    from contextlib import nullcontext

    from edge.sinks import SINKS
    from edge.sinks.fanout import configurable
    from edge.sinks.spool import DEFAULT_SPOOL_DIR

    if not cfg.sinks.spool_dir and not any(SINKS[k].spooled for k in configurable() if getattr(cfg.sinks, k, None) is not None):
        return nullcontext()
    spool = expand_path(cfg.sinks.spool_dir or DEFAULT_SPOOL_DIR)
    # not required: a spool this user cannot write (read-only, another user's) is held in memory, and the run goes on
    return held_by_this_process(spool, required=False, in_use=lambda holder: (
        f"The spool folder {spool} is in use by another edge run ({holder}), which would deliver and delete this "
        "run's spooled alerts: the service is probably running, so stop it first (sudo systemctl stop queue-mood), "
        "or run with a copy of the config whose sinks.spool_dir is another folder."))


def run(cfg: Config, opts: RunOptions, on_result=None) -> dict:
    """Run the pipeline until the source ends or a limit/signal stops it; returns a summary."""
    with spool_held(cfg):
        return _run(cfg, opts, on_result)


def _run(cfg: Config, opts: RunOptions, on_result=None) -> dict:
    from edge.pipeline.annotate import AnnotatedVideo
    from edge.pipeline.core import Pipeline
    from edge.sinks import build_sinks
    from edge.pipeline.sources import open_source
    from edge.redact import redact_text
    from edge.service.history import History
    from edge.service.notify import Watchdog, notify
    from edge.service.status import Stats

    opts.validate(cfg.source.path)
    no_core_dumps()  # before the first frame: a crash or the watchdog's SIGABRT must not write frames to disk
    classifier, detector = load_parts(cfg)
    device = cfg.device_name or socket.gethostname()
    pipeline = Pipeline(cfg, classifier, detector)
    s = cfg.source
    source = open_source(s.camera, s.path, s.width, s.height, s.fps, max_backoff_s=s.reopen_max_backoff_s,
                         realtime=s.realtime, wait_for_camera=s.wait_for_camera, rotate=s.rotate, focus_m=s.focus_m,
                         mains_hz=s.mains_hz)
    st = cfg.status
    history = History(db_path=str(expand_path(st.history_db)) if st.history_db else "")
    # The model file's own sha256 (not its card's, which may describe the int8 file beside a float
    # one): the journal and head office (the release in /status and /metrics) tell a retrained model from the shipped one.
    model_sha256 = sha256_file(classifier.path)
    release = current_release(model_sha256)
    stats = Stats(classifier.runtime.describe(), str(classifier.path), source.describe(), device=device,
                  labels=classifier.labels, negative=cfg.mood.negative, history=history, alert_advice=st.alert_advice,
                  release=release)
    log.info("%s; model %s (sha256 %s, %s, %s); detector %s; source %s", release_summary(release), classifier.path,
             model_sha256[:12], classifier.card.architecture,
             classifier.runtime.describe(), detector.describe(), redact_text(source.describe()))
    sinks = build_sinks(cfg.sinks, device)
    stats.set_sinks(sinks.stats())  # every sink's failure counter at 0 before the first scrape
    stats.set_disks(state_folders(cfg, sinks))  # /metrics' free-space series, read with the rest of health
    server = _start_status_server(stats, st) if st.enabled else None
    next_listen = time.monotonic() + LISTEN_RETRY_S
    stop = StopFlag()
    stop.install()
    writer = None
    frames = alerts = 0
    people = PeopleCount()
    started = next_state = time.monotonic()
    cpu_started = time.process_time()
    watchdog = Watchdog()
    camera = _CameraWatch(source.describe(), s.down_after_s, stats, sinks, device)
    grabber_lost = False
    next_sink_stats = next_stage_ms = 0.0
    stage_ms: dict[str, float] = {}

    def should_stop() -> bool:
        return stop.event.is_set() or bool(opts.max_frames and frames >= opts.max_frames) or \
            bool(opts.duration_s and time.monotonic() - started >= opts.duration_s)

    try:
        with source:
            notify("READY=1")
            for frame in source.poll(TICK_S):
                if source.alive():  # a loop that runs is not enough: frames must be able to come
                    watchdog.ping()
                elif not grabber_lost:
                    grabber_lost = True
                    log.error("%s: the frame grabber has stopped or hangs; the systemd watchdog is no longer "
                              "pinged, so systemd restarts the service (outside systemd, restart edge run)",
                              source.describe())
                now = time.monotonic()
                if now >= next_sink_stats:
                    stats.set_sinks(sinks.stats())
                    stats.set_source(getattr(source, "read_failures", 0), getattr(source, "reopens", 0),
                                     getattr(source, "frame_size", None))
                    next_sink_stats = now + SINK_STATS_EVERY_S
                if st.enabled and server is None and now >= next_listen:
                    server, next_listen = _start_status_server(stats, st, again=True), now + LISTEN_RETRY_S
                if now >= next_state:  # live values for Home Assistant's sensors, camera down or not
                    next_state = now + STATE_EVERY_S
                    sinks.update(stats.snapshot())
                if frame is None:
                    camera.idle()
                    if should_stop():
                        break
                    continue
                if camera.frame():
                    pipeline.outage_ended(frame.t_s, say=camera.outages.said)
                result = pipeline.process(frame)
                frames += 1
                people.update(pipeline.tracker, result.tracks, result.refound)
                if result.transition:
                    alerts += result.transition == "raised"
                    event = make_event(result.transition, result, device)
                    sinks.send(event)  # the log sink, always on, writes the alert's log line
                if now >= next_stage_ms:
                    stage_ms, next_stage_ms = pipeline.timer.medians_ms(), now + STAGE_MS_EVERY_S
                stats.update(result, source.dropped, stage_ms)
                if opts.preview:  # debugging only (off by default: privacy)
                    # at the source's rate (a camera's asked for), each frame held until the next, so it
                    # plays at the speed it was seen
                    writer = writer or AnnotatedVideo(opts.preview, getattr(source, "fps", 15.0), classifier.labels,
                                                      s.roi)
                    writer.add(frame.image, result, frame.t_s)
                if on_result:
                    on_result(frame, result)
                if should_stop():
                    break
    finally:
        notify("STOPPING=1")
        try:
            _close_each(sinks.close, server.stop if server else None, history.close,
                        writer.close if writer is not None else None)
        finally:
            # Given back only now: a second Ctrl-C while the sinks spool what is queued (2 s at
            # most) would end that with a traceback, and a command sink's child would outlive us.
            stop.restore()
    elapsed, cpu_s = time.monotonic() - started, time.process_time() - cpu_started
    summary = {"frames": frames, "tracks": people.count, "alerts_raised": alerts, "seconds": round(elapsed, 2),
               "fps": round(frames / elapsed, 2) if elapsed > 0 else 0.0, "dropped_frames": source.dropped,
               "cpu_s": round(cpu_s, 2), "cpu_share_of_core": round(cpu_s / elapsed, 2) if elapsed > 0 else None,
               "stage_ms": {k: round(v, 2) for k, v in pipeline.timer.medians_ms().items()}, "runtime": classifier.runtime.describe(),
               "alert_state": pipeline.policy.state, "sinks": sinks.stats(),
               "stopped_by_signal": stop.event.is_set()}  # SIGINT/SIGTERM: the source was not played to its end
    log.info("stopped after %s: %s", plural(frames, "frame"), summary)
    return summary

