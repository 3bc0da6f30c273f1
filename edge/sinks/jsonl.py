"""Appends one JSON line per event to a local file (easy to tail, grep or load later)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import IO

from edge.paths import expand_path
from edge.sinks.base import AlertEvent, Sink, register
from edge.sinks.spool import STATE_DIR


@dataclass
class JsonlSinkConfig:
    """Alert sink: one JSON line per event appended to a local file."""

    path: str = ""  # the file; empty: ~/.local/state/queue-mood/alerts.jsonl


@register
class JsonlSink(Sink):
    key = "jsonl"
    Config = JsonlSinkConfig
    order = 10

    def __init__(self, path: str = ""):
        self.path = expand_path(path or STATE_DIR / "alerts.jsonl")
        self._file: IO[str] | None = None

    def send(self, event: AlertEvent) -> None:
        if self._file is None:  # opened on first use, so configuring the sink never writes
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
        self._file.flush()  # a crash or power cut loses at most the line being written
        self.delivered += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def check(self) -> str:
        d = self.path.parent
        while not d.exists():
            d = d.parent
        target = self.path if self.path.exists() else d
        return f"writes {self.path}" if os.access(target, os.W_OK) else f"cannot write {self.path}"
