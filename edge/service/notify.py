"""systemd's notify protocol without a dependency: one datagram to $NOTIFY_SOCKET.

With `Type=notify` systemd waits for READY=1, and with `WatchdogSec=` it restarts the
service when WATCHDOG=1 stops arriving, i.e. when the frame loop is stuck or its source can no
longer deliver (the loop pings on every frame and every idle tick while `Source.alive()`, so
a silent camera is not "stuck" but a dead or hung grabber is). Outside systemd every call is a
no-op.

A start that fails for good (a bad config, a missing model: exit status 2 before READY=1) waits
FAILED_START_WAIT_S before exiting (failed_start): with the unit's RestartSec=5 alone it was a
start every 5 s, each loading numpy, OpenCV and the TFLite runtime on a Pi, and thousands of
journal lines an hour that rotated away the one saying why.
"""

from __future__ import annotations

import os
import socket
import time

from edge.signals import StopFlag

# Under systemd's default TimeoutStartSec (90 s; before READY=1 only it applies, the watchdog
# starts with READY=1): about one start a minute with RestartSec=5, and a config fixed without
# `systemctl restart` is picked up within about a minute.
FAILED_START_WAIT_S = 60.0
_ready = False  # this process said READY=1: a failure now is no failed start, and the watchdog runs


def notify(state: str) -> bool:
    """Send one notification ("READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=..."); True if sent."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        return False  # systemd gone or socket not ours: nothing to tell
    if state == "READY=1":
        global _ready
        _ready = True
    return True


def failed_start(reason: str) -> None:
    """Under systemd, for an error that stops edge run before READY=1 (said once on stderr
    already): `systemctl status` shows `reason`, and the caller's exit comes FAILED_START_WAIT_S
    later, or at SIGTERM/SIGINT (systemctl stop or restart), not at once. Outside systemd it returns at once."""
    if _ready:
        return
    line = " ".join(reason.split())  # STATUS= is one line
    with StopFlag() as stop:  # before the STATUS: a stop right after it must not kill us mid-way
        if notify(f"STATUS=Not started: {line} Next try in about {FAILED_START_WAIT_S:.0f} s, "
                  "or at once with systemctl restart."):
            stop.event.wait(FAILED_START_WAIT_S)


class Watchdog:
    """Pings at half the interval systemd asked for ($WATCHDOG_USEC), at most that often."""

    def __init__(self):
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        self.interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ours else 0.0
        self._next = 0.0

    def ping(self) -> None:
        if self.interval_s and time.monotonic() >= self._next:
            notify("WATCHDOG=1")
            self._next = time.monotonic() + self.interval_s
