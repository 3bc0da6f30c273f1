"""Runs a program for each event with the event JSON on stdin (e.g. a script that sends an
SMS). A failure or timeout is logged, never raised."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field

from edge.errors import check
from edge.sinks.base import AlertEvent, Sink, register

log = logging.getLogger(__name__)


@dataclass
class CommandSinkConfig:
    argv: list[str] = field(default_factory=list)  # the event JSON arrives on stdin
    timeout_s: float = 10.0

    def validate(self, p):
        check(bool(self.argv), f"{p}.argv", self.argv, "a non-empty list: program and arguments")


@register
class CommandSink(Sink):
    key = "command"
    Config = CommandSinkConfig
    order = 60

    def __init__(self, argv: list[str], timeout_s: float = 10.0):
        if not argv:
            raise ValueError("the command sink needs argv: program and arguments")
        self.argv, self.timeout_s = list(argv), timeout_s

    def send(self, event: AlertEvent) -> None:
        data = json.dumps(event.to_dict()).encode()
        try:
            # No shell: argv is run as given, so event text can never become shell syntax.
            proc = subprocess.run(self.argv, input=data, capture_output=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            log.warning("Alert command %s timed out after %.1fs (killed).", self.argv[0], self.timeout_s)
            return
        except OSError as exc:
            log.warning("Alert command %s could not run: %s", self.argv[0], exc)
            return
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[-300:]
            log.warning("Alert command %s exited with %d: %s", self.argv[0], proc.returncode, err or "(no stderr)")

    def check(self) -> str:
        found = shutil.which(self.argv[0])
        return f"command {found} found" if found else f"command {self.argv[0]} not found or not executable"
