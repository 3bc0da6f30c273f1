"""systemd's notify protocol without a dependency: one datagram to $NOTIFY_SOCKET.

With `Type=notify` systemd waits for READY=1, and with `WatchdogSec=` it restarts the
service when WATCHDOG=1 stops arriving, i.e. when the frame loop is stuck or its source can no
longer deliver (the loop pings on every frame and every idle tick while `Source.alive()`, so
a silent camera is not "stuck" but a dead or hung grabber is). Outside systemd every call is a
no-op.
"""

from __future__ import annotations

import os
import socket
import time


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
        return True
    except OSError:
        return False  # systemd gone or socket not ours: nothing to tell


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
