"""Stop signals as a flag: SIGINT (Ctrl-C), SIGTERM and SIGHUP let `edge run` and `edge analyze`
finish the frame in hand and write what they have, instead of ending mid-file."""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """Set by SIGINT/SIGTERM, and SIGHUP (the SSH session the command was started from closed,
    which otherwise ends it on the spot) unless it is ignored (nohup); `name` is the signal's
    ("SIGTERM"). A context manager: the handlers are given back on leaving."""

    def __init__(self):
        self.event = threading.Event()
        self.name: str | None = None
        self._previous = {}

    def _set(self, signum, _frame) -> None:
        self.name = self.name or signal.Signals(signum).name
        self.event.set()

    def install(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # nohup's promise: a hang-up passes unnoticed
                self._previous[sig] = signal.signal(sig, self._set)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __enter__(self) -> "StopFlag":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
