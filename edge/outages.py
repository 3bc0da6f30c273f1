"""How often the journal hears of outages that come and go.

A source that drops out every few seconds (a stream that stalls after each reconnect, a loose
cable) made six journal lines per outage, some 40 a minute, day and night: the SD card and the
journal filled, and the first line, the one saying why, scrolled away. An outage starting at
least EVERY_S after the last one said is said in full; those between are logged at DEBUG and
counted, and the next one said names how many."""

from __future__ import annotations

import logging
import math
import time

from edge.words import plural

EVERY_S = 60.0
# Outages starting within this of the end of the one before are one flap (a loose cable, a failing USB
# port): the sinks are told of one per window (edge.service.app), and the status page joins them into one
# line saying how many (it reads the window from /status outage_join_s).
FLAP_WINDOW_S = 600.0


class OutageLog:
    """start() at each outage's start: `said` tells whether it is to be said (`level` is then
    WARNING, else DEBUG); `more()` at its end: the text naming the outages left unsaid since the last one said."""

    def __init__(self):
        self.said = True  # the current (or last) outage is in the journal
        self.unsaid = 0  # outages since the last one said that were not
        self._said_at = -math.inf

    def due(self) -> bool:
        """Whether an outage starting now would be said."""
        return time.monotonic() - self._said_at >= EVERY_S

    def start(self) -> None:
        self.said = self.due()
        if self.said:
            self._said_at = time.monotonic()
        else:
            self.unsaid += 1

    def overdue(self, lasted_s: float) -> bool:
        """True once for an outage not said that has lasted EVERY_S: a source gone for good after
        coming and going is said all the same (the same line as at a start, then its end)."""
        if self.said or lasted_s < EVERY_S:
            return False
        self.said, self._said_at = True, time.monotonic()
        return True

    @property
    def level(self) -> int:
        return logging.WARNING if self.said else logging.DEBUG

    def more(self) -> str:
        """" (and N more outages ... not logged)" once, at the end of an outage said; "" otherwise."""
        if not self.said or not self.unsaid:
            return ""
        n, self.unsaid = self.unsaid, 0
        return (f" ({plural(n, 'more outage')} since the last one logged, each starting within "
                f"{EVERY_S:.0f} s of it, were not logged: it keeps dropping out)")
