"""Strict configuration: TOML -> dataclasses. Unknown keys and bad values are rejected
with the key path, the value (a token's or password's hidden) and what is allowed. CLI flags
override file values."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from edge.card import INT8_MODEL, refuse_failed_conversion, repair_advice
from edge.errors import HOST_NAME, ConfigError, UserError, check_url  # noqa: F401  (ConfigError: callers import it from here)
from edge.errors import check as _check
from edge.errors import check_range as _range
from edge.labels import LABELS
from edge.paths import FILE_KEY, check_readable, expand_path, from_folder, items, not_a_file, unset_vars, visible
from edge.redact import CONTROL, redact_text, redact_url
from edge.pipeline.detectors import DetectorConfig
from edge.pipeline.sources import IMAGE_SUFFIXES, ROTATIONS, names_camera_device, video_device_index
from edge.sinks import SINKS

log = logging.getLogger(__name__)

MAX_THREADS = 64  # a Pi has 4 cores; far more threads than cores only slows inference (or crashes BLAS)
HOUR_S, DAY_S = 3600.0, 86400.0
MAX_CAMERA = 1023  # the highest camera index accepted (source.camera, edge doctor --camera)
# source.roi's w and h at least this: at 320x240, turned or not, the region still holds a face as
# wide as the detector's default min_face_px (a smaller one finds nothing)
MIN_ROI = math.ceil(100 * DetectorConfig.min_face_px / 240) / 100
# source.focus_m's fixed distances, metres: a queue is metres away, so under 10 cm is a slip (cm or
# mm for m), and 100 m (0.01 dioptres) is as good as infinity
FOCUS_M = (0.1, 100.0)
# A source named on the command line replaces the file's, whichever kind: --source stands for a
# camera in the file too (in the file itself, camera wins over path: sources.open_source).
ONE_SOURCE = {"source.camera": "source.path", "source.path": "source.camera"}


STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")  # network cameras whose URL is checked when the config loads


@dataclass
class SourceConfig:
    """Where frames come from: a camera, or a recording or stream (`path`)."""

    camera: int | None = None  # camera index (the Pi camera via picamera2, else a USB camera), e.g. `0`
    # video file, image folder, rtsp:// / http:// URL (a stream that gives nothing for 8 s on opening or
    # between frames counts as failed and is reopened with back-off), or a USB camera's device (a name that
    # survives replugging, e.g. /dev/v4l/by-id/usb-...-video-index0, is watched like `camera`, looked up
    # again at each reopen and waited for while unplugged); used when camera is unset
    path: str = field(default="", metadata=FILE_KEY)
    width: int = 640  # requested frame width in pixels (a camera or stream; a recording keeps its own)
    height: int = 480  # requested frame height in pixels (a camera or stream; a recording keeps its own)
    fps: float = 15.0  # requested camera rate; media rate for an image folder
    reopen_max_backoff_s: float = 30.0  # longest wait between attempts to reopen a camera or stream that stopped
    down_after_s: float = 5.0  # a live source silent this long is reported "camera down"
    # A recording (path) played at its own frame rate, as a camera delivers frames: frames a
    # slower monitor misses are dropped. Off: as fast as the machine goes. Cameras are live anyway.
    realtime: bool = False
    # A camera or stream that cannot be opened at the start is reported down and opened again
    # with back-off, as one lost later (the service sets it: at boot a camera may not be ready).
    # Off: one sentence and exit (a wrong camera named at a terminal).
    wait_for_camera: bool = False
    # The queue's part of the frame, [x, y, w, h] as fractions (0-1) of the frame; empty:
    # the whole frame. The detector looks only there, so its input pixels go to the faces.
    roi: list[float] = field(default_factory=list, metadata=items(4))
    # Degrees clockwise every frame is turned by before anything looks at it (0, 90, 180 or 270):
    # 180 for a camera mounted upside down, 90 or 270 on its side. roi is in the turned frame.
    rotate: int = 0
    # Focus of a Pi camera with a focus motor (Camera Module 3), whose lens picamera2 would leave
    # where its tuning file puts it: 0 = continuous autofocus; a distance in metres (0.1-100) = the
    # lens held focused there (LensPosition = 1 / focus_m dioptres), e.g. 2.5 for a queue 2-3 m away,
    # which a camera fixed above a till may prefer, as continuous autofocus can hunt while people walk
    # through. Pi cameras only: a fixed-focus lens (Camera Module v1, v2, HQ: focus it by turning the
    # lens) and USB cameras (their own autofocus, if any) ignore it. `edge doctor` says the focus in use.
    focus_m: float = 0.0
    # The mains frequency of the store's lights, 50 or 60 Hz: lights on it flicker at twice that, and
    # a Pi camera's short exposures then leave dark bands across faces; with it the camera keeps its
    # exposure to whole flicker periods. 0: not set (the camera's own choice). Pi cameras only.
    mains_hz: int = 0

    def validate(self, p):
        if self.camera is not None:
            _range(self.camera, 0, MAX_CAMERA, f"{p}.camera", "an integer")
        scheme = self.path.partition("://")[0].lower() if "://" in self.path else ""
        # OpenCV reads file:// as a stream: a recording that never ends, retried when it does
        _check(scheme != "file", f"{p}.path", self.path, "the file's own path, without file:// (e.g. /home/pi/queue.mp4)")
        if scheme in STREAM_SCHEMES:  # one that cannot be parsed would be retried for good by the service
            # one URL, parsed whole: redact_text would end it at a space typed into the password and print the rest
            check_url(self.path, f"{p}.path", (scheme,), redact_url(self.path))
        _range(self.width, 16, 8192, f"{p}.width", "an integer")
        _range(self.height, 16, 8192, f"{p}.height", "an integer")
        _range(self.fps, 0, 240, f"{p}.fps", lo_open=True)
        _range(self.reopen_max_backoff_s, 0, HOUR_S, f"{p}.reopen_max_backoff_s", lo_open=True)
        _range(self.down_after_s, 0, HOUR_S, f"{p}.down_after_s", lo_open=True)
        # shorter than the gap between two frames, every gap would read as the camera down and up again
        _check(self.down_after_s >= 2 / self.fps, f"{p}.down_after_s", self.down_after_s,
               f"at least two frame intervals at {p}.fps = {self.fps:g} ({2 / self.fps:.3g} s), e.g. "
               f"{max(5, math.ceil(2 / self.fps)):g}")
        _check(self.focus_m == 0 or FOCUS_M[0] <= self.focus_m <= FOCUS_M[1], f"{p}.focus_m", self.focus_m,
               f"0 (continuous autofocus) or a distance in metres from {FOCUS_M[0]:g} to {FOCUS_M[1]:g} to hold the "
               "focus at, e.g. 2.5")
        _check(self.mains_hz in (0, 50, 60), f"{p}.mains_hz", self.mains_hz,
               "0 (not set), 50 or 60, the mains frequency where the store is: 50 in Europe, Africa, Australia and most "
               "of Asia, 60 in North America; South America and Japan have both")
        _check(self.rotate in ROTATIONS, f"{p}.rotate", self.rotate,
               "0, 90, 180 or 270 (degrees clockwise; 180 for a camera mounted upside down)")
        r = self.roi
        _check(not r or (len(r) == 4 and min(r) >= 0 and r[2] > 0 and r[3] > 0 and r[0] + r[2] <= 1 + 1e-9
                         and r[1] + r[3] <= 1 + 1e-9), f"{p}.roi", r,
               "[x, y, w, h] as fractions of the frame (x + w <= 1, y + h <= 1, w and h > 0), e.g. [0, 0.2, 1, 0.6], "
               "or [] for the whole frame")
        _check(not r or min(r[2], r[3]) >= MIN_ROI, f"{p}.roi", r,
               f"[x, y, w, h] with w and h at least {MIN_ROI:g} (fractions of the frame: a smaller region cannot "
               "hold a face), e.g. [0, 0.2, 1, 0.6], or [] for the whole frame")


@dataclass
class ModelConfig:
    """The expression classifier: an int8 .tflite with its model.json card beside it."""

    path: str = field(default="", metadata=FILE_KEY)  # model_int8.tflite to use, or the folder `edge convert --out` wrote; empty: the shipped default model
    threads: int = 1  # interpreter threads (also used by the face detector)

    def validate(self, p):
        _range(self.threads, 1, MAX_THREADS, f"{p}.threads", "an integer")


@dataclass
class TrackingConfig:
    """Following each face from frame to frame."""

    iou_match: float = 0.3  # a detection continues a track when their boxes overlap this much
    max_gap_s: float = 3.0  # a track unseen this long has left (bridges short occlusions)
    # time constant of a track's smoothed probabilities, in seconds, whatever the camera fps and
    # classification rate: a prediction dt seconds after the last weighs 1 - exp(-dt / smooth_s)
    # (0.56 s: the old per-frame weight 0.3 at 5 fps)
    smooth_s: float = 0.56
    min_hits: int = 1  # detections before a track counts as a person (the mood has its own guard: min_seen_s)
    min_look_similarity: float = 0.5  # after a gap of >= 1 s a detection continues a track only if it looks this alike (0: off)
    # a person hidden longer than max_gap_s (reading their phone, someone passing in front) who
    # comes back within this many seconds where they were keeps their track and their own level
    # in the mood, if their first second back looks refind_similarity alike (off at or below max_gap_s, e.g. 0)
    refind_s: float = 20.0
    refind_similarity: float = 0.7  # how alike (looks' dot product); stricter than min_look_similarity: a wrong match hands a newcomer someone's level
    # in the window around a face being tracked, a detection this sure (below the detector's own
    # threshold) continues that face's track but never starts one (0: off)
    continue_score: float = 0.5

    def validate(self, p):
        _check(0 < self.iou_match < 1, f"{p}.iou_match", self.iou_match, "a number between 0 and 1")
        _range(self.max_gap_s, 0, HOUR_S, f"{p}.max_gap_s", lo_open=True)
        _range(self.smooth_s, 0, HOUR_S, f"{p}.smooth_s")
        _range(self.min_hits, 1, 10_000, f"{p}.min_hits", "an integer")
        _check(0 <= self.min_look_similarity < 1, f"{p}.min_look_similarity", self.min_look_similarity,
               "a number in [0, 1)")
        _range(self.refind_s, 0, HOUR_S, f"{p}.refind_s")
        _check(0 < self.refind_similarity < 1, f"{p}.refind_similarity", self.refind_similarity,
               "a number between 0 and 1")
        _check(0 <= self.continue_score < 1, f"{p}.continue_score", self.continue_score, "a number in [0, 1)")


SCORES = ("change", "expected", "votes")  # how the mood scores a face as unhappy (edge/pipeline/mood.py)


@dataclass
class ScheduleConfig:
    """The compute budget (edge.pipeline.schedule)."""

    classify_hz: float = 2.0  # classifications per track per second; 0 = every face in every frame
    classify_max_per_frame: int = 2  # faces classified in one frame at most (new tracks first); 0 = no cap
    detect_hz: float = 5.0  # face detector runs per second at most (15 fps: every 3rd frame); 0 = every frame
    scan_hz: float = 1.0  # full passes a second (all tiles), for newcomers; between, only around known faces; 0 = always full
    scan_still_s: float = 4.0  # a pass skips a tile in which nothing moved since it was last looked at, for up to this long; 0 = never skip
    # between scans, the window around a still face (its detections moved under 0.5 face widths
    # a second, and under a fifth of its window changed since) is looked at this often at most,
    # its box carried meanwhile; a moving face is looked for at detect_hz (0 = every face at detect_hz)
    detect_still_hz: float = 1.5
    # a model whose card asks for flip averaging: each classification of a face sees the face or
    # its mirror image in turn, and the track's smoothing averages them (half the classifier
    # work); false: both in every classification
    flip_in_turn: bool = True
    # with flip_in_turn: while the queue's negative share is at least this (the alert's clear
    # share), or an alert is raised, each classification sees both images again, so a queue that
    # may be turning is judged as closely as without taking turns and a calm one costs half (1 =
    # in turn always, whatever the share and the alert; that alerted a few turns fewer and
    # cleared later in the scenario benchmark)
    flip_both_share: float = 0.15
    # when both images are due (flip_in_turn off, or the share at flip_both_share): the mirror
    # image is classified only for a face whose own image's top class is less sure than this
    # (1 = every face; 0.8 skips it for about 40% of them)
    flip_below: float = 1.0

    @classmethod
    def every_frame(cls) -> "ScheduleConfig":
        """The schedule off: the detector and the classifier on every face of every frame."""
        return cls(classify_hz=0.0, classify_max_per_frame=0, detect_hz=0.0, scan_hz=0.0, scan_still_s=0.0,
                   detect_still_hz=0.0, flip_in_turn=False, flip_below=1.0)

    def validate(self, p):
        _check(self.classify_hz >= 0, f"{p}.classify_hz", self.classify_hz, "a number >= 0 (0 = every frame)")
        _check(self.classify_max_per_frame >= 0, f"{p}.classify_max_per_frame", self.classify_max_per_frame,
               "an integer >= 0 (0 = no cap)")
        _check(self.detect_hz >= 0, f"{p}.detect_hz", self.detect_hz, "a number >= 0 (0 = every frame)")
        _check(self.scan_hz >= 0, f"{p}.scan_hz", self.scan_hz, "a number >= 0 (0 = every detector frame)")
        _check(self.scan_still_s >= 0, f"{p}.scan_still_s", self.scan_still_s, "a number of seconds >= 0 (0 = never skip)")
        _check(self.detect_still_hz >= 0, f"{p}.detect_still_hz", self.detect_still_hz,
               "a number >= 0 (0 = still faces at detect_hz)")
        _check(0 <= self.flip_both_share <= 1, f"{p}.flip_both_share", self.flip_both_share,
               "a share in [0, 1] (1 = in turn whatever the share)")
        _check(0 < self.flip_below <= 1, f"{p}.flip_below", self.flip_below,
               "a probability in (0, 1] (1 = the mirror image for every face)")


@dataclass
class MoodConfig:
    """The queue's mood: each tracked face's latest score over a sliding window."""

    window_s: float = 3.0  # a face stays in the mood this long after it was last seen
    negative: list[str] = field(default_factory=lambda: ["angry", "disgust", "fear", "sad"])  # expressions that count as unhappy
    min_confidence: float = 0.4  # score "votes": a face counts as negative only when its smoothed top class is this sure
    score: str = "change"  # "change" (rise above the person's own level), "expected" (probability of a negative class), "votes" (top class)
    min_seen_s: float = 3.0  # a track joins the mood after it has been followed this long ...
    min_seen_share: float = 0.7  # ... and detected in at least this share of the frames since it began
    unhappy_above: float = 1.0  # score "change": a face this likely negative counts as unhappy whatever its own level
    # > 0: the queue's mean negative probability this far above this camera's usual level
    # counts as a fully unhappy queue (people who arrive unhappy); 0: off. Measured (README,
    # Alerts): 1.2 alerts about 40% of arrivals at 0.1-1.1 false alarms per 8 h, 1.5 about 10%
    baseline_rise: float = 0.0
    # baseline_rise: the usual level is a running mean over about this much calm queue time
    # (not while an alert is raised)
    baseline_s: float = 600.0

    def validate(self, p):
        _range(self.window_s, 0, HOUR_S, f"{p}.window_s", lo_open=True)
        _check(self.score in SCORES, f"{p}.score", self.score, ", ".join(SCORES))
        _range(self.min_seen_s, 0, HOUR_S, f"{p}.min_seen_s")
        _check(0 <= self.min_seen_share <= 1, f"{p}.min_seen_share", self.min_seen_share, "a number in [0, 1]")
        _check(0 < self.unhappy_above <= 1, f"{p}.unhappy_above", self.unhappy_above, "a number in (0, 1]")
        _check(self.baseline_rise >= 0, f"{p}.baseline_rise", self.baseline_rise, "a number >= 0 (0: no baseline)")
        _check(self.baseline_s > 0, f"{p}.baseline_s", self.baseline_s, "a number > 0")
        bad = [n for n in self.negative if n not in LABELS]
        _check(not bad and self.negative, f"{p}.negative", self.negative, f"a non-empty list of {', '.join(LABELS)}")
        _check(0 <= self.min_confidence < 1, f"{p}.min_confidence", self.min_confidence, "a number in [0, 1)")


@dataclass
class AlertConfig:
    """When the queue's mood raises an alert, and when it clears."""

    raise_share: float = 0.3  # negative share that starts the raise timer (chosen by benchmarks/scenarios.py)
    clear_share: float = 0.15  # share below which the clear timer runs (hysteresis); a share of 0 always does
    raise_after_s: float = 8.0  # the share must stay at or above raise_share this long to raise
    clear_after_s: float = 3.0  # the share must stay below clear_share this long to clear
    min_faces: int = 2  # no alert with fewer faces in the window (one frown is not a queue)
    cooldown_s: float = 120.0  # after a clear, no new alert for this long

    def validate(self, p):
        _check(0 < self.raise_share <= 1, f"{p}.raise_share", self.raise_share, "a number in (0, 1]")
        _check(0 <= self.clear_share < self.raise_share, f"{p}.clear_share", self.clear_share,
               f"a number in [0, raise_share={self.raise_share})")
        _range(self.raise_after_s, 0, DAY_S, f"{p}.raise_after_s")
        _range(self.clear_after_s, 0, DAY_S, f"{p}.clear_after_s")
        _range(self.min_faces, 1, 10_000, f"{p}.min_faces", "an integer")
        _range(self.cooldown_s, 0, DAY_S, f"{p}.cooldown_s")


@dataclass
class SinksConfig:
    """Where alerts go, besides the log (always on)."""

    # [sinks]: spool_dir, plus one optional [sinks.<key>] table per sink in the registry (each
    # sink module declares its table's dataclass). The class with those tables is made when a
    # config is made, so a sink registered after this import still gets its table.

    spool_dir: str = field(default="", metadata=FILE_KEY)  # undelivered webhook/MQTT events; empty: ~/.local/state/queue-mood/spool

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls.table_class() if cls is SinksConfig else cls)

    @classmethod
    def table_class(cls, data: dict | None = None, path: str = "") -> type:
        return _sinks_class(tuple((key, s.Config) for key, s in SINKS.items() if s.Config is not None))

    def validate(self, p):
        if self.spool_dir:
            _check(not visible(expand_path(self.spool_dir), Path.is_file), f"{p}.spool_dir", self.spool_dir,
                   "a folder (or a path where one can be made), not a file")


@functools.lru_cache(maxsize=8)
def _sinks_class(sections: tuple) -> type:
    cls = dataclasses.make_dataclass("SinksConfig", [(key, c | None, field(default=None)) for key, c in sections],
                                     bases=(SinksConfig,))
    cls.__module__ = __name__
    return cls


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


@dataclass
class StatusConfig:
    """The local status endpoint: the manager's page, /status (JSON) and /metrics (Prometheus)."""

    enabled: bool = True  # serve the status endpoint
    host: str = "127.0.0.1"  # beyond loopback (e.g. "0.0.0.0") only with a token, password or metrics_token
    port: int = 8765  # TCP port (0: any free port)
    token: str = ""  # the page's link carries it once as ?token=...; a script may send it as a bearer token
    # A bearer token that opens /metrics only: head office's scrape, one for the fleet. The people's
    # token stays this Pi's own, so a manager's link (or a lost phone) opens one page, not the fleet.
    metrics_token: str = ""
    user: str = "manager"  # basic-auth user name, used with `password`
    password: str = ""  # basic-auth password; empty: no basic auth
    # Under a raised alert, the page tells the staff what to do: the store's own instruction.
    alert_advice: str = "Open another checkout or send someone to help the queue."
    history_db: str = field(default="", metadata=FILE_KEY)  # SQLite file that keeps the page's last hour across restarts; empty: memory only
    idle_timeout_s: float = 10.0  # a connection is closed this long after it opened (a silent or trickling client)
    max_clients: int = 16  # handler threads at most, one host on the network half of them (at least 4); more clients at once get 503
    # Without a token or password, only requests addressed to an IP address, localhost or this Pi's host
    # name (with or without .local) are answered, so a web page cannot reach the page through a DNS name
    # pointed at the Pi (DNS rebinding); list here any other name the page is opened by, e.g. `["queue-pi.lan"]`
    allowed_hosts: list[str] = field(default_factory=list)

    def validate(self, p):
        _check(0 <= self.port < 65536, f"{p}.port", self.port, "a TCP port (0 = any free port)")
        _check(is_loopback(self.host) or bool(self.token or self.password or self.metrics_token), f"{p}.host",
               self.host, f"127.0.0.1, ::1 or localhost; any other address needs {p}.token, {p}.password or "
               f"{p}.metrics_token set too, so the store network cannot read it without them")
        for key in ("token", "metrics_token"):
            value = getattr(self, key)
            _check(not value or (len(value) >= 16 and re.fullmatch(r"[A-Za-z0-9._~-]+", value)), f"{p}.{key}",
                   value, "at least 16 letters, digits or -._~ (it travels in a link, a cookie or a header), "
                   "e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'", "(hidden)")
        _check(not self.token or self.token != self.metrics_token, f"{p}.metrics_token", self.metrics_token,
               f"a token of its own, not {p}.token: head office's, the same on every Pi, would open every page",
               "(hidden)")
        _check(not self.password or len(self.password) >= 8, f"{p}.password", self.password, "at least 8 characters",
               "(hidden)")
        _check(len(self.alert_advice) <= 200, f"{p}.alert_advice", self.alert_advice[:40] + "…",
               "one sentence of at most 200 characters")
        _check(0 < self.idle_timeout_s < 3600, f"{p}.idle_timeout_s", self.idle_timeout_s, "seconds in (0, 3600)")
        _check(1 <= self.max_clients <= 256, f"{p}.max_clients", self.max_clients, "an integer 1-256")
        _check(all(HOST_NAME.fullmatch(h) for h in self.allowed_hosts), f"{p}.allowed_hosts", self.allowed_hosts,
               "a list of host names as the browser's address bar shows them, without scheme, port or path, "
               "e.g. [\"queue-pi.lan\"]")
        if self.history_db:
            _check(not visible(db := expand_path(self.history_db), Path.is_dir), f"{p}.history_db", self.history_db,
                   f"a file, not a folder (e.g. {db / 'history.sqlite'})")


@dataclass
class Config:
    device_name: str = ""  # names this Pi in events (no control characters); empty: the host name
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig.table_class({}, "detector")())
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mood: MoodConfig = field(default_factory=MoodConfig)
    alert: AlertConfig = field(default_factory=AlertConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    status: StatusConfig = field(default_factory=StatusConfig)

    def validate(self, p):
        # The name goes into journal lines (a line break would split one, an escape sequence reach
        # the terminal), MQTT client ids and Home Assistant's device name: refused here, once.
        _check(not CONTROL.search(self.device_name), "device_name", self.device_name,
               "a name without control characters (line breaks, tabs, escapes), e.g. \"Kasse 1\"")
        # A detector slower than the tracks last would end every track between its runs: no one
        # would ever count (found in a review: detect_hz 0.3 with max_gap_s 3).
        hz = self.schedule.detect_hz
        _check(hz == 0 or 1 / hz < self.tracking.max_gap_s, "schedule.detect_hz", hz,
               f"a rate above 1 / tracking.max_gap_s = {1 / self.tracking.max_gap_s:.2g} per second (tracks unseen for "
               f"{self.tracking.max_gap_s:g} s end), or 0 for every frame, e.g. 5")


def camera_index(src: SourceConfig) -> int | None:
    """The camera edge run watches, as open_source takes it: [source] camera, else N of the
    /dev/videoN device that path names (a USB camera by a name that survives replugging); None for
    a recording, a stream or no source."""
    if src.camera is not None:
        return src.camera
    return video_device_index(src.path) if src.path and "://" not in src.path else None


def source_kind(src: SourceConfig) -> str:
    """What the source is, as open_source takes it: "camera" (camera, or a camera's device as path,
    plugged in or not), "stream" (a URL), "recording" (a video file or image folder), or "" (none given)."""
    if src.camera is not None or (src.path and names_camera_device(src.path)):
        return "camera"
    return ("stream" if "://" in src.path else "recording") if src.path else ""


SOURCE_KINDS = {"camera": "a camera", "stream": "a stream (a URL as path)",
                "recording": "a recording (a video file or image folder as path)"}


@dataclass(frozen=True)
class Mode:
    """The settings under which a key is read: `reads` and `now` end "is read only {reads}, but {now}"."""

    reads: str
    applies: typing.Callable[[Config], bool]
    now: typing.Callable[[Config], str]


def _source_mode(reads: str, *kinds: str) -> Mode:
    # no source in the file: the command line gives it (edge run --camera), so nothing can be told yet
    return Mode(reads, lambda c: source_kind(c.source) in (*kinds, ""),
                lambda c: f"the source is {SOURCE_KINDS[source_kind(c.source)]}")


def _score_mode(score: str) -> Mode:
    return Mode(f'with mood.score = "{score}"', lambda c: c.mood.score == score,
                lambda c: f'mood.score is "{c.mood.score}"')


# Keys read in one mode only (each one's help says which), with that mode: set to another value
# than the default in a config whose mode is another, the key does nothing, which no one setting
# it would guess. Not refused (the store's file stays valid when its mode is switched): named in
# one warning by `edge config`, `edge run`, `edge doctor`, `edge analyze` and `edge bundle` (unread_keys).
def _fps_read(c: Config) -> bool:
    # a video file keeps its own rate, and one image is one frame; an image folder, a camera and a
    # stream read [source] fps. Only the file tells a recording's kinds apart: a path not found
    # here (only on the Pi) is not judged.
    return source_kind(c.source) != "recording" or not visible(expand_path(c.source.path), Path.is_file)


def _fps_file(c: Config) -> str:
    one_image = Path(c.source.path).suffix.lower() in IMAGE_SUFFIXES
    return f"{c.source.path} is " + ("one image, a single frame" if one_image else
                                     "a video file, which keeps its own frame rate")


MODE_KEYS = {
    "source.fps": Mode("for a camera, a stream or an image folder", _fps_read, _fps_file),
    "source.width": _source_mode("for a camera or a stream", "camera", "stream"),
    "source.height": _source_mode("for a camera or a stream", "camera", "stream"),
    "source.realtime": _source_mode("for a recording (a video file or image folder as [source] path)", "recording"),
    "source.wait_for_camera": _source_mode("for a camera or a stream", "camera", "stream"),
    "source.reopen_max_backoff_s": _source_mode("for a camera or a stream", "camera", "stream"),
    "source.down_after_s": _source_mode("for a camera or a stream", "camera", "stream"),
    "source.focus_m": _source_mode("for a Pi camera ([source] camera)", "camera"),
    "source.mains_hz": _source_mode("for a Pi camera ([source] camera)", "camera"),
    "detector.min_score": Mode('with detector.kind "blazeface" or "yunet"', lambda c: c.detector.kind != "haar",
                               lambda c: f'detector.kind is "{c.detector.kind}", which gives no score'),
    "tracking.refind_similarity": Mode("with tracking.refind_s above tracking.max_gap_s",
                                       lambda c: c.tracking.refind_s > c.tracking.max_gap_s,
                                       lambda c: f"tracking.refind_s is {c.tracking.refind_s:g} and max_gap_s "
                                                 f"{c.tracking.max_gap_s:g}"),
    "schedule.flip_both_share": Mode("with schedule.flip_in_turn = true", lambda c: c.schedule.flip_in_turn,
                                     lambda c: "schedule.flip_in_turn is false"),
    "mood.min_confidence": _score_mode("votes"),
    "mood.unhappy_above": _score_mode("change"),
    "mood.baseline_s": Mode("with mood.baseline_rise above 0", lambda c: c.mood.baseline_rise > 0,
                            lambda c: "mood.baseline_rise is 0 (off)"),
    "status.user": Mode("with status.password set", lambda c: bool(c.status.password),
                        lambda c: "status.password is empty (no basic auth)"),
}


def _default(obj, name: str):
    f = next(f for f in dataclasses.fields(obj) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def unread_keys(cfg: Config, written: typing.Collection[str]) -> list[str]:
    """A sentence for each key in `written` (the dotted keys a file set) that MODE_KEYS says the
    config's mode does not read, where its value is not the default (a bundle writes every key)."""
    said = []
    for key, mode in MODE_KEYS.items():
        table, name = key.split(".")
        value = getattr(getattr(cfg, table), name)
        if key in written and value != _default(getattr(cfg, table), name) and not mode.applies(cfg):
            said.append(f"Config key '{key}' = {toml_value(value)} is read only {mode.reads}, but {mode.now(cfg)}: "
                        "it has no effect; remove the line (or change the mode)")
    return said


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list,):
        (inner,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


# A value's type as an error names it: "expected float" or "expected bool" was Python's word, not the file's.
EXPECTED = {int: "an integer", float: "a number", str: "a string in quotes", bool: "true or false", dict: "a table"}


def _describe(tp, n: int | None = None) -> str:
    if typing.get_origin(tp) is list:  # a list of the wrong items was "expected list"
        (inner,) = typing.get_args(tp)
        what = {int: "integers", float: "numbers", str: "strings"}.get(inner, f"{_describe(inner)} values")
        return f"a list of {f'{n} ' if n else ''}{what}"
    return EXPECTED.get(tp) or getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _unquoted(value, tp) -> str:
    """What to write for a number or true/false typed in quotes (`fps = "15"`), else ""."""
    if not isinstance(value, str) or tp not in (int, float, bool):
        return ""
    try:
        bare = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return ""
    return f" (without quotes: {value.strip()})" if _type_ok(bare, tp) else ""


SECRET_KEYS = {"token", "metrics_token", "password"}  # their values never appear in an error (the journal, a pasted report)
SECRET_TABLES = {"headers"}  # every value in these tables is a secret too (a webhook's Authorization)
# What a printed config holds in place of a secret (`edge config`, `edge run --print-config`): such
# output lands in support tickets and screen shares. Loading it back is refused, so a printed file
# reused as a config cannot quietly post to a wrong URL or log in with the placeholder.
HIDDEN_SECRET = "<hidden: --show-secrets prints it>"


def shown_value(where: str, value) -> str:
    """A bad value as an error shows it (the journal, a pasted report): "(hidden)" for a secret
    key's, and for one of the wrong shape that holds a secret as `edge config` finds them (an
    array of tables with a token, a URL with credentials in a list, argv written as one string)."""
    if where.rsplit(".", 1)[-1] in SECRET_KEYS | SECRET_TABLES:
        return "(hidden)"
    probe = value.split() if isinstance(value, str) else value
    if isinstance(probe, list):  # argv's secrets are told by the flag before them, whatever the value's type
        probe = [x if isinstance(x, (dict, list)) else str(x) for x in probe]
    return "(hidden)" if hide_secrets({where: probe})[1] else repr(value)


# Keys an older release read: what replaced them (named in the error, so an old config is easy to
# fix), and the old default. `edge bundle` writes every setting with its value, so a Pi installed
# from an older bundle has the key at that default, which the replacement's default carries on:
# there it is ignored with a warning, so the upgraded service starts; any other value is refused.
RENAMED = {"tracking.ema_alpha": ("tracking.smooth_s, the smoothing's time constant in seconds (0.56 is what "
                                  "ema_alpha = 0.3 gave at 5 fps)", 0.3),
           "schedule.detect_every": ("schedule.detect_hz, detector runs per second (5 is what detect_every = 3 "
                                     "gave at 15 fps)", 3)}


# An argument that names a secret (`--password x`, `--api-key=x`, `TOKEN=x` for `env`): a command
# sink's argv carries them as plain strings, so they are told by the flag's name, not the key's.
_SECRET_FLAG = re.compile(r"(?i)^(-{0,2}[\w.-]*?(?:pass(?:word|wd)?|pwd|token|secret|api[-_]?key|auth(?:orization)?|credentials?))"
                          r"(=.*)?$")


def _hide_argv_secrets(argv: list[str], found) -> list[str]:
    """argv with the value of each argument that names a secret replaced by HIDDEN_SECRET."""
    out, after_flag = [], False
    for arg in argv:
        m = _SECRET_FLAG.match(arg)
        if after_flag and not arg.startswith("-"):
            out.append(HIDDEN_SECRET)
            found()
        elif m and m.group(2):
            out.append(f"{m.group(1)}={HIDDEN_SECRET}")
            found()
        else:
            out.append(arg)
        after_flag = not after_flag and bool(m) and not m.group(2) and arg.startswith("-")
    return out


def hide_secrets(d: dict) -> tuple[dict, list[str]]:
    """`d` (from to_dict) with secrets replaced by HIDDEN_SECRET: tokens, passwords, header values,
    and any string holding a URL with credentials, a long path or a query (the redacted URL stays
    after the placeholder, so the reader still sees where it points); also the dotted keys hidden."""
    hidden: list[str] = []

    def hide(where: str, value, secret: bool):
        if isinstance(value, dict):
            return {k: hide(f"{where}.{k}", x, where.rsplit(".", 1)[-1] in SECRET_TABLES) for k, x in value.items()}
        if isinstance(value, list):
            if value and all(isinstance(x, str) for x in value):
                value = _hide_argv_secrets(value, lambda: hidden.append(where))
            return [hide(where, x, secret) for x in value]
        if not isinstance(value, str) or not value:
            return value
        if secret or where.rsplit(".", 1)[-1] in SECRET_KEYS:
            hidden.append(where)
            return HIDDEN_SECRET
        if (shown := redact_text(value)) != value:
            hidden.append(where)
            return f"{HIDDEN_SECRET} {shown}"
        return value

    out = {k: hide(k, v, False) for k, v in d.items()}
    return out, list(dict.fromkeys(hidden))


def placeholders(data, path: str = "") -> list[str]:
    """The dotted keys in a config as read that hold HIDDEN_SECRET (a printed config reused)."""
    if isinstance(data, dict):
        return [k for key, x in data.items() for k in placeholders(x, f"{path}.{key}" if path else key)]
    if isinstance(data, list):
        return [path] if any(placeholders(x, path) for x in data) else []
    return [path] if isinstance(data, str) and HIDDEN_SECRET in data else []


def _not_a_table(path: str, value) -> ConfigError:
    # [[x]] (an array of tables, a second webhook added the way a second table is) reads as a list
    fix = (f"write [{path}] with single brackets, once" if isinstance(value, list) and value
           and all(isinstance(x, dict) for x in value) else f"write [{path}] on a line of its own, its keys below it")
    return ConfigError(f"Config key '{path or '(top)'}' must be a table, got {shown_value(path, value)}; {fix}.")


def build(cls, data: dict, path: str = "", folder: Path | None = None, as_given: frozenset = frozenset()):
    """Instance of dataclass `cls` from a dict, rejecting unknown keys and wrong types. With
    `folder` (the config file's), relative paths in file keys are taken from there, except for
    the dotted keys in `as_given` (command-line values, relative to the current folder)."""
    if not isinstance(data, dict):
        raise _not_a_table(path, data)
    if hasattr(cls, "table_class"):  # a table whose keys depend on a plugin registry
        cls = cls.table_class(data, path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = set(fields)
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else key
            if where in RENAMED:
                use, old_default = RENAMED[where]
                if data[key] != old_default:
                    raise ConfigError(f"Config key '{where}' is no longer read; use {use}.")
                log.warning("Config key '%s' is no longer read: its value %r, an older release's default (an older "
                            "edge bundle wrote it), is ignored, as the default of its replacement does the same; remove "
                            "the line. The replacement: %s.", where, data[key], use)
                continue
            raise ConfigError(f"Unknown config key '{where}'; allowed here: {', '.join(sorted(known))}.")
    kwargs = {}
    for name in known & set(data):
        where = f"{path}.{name}" if path else name
        tp, value = hints[name], data[name]
        options = [a for a in typing.get_args(tp) if a is not type(None)] if isinstance(tp, types.UnionType) else [tp]
        target = options[0]
        if dataclasses.is_dataclass(target):
            kwargs[name] = build(target, value, where, folder, as_given)
        elif any(_type_ok(value, t) for t in options):
            if target is float and not math.isfinite(value):
                raise ConfigError(f"Config key '{where}' has the bad value {shown_value(where, value)}; "
                                  "expected a finite number.")
            if fields[name].metadata.get("file") and (unset := unset_vars(value)):
                raise ConfigError(f"Config key '{where}' uses the environment variable {unset[0]}, which is not set "
                                  f"here ({shown_value(where, value)}); set it where edge runs (for the service, an "
                                  "Environment= line in its unit) or write the path out.")
            if folder is not None and fields[name].metadata.get("file") and where not in as_given:
                value = from_folder(value, folder)
            kwargs[name] = float(value) if target is float else value
        else:
            raise ConfigError(f"Config key '{where}' has the bad value {shown_value(where, value)}; "
                              f"expected {_describe(target, fields[name].metadata.get('items'))}"
                              f"{_unquoted(value, target)}.")
    return cls(**kwargs)


def validate(obj, path: str = "") -> None:
    if hasattr(obj, "validate"):
        obj.validate(path or type(obj).__name__)
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            validate(v, f"{path}.{f.name}" if path else f.name)


def torn(text: str) -> str:
    """Why a config file's text is what a power cut leaves, not what a person wrote, as the middle of
    a sentence; "" if it is not. A power cut while the file is rewritten in place (as nano saves) can
    leave it empty, or NUL bytes where its data had not reached the SD card; an empty one would run
    on the defaults: the service would say only that no source is given, the doctor that it loads."""
    if not text:
        return "is empty (0 bytes)"
    at = text.find("\0")
    if at < 0:
        return ""
    line = text.count("\n", 0, at) + 1
    return f"holds NUL bytes from line {line}"


# Quotes a word processor, e-mail or chat app puts for typed ones (a token pasted from a message),
# opening a value: to TOML no quotes at all, while the line looks quoted to whoever reads it.
_CURLY_VALUE = re.compile(r"[=\[,{]\s*[\u201c\u201d\u201e\u2018\u2019\u00ab\u00bb]")


def _toml_fix(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """What to write, for the line a TOML error names: straight quotes for curly ones there, else
    the usual mistakes."""
    at = re.search(r"at line (\d+)", str(exc))
    lines = text.splitlines()
    if at and 0 < int(at.group(1)) <= len(lines) and _CURLY_VALUE.search(lines[int(at.group(1)) - 1]):
        return "its value is in typographic quotes, as a word processor or an e-mail puts them: retype them as the " \
               "keyboard's straight double quotes"
    return "text goes in double quotes, true and false in lower case, a list in [ ], each [table] and each key once"


def load_config(path: str | Path | None, overrides: dict | None = None, paths_from: Path | None = None,
                unread: list | None = None) -> Config:
    """Config from a TOML file (or defaults), with dotted-key overrides from the CLI. Relative
    paths in the file are taken from its folder (or `paths_from`); those in overrides from the
    current folder. `unread`: a list to get unread_keys' sentences for the file's keys (the
    commands that check or run a config ask; the others load it quietly, some several times)."""
    data: dict = {}
    folder = None
    if path:
        p = Path(path)
        if why := not_a_file(p):
            raise ConfigError(f"Config file {p} {why}; pass --config PATH to a TOML file.")
        try:
            # a byte-order mark (Windows Notepad's UTF-8) is no TOML, but says nothing against the file
            text = p.read_text(encoding="utf-8").removeprefix("\ufeff")
            if why := torn(text):
                raise ConfigError(f"Config file {p} {why}, as a power cut while it was being saved leaves it; restore "
                                  "it from a copy (to run on the built-in defaults, leave out --config).")
            data = tomllib.loads(text)
        except UnicodeDecodeError as exc:  # the line, as nano shows them (Windows-1252's ä, a UTF-16 file)
            line = exc.object[:exc.start].count(b"\n") + 1
            raise ConfigError(f"Config file {p} is not UTF-8 text (bad byte on line {line}); "
                              "save it as UTF-8.") from exc
        except tomllib.TOMLDecodeError as exc:
            # tomllib's "Invalid value" says neither what a hand-edited line most often lacks
            raise ConfigError(f"Config file {p} is not valid TOML: {exc}; fix that line ({_toml_fix(text, exc)}).") \
                from exc
        except OSError as exc:
            raise ConfigError(f"Config file {p} cannot be read ({exc.strerror}); run as a user allowed to read it "
                              "(the service user, or sudo).") from exc
        folder = Path(paths_from) if paths_from is not None else p.absolute().parent
        if hidden := placeholders(data):
            raise ConfigError(f"Config file {p} holds the placeholder that `edge config` and `edge run --print-config` "
                              f"print in place of a secret, at {', '.join(hidden)}; put the real values back (those "
                              "commands print them with --show-secrets).")
    written = set(_dotted(data)) - set(overrides or ())
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for i, key in enumerate(parents):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):  # `source = 5` in the file, and a --source flag
                raise _not_a_table(".".join(parents[:i + 1]), node)
        node[leaf] = value
        if (other := ONE_SOURCE.get(dotted)) and other not in overrides:
            node.pop(other.rsplit(".", 1)[1], None)
    cfg = build(Config, data, folder=folder, as_given=frozenset(overrides or ()))
    validate(cfg)
    if said := both_sources(cfg.source):
        log.warning("%s.", said)
    if unread is not None:
        unread.extend(unread_keys(cfg, written))
    return cfg


def _dotted(data: dict, path: str = ""):
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        yield from _dotted(value, where) if isinstance(value, dict) else (where,)


def both_sources(src: SourceConfig) -> str:
    """What to say when the config names a camera and a path: the camera is watched and the path
    ignored, which a store that filled in `path` beside a bundle's `camera = 0` would never guess."""
    if src.camera is None or not src.path:
        return ""
    return (f"[source] camera = {src.camera} and path = {redact_text(src.path)!r} are both set: camera {src.camera} is "
            "watched and path ignored; delete the camera line to watch the path (or empty path to silence this)")


def to_dict(cfg: Config) -> dict:
    """The effective config without unset sinks (what --print-config shows)."""

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        return v

    return clean(dataclasses.asdict(cfg))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(s: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but an astral character must stay itself
    (not a surrogate pair) and DEL must be escaped."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(k: str) -> str:
    """A key as written: bare where TOML allows, else quoted (a header name such as X.Api-Key)."""
    return k if _BARE_KEY.fullmatch(k) else toml_string(k)


def toml_value(v) -> str:
    """A value as written; an inline table's keys always quoted, as the docs show them."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)


def to_toml(d: dict, prefix: str = "") -> str:
    """A small TOML writer for the effective config (tomllib only reads); `prefix`: the table's
    name as written."""
    scalars, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            scalars.append(f"{toml_key(k)} = {toml_value(v)}")
    out = []
    if scalars:
        if prefix:
            out.append(f"[{prefix}]")
        out.extend(scalars)
        out.append("")
    for k, v in tables:
        out.append(to_toml(v, f"{prefix}.{toml_key(k)}" if prefix else toml_key(k)))
    return "\n".join(out)


def resolve_model(cfg: Config) -> Path:
    """The classifier model a config names: model.path, or the model shipped in the package."""
    from edge.models import default_model_path

    if not cfg.model.path:
        return default_model_path()
    return model_file(cfg.model.path)


def model_file(given: str | Path, advice: str = "pass a .tflite model made by `edge convert`") -> Path:
    """The .tflite a --model or model.path names: a file, or the folder `edge convert --out` wrote."""
    path = expand_path(given)
    if visible(path, Path.is_dir):
        inside = [path / n for n in (INT8_MODEL, "model.keras") if (path / n).is_file()]
        if not inside:
            refuse_failed_conversion(path, "Model folder")
            raise UserError(f"Model folder {path} holds no {INT8_MODEL}; {repair_advice(path / INT8_MODEL, advice)}.")
        path = inside[0]  # a training run's folder gives its model.keras, said below to need converting
    if why := not_a_file(path):  # before the classifier, which calls a folder missing
        raise UserError(f"Model file {path} {why}; {repair_advice(path, advice)}.")
    if path.suffix == ".keras":  # else the TFLite runtime calls it "not a valid TFLite model"
        raise UserError(f"{path} is a Keras model; convert it for the Pi first with `edge convert {path} --data "
                        "DATASET --out DIR`, then pass --model DIR.")
    check_readable(path, "Model file")  # before its card's sha256 check reads it
    return path
