"""The camera: the Pi cameras listed and the configured one (or stream) watched for a moment, each in
a child process with a timeout (a stuck driver or a silent host cannot hang the doctor), and what
aiming it needs."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge.errors import UserError
from edge.files import no_core_dumps
from edge.ops.doctor.context import FAIL, OK, WARN, _Context
from edge.ops.doctor.service import SERVICE, service_active
from edge.paths import expand_path
from edge.redact import redact_text, redact_url
from edge.words import plural


def _child(code: str, timeout_s: float, *args: str, stdin: str | None = None) -> tuple[dict | None, str]:
    """Run a Python snippet in a child process; (its JSON answer, '' or why there is none).
    stdin: text for the child's standard input (a secret: argv is shown to every user by ps)."""
    no_core_dumps()  # inherited by the child: the camera probe holds a frame, which a crash must not write to /tmp
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, input=stdin,
                              timeout=timeout_s, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout_s:g} s"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return None, redact_text(err)  # a traceback's last line may quote a stream URL
    return json.loads(lines[-1]), ""


_PICAMERA_LIST = """
import json
try:
    from picamera2 import Picamera2
except ImportError as exc:
    print(json.dumps({"installed": False, "error": str(exc)}))
else:
    print(json.dumps({"installed": True, "cameras": Picamera2.global_camera_info()}, default=str))
"""

# The monitor's own source (the Pi camera or OpenCV, turned by source.rotate) watched for a
# moment; only numbers come back (probe_camera), the frames stay in the child's memory. No camera
# index: the stream URL is read from stdin, as its password must not be in argv.
_CAMERA_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from edge.config import load_config
from edge.ops.doctor.camera import probe_camera
index = int(sys.argv[3]) if sys.argv[3] else None
url = sys.stdin.read() if index is None else ""
print(json.dumps(probe_camera(load_config(sys.argv[2] or None, {}), index, path=url)))
"""
PROBE_S = 2.0  # how long the camera is watched: enough frames to measure its rate
DARK_MEAN, BRIGHT_MEAN, WHITE_SHARE = 60, 190, 0.2  # mean grey level (0-255); share of clipped pixels


def probe_camera(cfg, index: int | None, seconds: float = PROBE_S, path: str = "") -> dict:
    """What camera `index` (None: the stream URL `path`, opened as edge run opens it) gives the
    monitor: its frame size, the frames a second it delivers,
    the light of the last frame, the width of each face the configured detector finds in it
    now, and the focus and flicker avoidance in use (a Pi camera that has them; else None). Only these numbers
    are returned; no frame is kept, written or sent."""
    from edge.pipeline.detectors.regions import configured_detector
    from edge.pipeline.preprocess import to_gray
    from edge.pipeline.sources import open_source

    s = cfg.source
    try:
        source = open_source(index, path, s.width, s.height, s.fps, rotate=s.rotate, focus_m=s.focus_m,
                             mains_hz=s.mains_hz)
        with source:
            times, last, end = [], None, time.monotonic() + seconds
            for frame in source.poll(0.25):
                if frame is not None:
                    times.append(frame.t_s)
                    last = frame
                if time.monotonic() >= end:
                    break
    except UserError as exc:
        return {"error": str(exc)}
    if last is None:
        return {"error": f"{source.describe()} opened but gave no frame in {seconds:g} s"}
    image = last.image
    gray = to_gray(image)
    faces = sorted(round(d.box.w) for d in configured_detector(cfg).detect(image))
    span = times[-1] - times[0]
    return {"source": source.describe(), "size": list(getattr(source, "frame_size", None) or image.shape[1::-1]),
            "fps": round((len(times) - 1) / span, 2) if span > 0 else 0.0, "mean": round(float(gray.mean()), 1),
            "white": round(float((gray >= 250).mean()), 3), "faces": faces, "focus": getattr(source, "focus", None),
            "flicker": getattr(source, "flicker", None),
            "stream": index is None}


def camera_verdicts(got: dict, cfg) -> list[tuple[str, str, str]]:
    """probe_camera's numbers -> the rows someone aiming the camera needs: what it delivers
    (against what the config asks for), the light, and the faces in view now."""
    s = cfg.source
    (w, h), fps = got["size"], got["fps"]
    line, issues = f"{got['source']}: {w}x{h} at {fps:g} fps measured over {PROBE_S:g} s", []
    stream = got.get("stream")  # a stream's size and rate are set in the camera, not asked by edge
    if (w, h) != (s.width, s.height):
        cost = f"each frame costs {w * h / (s.width * s.height):.2g}x the pixels"
        issues.append(f"not the {s.width}x{s.height} asked for ([source] width, height): " + (
            f"{cost}; set the size in the camera's own stream settings" if stream else
            f"it does not offer that size, and {cost}; set them to a size it offers"))
    if fps < 0.6 * s.fps:
        issues.append(f"not the {s.fps:g} fps asked for: " + (
            "check the frame rate in the camera's own stream settings; " if stream else "") +
            "in dim light a camera lengthens its exposure and slows down "
            "(the alert timings hold, in seconds, but moving faces blur); light the queue better")
    if s.focus_m > 0 and not got.get("focus"):
        issues.append(f"[source] focus_m = {s.focus_m:g} does nothing here: only a Pi camera with a focus motor "
                      "(Camera Module 3) takes it; set it to 0, and focus a fixed-focus lens by turning it")
    if s.mains_hz and not got.get("flicker"):
        issues.append(f"[source] mains_hz = {s.mains_hz} does nothing here: only a Pi camera with a libcamera that "
                      "avoids flicker (Raspberry Pi OS Bookworm or Trixie) takes it")
    rows = [("camera", WARN if issues else OK, "; ".join([line, *issues]))]
    light = f"mean brightness {got['mean']:.0f} of 255, {got['white']:.0%} of the picture white"
    if got["mean"] < DARK_MEAN:
        rows.append(("camera light", WARN, f"{light}: too dark, faces are found less often; light the queue from the front"))
    elif got["mean"] > BRIGHT_MEAN or got["white"] > WHITE_SHARE:
        rows.append(("camera light", WARN, f"{light}: over-exposed; keep bright windows and lamps out of view "
                                           "(back light leaves faces dark)"))
    else:
        rows.append(("camera light", OK, light))
    rows.append(faces_verdict(got["faces"], max(w, h), bool(s.roi)))
    return rows


def faces_verdict(widths: list[int], frame_w: int, roi: bool) -> tuple[str, str, str]:
    """The faces the detector finds now, against the width to aim for (face_width.READ_PX per 640 px of frame)."""
    from edge.pipeline.face_width import read_px_at

    target = read_px_at(frame_w)
    where = " in the roi" if roi else ""
    if not widths:
        return ("faces now", OK, f"no face{where} now; with someone standing where the queue stands, run this again: "
                                 f"it gives each face's width (aim for {target:.0f} px or more)")
    found = f"{plural(len(widths), 'face')}{where}, {'-'.join(map(str, sorted({widths[0], widths[-1]})))} px wide"
    if widths[0] < target:
        return ("faces now", WARN, f"{found}: under the {target:.0f} px to aim for, faces are missed more often; move "
                                   "the camera closer or use a narrower lens or a roi (README: Placing the camera)")
    return ("faces now", OK, f"{found} (aim for {target:.0f} px or more)")


def check_recording(ctx: _Context, src) -> None:
    """A video file or image folder as [source] path, opened and its first frame read as edge run
    does: one OpenCV cannot decode, or a folder without images, stops edge run at once."""
    from edge.ops.doctor.budget import recording_frames

    try:
        there = expand_path(src.path).exists()
    except OSError as exc:  # under a folder this user may not enter
        ctx.add("camera", FAIL, f"the config reads {src.path}, which this user cannot reach "
                                f"({exc.strerror}); try sudo, or make it readable")
        return
    if not there:
        # a USB camera by its /dev/v4l/by-id name: the name is there only while the camera is plugged in
        device = " (a camera device: is the camera plugged in? ls /dev/v4l/by-id lists those that are)" \
            if src.path.startswith("/dev/") else ""
        ctx.add("camera", FAIL, f"the config reads {src.path}, which does not exist{device}")
        return
    try:
        w, h, _ = recording_frames(src)
    except (UserError, OSError) as exc:
        ctx.add("camera", FAIL, f"edge run would stop at once: {exc}")
        return
    ctx.add("camera", OK, f"skipped: the config reads the recording {src.path} (its first frame read, {w}x{h})")


def check_camera(ctx: _Context, cfg) -> None:
    from edge.config import both_sources, camera_index

    src = cfg.source
    index = ctx.s.camera
    if said := both_sources(src):
        ctx.add("source", WARN, said)
    if index is None:
        # as `edge run`: a camera in the config wins over its path, and a camera's device as path is that camera
        index = camera_index(src)
        if index is None and src.path:
            if "://" in src.path:
                _watch(ctx, cfg, None, src.path)
            else:
                check_recording(ctx, src)
            return
    if index is None:
        if not ctx.config_loaded:  # it may well name a camera: the built-in defaults' lack of one says nothing
            ctx.add("camera", WARN, "skipped: the config did not load (its FAIL above says why); fix that, or pass "
                                    "--camera N to check a camera")
        else:
            ctx.add("camera", WARN, "no camera or source path in the config ([source] camera = N); "
                                    "pass --camera N to check a camera")
        return
    timeout = ctx.s.camera_timeout_s
    pi, why = _child(_PICAMERA_LIST, timeout)
    cameras = []
    if pi is None:
        ctx.add("picamera2", WARN, f"listing Pi cameras failed: {why}")
    elif not pi.get("installed"):
        if ctx.on_pi:
            ctx.add("picamera2", WARN, "not installed; for the Pi camera: sudo apt install python3-picamera2 "
                                       "(the venv needs --system-site-packages)")
    else:
        cameras = pi.get("cameras") or []
        names = ", ".join(f"{i}: {c.get('Model', '?')}" for i, c in enumerate(cameras)) or "none"
        ctx.add("picamera2", OK if cameras or not ctx.on_pi else WARN, f"Pi cameras: {names}")
    if service_active():
        ctx.add("camera", OK, f"camera {index}: not opened, the running {SERVICE} service is using it")
        return
    _watch(ctx, cfg, index)


def _watch(ctx: _Context, cfg, index: int | None, url: str = "") -> None:
    """Camera `index`, or the stream `url`, watched in a child (probe_camera) given at most the
    doctor's camera_timeout_s; its rows, or one FAIL with edge run's sentence. The URL's password is
    said only redacted and goes to the child on stdin, never in its argv."""
    from edge.pipeline.sources import STREAM_HINT

    timeout = ctx.s.camera_timeout_s
    loaded = not any(c.name == "config" and c.status == FAIL for c in ctx.checks)
    root = str(Path(__file__).resolve().parents[3])  # where this edge package is imported from
    config = str(Path(ctx.s.config).absolute()) if ctx.s.config and loaded else ""  # the child runs in /tmp
    got, why = _child(_CAMERA_PROBE, timeout, root, config, "" if index is None else str(index),
                      stdin=url if index is None else None)
    if got is None or "error" in got:
        if index is not None:
            ctx.add("camera", FAIL, got["error"] if got else f"camera {index}: {why}")
            return
        said = got["error"] if got else f"Cannot open stream {redact_url(url)}: {why}; {STREAM_HINT}."
        if service_active():  # a camera that serves one viewer at a time refuses the doctor while edge runs
            said += f" The running {SERVICE} service is reading it too: its status shows whether it gets frames."
        ctx.add("camera", FAIL, said)
        return
    for row in camera_verdicts(got, cfg):
        ctx.add(*row)
