"""Alert sink interface and registry. A failing sink never stops the pipeline."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Callable

log = logging.getLogger(__name__)


@dataclass
class AlertEvent:
    """What leaves the device: counts and shares, never an image."""

    kind: str  # "raised" | "cleared" | "status"
    t_s: float  # pipeline time (media time for a recording, monotonic for live)
    wall_time: str  # ISO 8601 UTC
    negative_share: float
    faces: int
    counts: dict = field(default_factory=dict)  # emotion -> tracked faces
    device: str = ""
    event_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Sink:
    """Subclasses set `key`, take their config section as keyword options, implement send()."""

    key = ""

    def send(self, event: AlertEvent) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Deliver what is pending (called on shutdown and periodically)."""

    def update(self, status: dict) -> None:
        """The current /status snapshot, every few seconds; for sinks that show live values."""

    def close(self) -> None:
        self.flush()

    def check(self) -> str:
        """One line on whether the sink can deliver now (for `edge doctor`)."""
        return "ok"


SINKS: dict[str, Callable[..., Sink]] = {}


def register(cls):
    SINKS[cls.key] = cls
    return cls
