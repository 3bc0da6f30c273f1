"""Stop signals as a flag: SIGINT (Ctrl-C), SIGTERM and SIGHUP let `edge run` and `edge analyze`
finish the frame in hand and write what they have, instead of ending mid-file."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def sigint_held():
    """Ctrl-C noted during the block and raised as KeyboardInterrupt when it ends. For a native
    import that runs Python's signal handler itself and drops the KeyboardInterrupt it raises:
    OpenCV's first import (half a second or more on a Pi) did, and `edge run` then went on as if
    no Ctrl-C had come. Only where Python's own handler is in place (a StopFlag does not raise)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
