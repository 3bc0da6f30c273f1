"""`edge doctor`: is this machine ready to run the monitor? One line per check, OK/WARN/FAIL.

Checks the TFLite runtime, numpy/OpenCV (and that they work together), the camera (what it
delivers, its light, the faces in view and their width: what aiming it needs), the model
and its card (with a dummy inference), the face detector (on a blank frame), the CPU the
configured schedule needs here (compute budget), whether an NTP client has set the clock, the config, each
configured alert sink, free disk at the spool, (as root, for the installed config) whether the service's
user may read its config and model and write its spool and camera, the status page (warning when this machine's
network address answers it without a token or password), and on a Raspberry Pi the board, temperature,
throttling and CPU governor. Nothing is sent, no event is written to the spool (only a probe
file, removed at once, to see that the spool's disk takes writes), and a camera
probe runs in a child process with a timeout so a stuck driver cannot hang the doctor.
Exit code 1 when any check FAILs.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from edge.errors import UserError
from edge.files import no_core_dumps
from edge.ops.doctor.board import check_pi, check_platform
from edge.ops.doctor.budget import check_budget
from edge.ops.doctor.config import check_config
from edge.ops.doctor.context import FAIL, OK, WARN, Check, DoctorSettings, _Context
from edge.ops.doctor.libraries import check_numpy_opencv, check_runtime
from edge.ops.doctor.model import check_detector, check_model
from edge.ops.doctor.service import SERVICE, check_service_access, home_note, service_active, service_home
from edge.paths import expand_path, visible
from edge.redact import redact_url

FREE_FAIL_MB, FREE_WARN_MB = 50, 500


# -- pure verdicts (unit-tested) ----------------------------------------------------------


def sink_verdict(line: str) -> str:
    """A sink's check() line -> status: unreachable brokers/servers are WARN (events are spooled
    and sent later); a sink that cannot work at all is FAIL."""
    low = line.lower()
    if "not reachable" in low:
        return WARN
    if any(word in low for word in ("cannot", "not found", "check failed", "failed")):
        return FAIL
    return OK


# -- helpers ------------------------------------------------------------------------------


def _child(code: str, timeout_s: float, *args: str) -> tuple[dict | None, str]:
    """Run a Python snippet in a child process; (its JSON answer, '' or why there is none)."""
    no_core_dumps()  # inherited by the child: the camera probe holds a frame, which a crash must not write to /tmp
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              timeout=timeout_s, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout_s:g} s"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        err = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return None, err
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
# moment; only numbers come back (probe_camera), the frames stay in the child's memory.
_CAMERA_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from edge.config import load_config
from edge.ops.doctor import probe_camera
print(json.dumps(probe_camera(load_config(sys.argv[2] or None, {}), int(sys.argv[3]))))
"""
PROBE_S = 2.0  # how long the camera is watched: enough frames to measure its rate
DARK_MEAN, BRIGHT_MEAN, WHITE_SHARE = 60, 190, 0.2  # mean grey level (0-255); share of clipped pixels


def probe_camera(cfg, index: int, seconds: float = PROBE_S) -> dict:
    """What camera `index` gives the monitor: its frame size, the frames a second it delivers,
    the light of the last frame, the width of each face the configured detector finds in it
    now, and the focus and flicker avoidance in use (a Pi camera that has them; else None). Only these numbers
    are returned; no frame is kept, written or sent."""
    from edge.pipeline.detectors.regions import configured_detector
    from edge.pipeline.preprocess import to_gray
    from edge.pipeline.sources import open_source

    s = cfg.source
    try:
        source = open_source(index, "", s.width, s.height, s.fps, rotate=s.rotate, focus_m=s.focus_m,
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
            "flicker": getattr(source, "flicker", None)}


def camera_verdicts(got: dict, cfg) -> list[tuple[str, str, str]]:
    """probe_camera's numbers -> the rows someone aiming the camera needs: what it delivers
    (against what the config asks for), the light, and the faces in view now."""
    s = cfg.source
    (w, h), fps = got["size"], got["fps"]
    line, issues = f"{got['source']}: {w}x{h} at {fps:g} fps measured over {PROBE_S:g} s", []
    if (w, h) != (s.width, s.height):
        issues.append(f"not the {s.width}x{s.height} asked for ([source] width, height): it does not offer that size, "
                      f"and each frame costs {w * h / (s.width * s.height):.2g}x the pixels; set them to a size it offers")
    if fps < 0.6 * s.fps:
        issues.append(f"not the {s.fps:g} fps asked for: in dim light a camera lengthens its exposure and slows down "
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
    found = f"{len(widths)} face{'s' if len(widths) > 1 else ''}{where}, {'-'.join(map(str, sorted({widths[0], widths[-1]})))} px wide"
    if widths[0] < target:
        return ("faces now", WARN, f"{found}: under the {target:.0f} px to aim for, faces are missed more often; move "
                                   "the camera closer or use a narrower lens or a roi (README: Placing the camera)")
    return ("faces now", OK, f"{found} (aim for {target:.0f} px or more)")


# -- checks -------------------------------------------------------------------------------


def check_camera(ctx: _Context, cfg) -> None:
    from edge.config import both_sources

    src = cfg.source
    index = ctx.s.camera
    if said := both_sources(src):
        ctx.add("source", WARN, said)
    if index is None:
        if src.path and src.camera is None:  # as `edge run`: a camera in the config wins over its path
            if "://" in src.path:
                # its password would give the camera's picture to whoever reads the report or install log
                ctx.add("camera", OK, f"skipped: the config reads the stream {redact_url(src.path)}")
            else:
                try:
                    there = expand_path(src.path).exists()
                except OSError as exc:  # under a folder this user may not enter
                    ctx.add("camera", FAIL, f"the config reads {src.path}, which this user cannot reach "
                                            f"({exc.strerror}); try sudo, or make it readable")
                    return
                if there:
                    ctx.add("camera", OK, f"skipped: the config reads {src.path} (it exists)")
                else:
                    ctx.add("camera", FAIL, f"the config reads {src.path}, which does not exist")
            return
        index = src.camera
    if index is None:
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
    loaded = not any(c.name == "config" and c.status == FAIL for c in ctx.checks)
    root = str(Path(__file__).resolve().parents[3])  # where this edge package is imported from
    config = str(Path(ctx.s.config).absolute()) if ctx.s.config and loaded else ""  # the child runs in /tmp
    got, why = _child(_CAMERA_PROBE, timeout, root, config, str(index))
    if got is None or "error" in got:
        ctx.add("camera", FAIL, got["error"] if got else f"camera {index}: {why}")
        return
    for row in camera_verdicts(got, cfg):
        ctx.add(*row)


def check_sinks(ctx: _Context, cfg) -> None:
    """Each configured sink's Fanout.check() line, built against an empty temporary spool (so
    the doctor never sends a spooled event), with the real spool's backlog counted beside it."""
    # The sinks' own lines (spooling, retrying, still busy at the stop) speak of a running
    # service; the doctor builds them only to check them and says what it found in its rows.
    sinks_log = logging.getLogger("edge.sinks")
    level = sinks_log.level
    sinks_log.setLevel(logging.CRITICAL)
    try:
        _check_each_sink(ctx, cfg)
    finally:
        sinks_log.setLevel(level)


def _check_each_sink(ctx: _Context, cfg) -> None:
    from edge.config import SinksConfig
    from edge.sinks import SINKS, build_sinks
    from edge.sinks.fanout import configurable
    from edge.sinks.spool import DEAD_DIR, DEFAULT_SPOOL_DIR

    spool_root = expand_path(cfg.sinks.spool_dir or DEFAULT_SPOOL_DIR)
    device = cfg.device_name or platform.node()
    configured = [k for k in configurable() if getattr(cfg.sinks, k, None) is not None]
    ctx.add("sink log", OK, "the journal / stderr (always on)")
    for key in configured:
        section = SINKS[key].doctor_config(getattr(cfg.sinks, key), service_active())
        if isinstance(section, str):  # the sink says why it is not built here
            ctx.add(f"sink {key}", OK, section)
            continue
        backlog = ""
        real = spool_root / key
        try:
            pending = len(list(real.glob("*.json"))) if real.is_dir() else 0
            dead = len(list((real / DEAD_DIR).glob("*.json"))) if (real / DEAD_DIR).is_dir() else 0
            backlog = f"; {pending} undelivered in {real}" if pending else ""
            backlog += f"; {dead} rejected events in {real / DEAD_DIR}" if dead else ""
        except OSError:
            backlog = f"; spool {real} not readable by this user"
        with tempfile.TemporaryDirectory(prefix="qm-doctor-") as tmp:
            one = SinksConfig(spool_dir=tmp, **{key: section})
            try:
                with warnings.catch_warnings():  # gpiozero warns once per pin factory it tries
                    warnings.simplefilter("ignore")
                    fan = build_sinks(one, device)
            except UserError as exc:
                ctx.add(f"sink {key}", FAIL, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001
                ctx.add(f"sink {key}", FAIL, f"cannot be set up: {type(exc).__name__}: {exc}")
                continue
            try:
                line = fan.check().get(key, "check failed: no answer")
            finally:
                fan.close()
        values = [getattr(section, f.name) for f in dataclasses.fields(section)] if dataclasses.is_dataclass(section) else []
        ctx.add(f"sink {key}", sink_verdict(line), line + home_note(ctx, *values) + backlog)


def check_disk(ctx: _Context, cfg) -> None:
    from edge.sinks.spool import DEFAULT_SPOOL_DIR

    spool = expand_path(cfg.sinks.spool_dir or DEFAULT_SPOOL_DIR)
    where_from = home_note(ctx, cfg.sinks.spool_dir or str(DEFAULT_SPOOL_DIR))
    existing = spool
    while not visible(existing) and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    free_mb = usage.free / 2**20
    where = f"{free_mb / 1024:.1f} GiB free of {usage.total / 2**30:.1f} GiB at {spool}{where_from}"
    if os.statvfs(existing).f_flag & os.ST_RDONLY:  # its free space is beside the point (and may read 0)
        ctx.add("disk", FAIL, f"{spool} is on a read-only file system: undelivered alerts cannot be kept; remount "
                              "it read-write or set sinks.spool_dir to a folder on a writable disk")
    elif free_mb < FREE_FAIL_MB:
        ctx.add("disk", FAIL, where + ": undelivered alerts cannot be kept; free some space")
    elif free_mb < FREE_WARN_MB:
        ctx.add("disk", WARN, where)
    else:
        ctx.add("disk", OK, where)
    if not existing.is_dir():
        ctx.add("spool", FAIL, f"{existing} is a file, not a folder: set sinks.spool_dir to a folder")
    elif existing == spool:
        name, status, detail = spool_writable(spool)
        ctx.add(name, status, detail + where_from)
    elif not os.access(existing, os.W_OK):
        ctx.add("spool", WARN, f"{existing} is not writable by this user (the service's user {SERVICE} may be "
                               f"the one that can: sudo -u {SERVICE} edge doctor ...)")


def spool_writable(spool: Path) -> tuple[str, str, str]:
    """A real write (the spool's own fsync-and-rename) of a probe file, removed at once: as root,
    or on a read-only or full file system, os.access says nothing about whether writes work."""
    from edge.files import write_atomic

    probe = spool / ".doctor-probe.json"
    try:
        write_atomic(probe, b"{}")
        probe.unlink()
    except OSError as exc:
        return ("spool", FAIL, f"{spool} does not take writes ({exc.strerror or exc}): undelivered alerts would be "
                               "held only in memory and lost on a restart")
    return ("spool", OK, f"{spool} takes writes")


def _lan_address() -> str | None:
    """This machine's address on its default route (a UDP socket's connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 9))
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def _answers_without_auth(host: str, port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=3) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False  # refused, 401, or nothing there


def _is_queue_mood(host: str, port: int) -> bool:
    """Whether the program on host:port is a queue-mood status server (its Server header, sent
    with a 401 too)."""
    import http.client

    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("HEAD", "/")
        return (conn.getresponse().getheader("Server") or "").startswith("queue-mood")
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def port_verdict(host: str, port: int) -> tuple[str, str] | None:
    """None when edge run could listen on host:port now, else (status, why): a port another
    program holds would leave edge run without its page (it runs on, with a warning)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does (HTTPServer)
        try:
            s.bind((host, port))
            return None
        except OSError as exc:
            err = exc
    if err.errno == errno.EADDRINUSE:
        if _is_queue_mood(host, port):
            return OK, "the queue-mood monitor running now listens there"
        return FAIL, (f"port {port} on {host} is taken by another program, so edge run would run without its "
                      "page; stop that program or set [status] port to a free one")
    fix = {errno.EACCES: "ports below 1024 need root: choose [status] port above 1023",
           errno.EADDRNOTAVAIL: f"{host} is not an address of this machine: fix [status] host"}
    return FAIL, (f"edge run cannot listen on {host}:{port} ({err.strerror}); "
                  f"{fix.get(err.errno, 'fix [status] host and port')}")


def check_status(ctx: _Context, cfg) -> None:
    """Where the status page listens, and whether anything on this Pi's network address
    answers it without credentials (the service predating the config, a proxy, a test run)."""
    from edge.config import is_loopback

    st = cfg.status
    if not st.enabled:
        ctx.add("status page", OK, "off ([status] enabled = false)")
        return
    need = " and ".join(w for w, on in (("a token", st.token), ("a password", st.password)) if on) or \
        "the metrics token (for /metrics; the page is closed)"
    # port 0: the system picks a free one at each start
    port = "a free port chosen at each start ([status] port = 0; edge run logs which)" if not st.port else None
    if is_loopback(st.host):
        where = f"on this Pi only, {port}" if port else f"http://localhost:{st.port}/ on this Pi only"
        line = f"{where}; for the store network set [status] host = \"0.0.0.0\" with a token or password"
    else:
        line = f"on {st.host}, {port}, {need} required" if port else f"on {st.host}:{st.port}, {need} required"
    taken = port_verdict(st.host, st.port) if st.port else None
    status, why = taken or (OK, "")
    ctx.add("status page", status, why if status == FAIL else f"{line}; {why}" if why else line)
    lan = _lan_address()
    if lan and st.port and _answers_without_auth(lan, st.port):
        ctx.add("status auth", WARN, f"http://{lan}:{st.port}/status answers without a token or password: anyone on "
                                     "the store network can read it; restart the service with [status] token or "
                                     "password set (or host = \"127.0.0.1\")")


def diagnose(s: DoctorSettings) -> list[Check]:
    ctx = _Context(s)
    check_platform(ctx)
    check_runtime(ctx)
    check_numpy_opencv(ctx)
    cfg = check_config(ctx)
    with service_home(ctx):  # the camera probe's child process inherits it
        check_model(ctx, cfg)
        check_detector(ctx, cfg)
        check_budget(ctx, cfg)
        check_camera(ctx, cfg)
        check_sinks(ctx, cfg)
        check_disk(ctx, cfg)
        check_service_access(ctx, cfg)
    check_status(ctx, cfg)
    check_pi(ctx)
    return ctx.checks


def report(checks: list[Check]) -> dict:
    counts = {k: sum(c.status == k for c in checks) for k in (OK, WARN, FAIL)}
    return {"ok": counts[FAIL] == 0, "counts": counts, "checks": [dataclasses.asdict(c) for c in checks]}


def format_text(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:<5} {c.name:<{width}}  {c.detail}" for c in checks]
    counts = report(checks)["counts"]
    lines.append(f"{counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL")
    return "\n".join(lines)


def run(s: DoctorSettings, echo=print) -> int:
    """Print the checks (text or JSON); the exit code is 1 when any check FAILs."""
    from edge.config import MAX_CAMERA

    # as edge run's --camera: a negative index would pick the last Pi camera from the end of the list
    if s.camera is not None and not 0 <= s.camera <= MAX_CAMERA:
        raise UserError(f"--camera {s.camera} is not a camera index; pass an integer from 0 to {MAX_CAMERA}, "
                        "e.g. --camera 0.")
    checks = diagnose(s)
    echo(json.dumps(report(checks), indent=2) if s.as_json else format_text(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0
