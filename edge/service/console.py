"""What `edge run` and `edge demo` show a person at a terminal.

One compact line per interval: faces in the mood window, their expressions, the negative
share and the alert state. On a terminal `edge run` redraws it in place (log lines are
printed above it); under systemd, in a pipe, with --json or -q there is none. -v adds a
DEBUG line per interval of the source's time (media time for a recording) with every track
and the stage timings.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

log = logging.getLogger("edge.console")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def status_text(result) -> str:
    """`faces 4 | angry 3 happy 1 | negative 75% | alert RAISED` for a FrameResult."""
    m = result.mood
    counts = sorted(((n, c) for n, c in m.counts.items() if c), key=lambda nc: (-nc[1], nc[0]))
    emotions = " ".join(f"{n} {c}" for n, c in counts) or "-"
    state = "RAISED" if result.alert_state == "raised" else result.alert_state
    return f"faces {m.faces} | {emotions} | negative {100 * m.negative_share:.0f}% | alert {state}"


def tracks_text(result) -> str:
    labels = list(result.mood.counts)  # the model card's labels, in order
    tracks = ", ".join(f"#{t.id} {labels[t.top]} {t.confidence:.2f}" for t in result.tracks) or "no tracks"
    stages = " ".join(f"{k} {1000 * v:.1f}" for k, v in result.stage_s.items())
    return f"t={result.t_s:.1f}s {tracks}; stage ms {stages}"


def wants_status_line(stream: TextIO) -> bool:
    """A terminal a person watches: not the journal, a pipe or a dumb terminal."""
    return (hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("JOURNAL_STREAM")
            and os.environ.get("TERM", "") != "dumb")


class StatusLine:
    """The status line, redrawn in place at most once per interval_s of wall time."""

    def __init__(self, stream: TextIO, interval_s: float = 1.0, clock=time.monotonic):
        self.stream, self.interval_s, self.clock = stream, interval_s, clock
        self.text = ""
        self._last = None
        self._frames = 0
        self._undrawn = None  # the newest result not drawn yet: close() draws it

    def on_result(self, frame, result) -> None:
        self._frames += 1
        if self._last is not None and self.clock() - self._last < self.interval_s and not result.transition:
            self._undrawn = result  # an alert raised or cleared is shown at once
            return
        self._draw(result)

    def _draw(self, result) -> None:
        now = self.clock()
        fps = self._frames / (now - self._last) if self._last is not None and now > self._last else 0.0
        self._last, self._frames, self._undrawn = now, 0, None
        self.text = f"{status_text(result)} | {fps:.1f} fps"
        self.redraw()

    def clear(self) -> None:
        if self.text:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def redraw(self) -> None:
        if self.text:
            self.stream.write("\r\033[K" + self.text)
            self.stream.flush()

    def close(self) -> None:
        # The line left on the screen is the last frame's, not one up to interval_s older: a
        # recording read in under a second would otherwise end on its first frame ("faces 0").
        if self._undrawn is not None:
            self._draw(self._undrawn)
        if self.text:
            self.stream.write("\n")
            self.stream.flush()
            self.text = ""


class _AboveStatusLine(logging.StreamHandler):
    """A log handler that prints each record above the status line, then redraws it."""

    def __init__(self, stream: TextIO, status: StatusLine):
        super().__init__(stream)
        self.status = status

    def emit(self, record):
        self.status.clear()
        super().emit(record)
        self.status.redraw()


class Console:
    """Logging for `edge run` (-v / -q) and the per-frame hook that draws the status line."""

    def __init__(self, verbose: int = 0, quiet: bool = False, status_line: bool | None = None,
                 stream: TextIO | None = None, interval_s: float = 1.0, clock=time.monotonic):
        """status_line: None draws it when the stream is a terminal a person watches (and not -q)."""
        self.stream = stream or sys.stderr
        self.verbose, self.interval_s, self.clock = verbose, interval_s, clock
        if status_line is None:
            status_line = not quiet and wants_status_line(self.stream)
        self.status = StatusLine(self.stream, interval_s, clock) if status_line else None
        self._detail_at = None
        self._configure_logging(verbose, quiet)

    def _configure_logging(self, verbose: int, quiet: bool) -> None:
        handler = _AboveStatusLine(self.stream, self.status) if self.status else logging.StreamHandler(self.stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(handler)
        # -q: warnings, errors and the alerts themselves; default: INFO; -v: DEBUG for edge; -vv: for all.
        root.setLevel(logging.DEBUG if verbose > 1 else logging.WARNING if quiet else logging.INFO)
        logging.getLogger("edge").setLevel(logging.DEBUG if verbose else logging.NOTSET)
        logging.getLogger("edge.alerts").setLevel(logging.INFO if quiet else logging.NOTSET)
        logging.getLogger("matplotlib").setLevel(logging.NOTSET if verbose > 1 else logging.WARNING)
        # picamera2 says six INFO lines at each open and close ("Camera now open.", "Camera started",
        # ...): every reopen of a flapping Pi camera, past the outage log's one line a minute.
        logging.getLogger("picamera2").setLevel(logging.NOTSET if verbose > 1 else logging.WARNING)

    def on_result(self, frame, result) -> None:
        if self.status:
            self.status.on_result(frame, result)
        # once per interval of the source's own time: media time for a recording
        if self.verbose and (self._detail_at is None or result.t_s - self._detail_at >= self.interval_s):
            self._detail_at = result.t_s
            log.debug(tracks_text(result))

    def close(self) -> None:
        if self.status:
            self.status.close()
