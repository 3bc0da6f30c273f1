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
import socket

from edge.errors import UserError
from edge.ops.doctor.board import check_pi, check_platform
from edge.ops.doctor.budget import check_budget
from edge.ops.doctor.camera import check_camera
from edge.ops.doctor.config import check_config
from edge.ops.doctor.context import FAIL, OK, WARN, Check, DoctorSettings, _Context
from edge.ops.doctor.disk import check_disk
from edge.ops.doctor.libraries import check_numpy_opencv, check_runtime
from edge.ops.doctor.model import check_detector, check_model
from edge.ops.doctor.service import check_service_access, service_home
from edge.ops.doctor.sinks import check_sinks


# -- pure verdicts (unit-tested) ----------------------------------------------------------


# -- helpers ------------------------------------------------------------------------------


# -- checks -------------------------------------------------------------------------------


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
