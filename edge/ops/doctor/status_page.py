"""The status page: where it listens, whether edge run could listen there now, and whether this
machine's network address answers it without a token or password."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from edge.ops.doctor.context import FAIL, OK, WARN, _Context

# Ports below this need root (CAP_NET_BIND_SERVICE), which the service's user lacks (its unit's
# CapabilityBoundingSet is empty): `sudo edge doctor` may bind one the service then cannot.
UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


def unprivileged_port_start() -> int:
    try:
        return int(UNPRIVILEGED_PORT_START.read_text())
    except (OSError, ValueError):
        return 1024  # Linux's default


def service_low_port_verdict(port: int) -> tuple[str, str] | None:
    """For the installed service's config checked as root: (FAIL, why) when the service's user may
    not listen on port, unless its unit or a drop-in grants the capability."""
    from edge.ops.doctor.config import UNIT_FILE, service_lines
    from edge.ops.doctor.service import SERVICE

    start = unprivileged_port_start()
    if not port or port >= start or os.geteuid() != 0:
        return None
    if any("CAP_NET_BIND_SERVICE" in value for _, value in service_lines(UNIT_FILE)[0]):
        return None
    return FAIL, (f"port {port}: this doctor, as root, may listen there, but not the service's user {SERVICE} (ports "
                  f"below {start} need root), so edge run would run without its page; choose [status] port above "
                  f"{start - 1}, e.g. 8765")


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
    program holds leaves edge run without its page until it is free (it runs on, with a warning, and
    tries the port again every minute)."""
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
                      "page until it is free; stop that program or set [status] port to a free one")
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
    if taken is None and ctx.home:  # free now, for root: the service's config, whose user is not root
        taken = service_low_port_verdict(st.port)
    status, why = taken or (OK, "")
    ctx.add("status page", status, why if status == FAIL else f"{line}; {why}" if why else line)
    lan = _lan_address()
    if lan and st.port and _answers_without_auth(lan, st.port):
        ctx.add("status auth", WARN, f"http://{lan}:{st.port}/status answers without a token or password: anyone on "
                                     "the store network can read it; restart the service with [status] token or "
                                     "password set (or host = \"127.0.0.1\")")


def check_history(ctx: _Context, cfg) -> None:
    """status.history_db, when set: edge run carries on without a file it cannot use (the page's
    last hour then kept in memory only, lost at each restart), saying so only in its log."""
    from edge.ops.doctor.service import home_note
    from edge.paths import expand_path
    from edge.service.history import unusable

    if not cfg.status.history_db:
        return
    path = expand_path(cfg.status.history_db)
    where = home_note(ctx, cfg.status.history_db)
    if why := unusable(str(path)):
        ctx.add("status history", WARN, f"{path} cannot be written ({why}){where}: edge run keeps the page's last "
                                        "hour in memory only, lost at each restart")
    else:
        ctx.add("status history", OK, f"the page's last hour is kept in {path} across restarts{where}")
