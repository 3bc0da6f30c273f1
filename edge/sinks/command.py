"""Runs a program for each event with the event JSON on stdin (e.g. a script that sends an
SMS). A failure or timeout is logged and counted (`failed`), never raised.

The program runs in its own session (process group): on a timeout, or at shutdown, the whole
group is killed, so `timeout_s` also bounds what the program started (a script's `curl`,
`sleep`), which would otherwise keep stderr open and the sink waiting."""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from edge.errors import check, check_range
from edge.redact import escape_controls
from edge.sinks.base import MAX_TIMEOUT_S, AlertEvent, Sink, register

log = logging.getLogger(__name__)

REAP_S = 2.0  # after the kill, how long to wait for stderr to close (a process that left the group holds it)
# The end of stderr kept for the log line (which shows 300 characters): a program printing without
# end (an error in a tight loop) held all of it in memory until timeout_s, GBs in seconds.
STDERR_KEEP = 4096


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group proc leads (start_new_session), children included."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group has exited already
        pass


def read_tail(proc: subprocess.Popen, tail: bytearray, deadline: float) -> bool:
    """Read proc's stderr until it closes (True) or the deadline (False), keeping its last
    STDERR_KEEP bytes in tail."""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                return False
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                return True
            tail += chunk
            del tail[:-STDERR_KEEP]


@dataclass
class CommandSinkConfig:
    """Alert sink: a program run once per event."""

    argv: list[str] = field(default_factory=list)  # program and arguments; the event JSON arrives on stdin, e.g. `["/usr/local/bin/notify-staff", "--till", "3"]`
    timeout_s: float = 10.0  # the program, and what it started, is killed after this long

    def validate(self, p):
        # Lazily: edge.config imports every sink while it loads (at this module's import it is half
        # made, and the plugin loader would report the command sink unavailable).
        from edge.config import shown_value

        # shown as config errors show values: argv may carry a --password or a URL with credentials
        check(bool(self.argv) and bool(self.argv[0]), f"{p}.argv", self.argv, "a non-empty list: program and arguments",
              shown_value(f"{p}.argv", self.argv))
        check_range(self.timeout_s, 0, MAX_TIMEOUT_S, f"{p}.timeout_s", "seconds", lo_open=True)


@register
class CommandSink(Sink):
    key = "command"
    Config = CommandSinkConfig
    order = 60

    def __init__(self, argv: list[str], timeout_s: float = 10.0):
        if not argv:
            raise ValueError("the command sink needs argv: program and arguments")
        self.argv, self.timeout_s = list(argv), timeout_s
        if not shutil.which(self.argv[0]):  # said at the start, not first at an alert hours later
            log.warning("Alert command %s is not found or not executable: each alert sent to it will fail until it "
                        "is installed or [sinks.command] argv names it (a path, or a program on PATH).", self.argv[0])
        self._proc: subprocess.Popen | None = None  # the running command, for abort()
        self._aborted = False  # abort() killed it: that line is the one to log
        self._killed: subprocess.Popen | None = None  # the one killed at shutdown, counted once
        self._kill_lock = threading.Lock()  # abort() and send() may both come to kill it

    def send(self, event: AlertEvent) -> None:
        data = json.dumps(event.to_dict()).encode()
        try:
            # No shell: argv is run as given, so event text can never become shell syntax.
            # Own session: the program and its children can be killed together (kill_group).
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            self.failed += 1
            log.warning("Alert command %s could not run: %s", self.argv[0], exc)
            return
        proc = self._proc
        if self._aborted:  # abort() came while it was starting, before it could see the process
            self._kill_at_shutdown(proc)
        stderr = bytearray()
        try:
            try:  # an event is far below a pipe's buffer: this never blocks
                proc.stdin.write(data)
                proc.stdin.close()
            except BrokenPipeError:  # it ended without reading: its exit status says how it went
                pass
            deadline = time.monotonic() + self.timeout_s
            try:
                if not read_tail(proc, stderr, deadline):
                    raise subprocess.TimeoutExpired(self.argv, self.timeout_s)
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_group(proc)
                read_tail(proc, stderr, time.monotonic() + REAP_S)  # a child that left the group may hold it
                proc.stderr.close()
                proc.wait()
                self.failed += 1
                log.warning("Alert command %s timed out after %.1fs (killed).", self.argv[0], self.timeout_s)
                return
        finally:
            self._proc = None
            proc.stderr.close()
        if proc.returncode != 0:
            self.failed += 1
            if self._aborted:
                return
            err = bytes(stderr).decode(errors="replace").strip()[-300:]
            # One journal line: the program may pass on what a server answered, which must neither
            # pass for the monitor's own lines nor reach a terminal's escapes.
            err = escape_controls(" | ".join(err.splitlines()))
            log.warning("Alert command %s exited with %d: %s", self.argv[0], proc.returncode, err or "(no stderr)")
            return
        self.delivered += 1

    def abort(self) -> None:
        """Shutdown while the command still runs: kill it and its children rather than leave them behind.
        Marked first: a command starting at this moment is killed by send() once it has started."""
        self._aborted = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._kill_at_shutdown(proc)

    def _kill_at_shutdown(self, proc: subprocess.Popen) -> None:
        with self._kill_lock:
            if self._killed is proc:
                return
            self._killed = proc
        kill_group(proc)
        # No spool: the event it was given is lost, and edge run's exit status says so
        self.given_up += 1
        log.error("Alert command %s still running at shutdown: killed, its event lost.", self.argv[0])

    def check(self) -> str:
        found = shutil.which(self.argv[0])
        return f"command {found} found" if found else f"command {self.argv[0]} not found or not executable"
