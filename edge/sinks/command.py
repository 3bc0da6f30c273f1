"""Runs a program for each event with the event JSON on stdin (e.g. a script that sends an
SMS). A failure or timeout is logged, never raised."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field

from edge.errors import check, check_range
from edge.sinks.base import MAX_TIMEOUT_S, AlertEvent, Sink, register

log = logging.getLogger(__name__)


@dataclass
class CommandSinkConfig:
    """Alert sink: a program run once per event."""

    argv: list[str] = field(default_factory=list)  # program and arguments; the event JSON arrives on stdin, e.g. `["/usr/local/bin/notify-staff", "--till", "3"]`
    timeout_s: float = 10.0  # the program is killed after this long

    def validate(self, p):
        check(bool(self.argv) and bool(self.argv[0]), f"{p}.argv", self.argv,
              "a non-empty list: program and arguments")
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
        self._proc: subprocess.Popen | None = None  # the running command, for abort()

    def send(self, event: AlertEvent) -> None:
        data = json.dumps(event.to_dict()).encode()
        try:
            # No shell: argv is run as given, so event text can never become shell syntax.
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
        except OSError as exc:
            log.warning("Alert command %s could not run: %s", self.argv[0], exc)
            return
        try:
            _, stderr = self._proc.communicate(data, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            log.warning("Alert command %s timed out after %.1fs (killed).", self.argv[0], self.timeout_s)
            return
        finally:
            returncode, self._proc = self._proc.returncode, None
        if returncode != 0:
            err = stderr.decode(errors="replace").strip()[-300:]
            log.warning("Alert command %s exited with %d: %s", self.argv[0], returncode, err or "(no stderr)")
            return
        self.delivered += 1

    def abort(self) -> None:
        """Shutdown while the command still runs: kill it rather than leave it behind."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            log.warning("Alert command %s still running at shutdown: killed.", self.argv[0])

    def check(self) -> str:
        found = shutil.which(self.argv[0])
        return f"command {found} found" if found else f"command {self.argv[0]} not found or not executable"
