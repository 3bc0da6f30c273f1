"""Alert sink interface and registry. A failing sink never stops the pipeline. Each sink
module declares its [sinks.<key>] config dataclass as `Config`, registers itself, and its
check() is its line in `edge doctor`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.errors import UserError
from edge.plugins import Registry

MAX_TIMEOUT_S = 300.0  # a sink timeout (webhook, command) longer than this is a typo, not a slow receiver


class SinkUnavailable(UserError):
    """A sink that cannot start on this machine (no GPIO, the pin in use, its library missing),
    as opposed to a bad setting: build_sinks disables it with one ERROR line and the monitor
    runs on with the other sinks, where a stop would leave systemd restarting it every few seconds."""


@dataclass
class AlertEvent:
    """What leaves the device: counts and shares, never an image."""

    kind: str  # "raised" | "cleared" | "camera_down" | "camera_up"
    t_s: float  # pipeline time (media time for a recording, monotonic for live)
    wall_time: str  # ISO 8601 UTC
    negative_share: float
    faces: int
    counts: dict = field(default_factory=dict)  # emotion -> tracked faces
    device: str = ""
    event_id: str = ""
    # False: no NTP client had set the clock when the event was made, so wall_time may be far off
    # (a Pi has no real-time clock); None: not known on this system
    clock_synced: bool | None = None
    # time.monotonic() when wall_time was read: not sent, but kept in a spooled copy of an event
    # made before NTP set the clock, to stamp it again once it has (edge.sinks.restamp)
    mono_s: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        """The payload: every field but mono_s."""
        payload = asdict(self)
        del payload["mono_s"]
        return payload


class Sink:
    """Subclasses set `key` and `Config`, take their config section as keyword options, implement send()."""

    key = ""
    delivered = 0  # events the sink handed over successfully (for MQTT: events the broker acknowledged)
    failed = 0  # delivery attempts that failed inside the sink (refused, unreachable, non-zero exit)
    given_up = 0  # events a sink without a spool dropped itself (counted as lost)
    Config: type | None = None  # the [sinks.<key>] dataclass; None: always on, no section
    order = 50  # send order: local records first, then the network, then actuators
    spooled = False  # True: undelivered events wait in a Spool at <spool_dir>/<key>

    @classmethod
    def build(cls, cfg, spool_root: Path, device_name: str) -> list["Sink"]:
        """The sinks a config section makes (this one, plus what the file does not hold)."""
        from edge.sinks.spool import Spool

        return [cls(**asdict(cfg), **({"spool": Spool(spool_root / cls.key)} if cls.spooled else {}))]

    @classmethod
    def doctor_config(cls, cfg, service_running: bool):
        """The section `edge doctor` builds this sink from, or one line saying why it builds
        none (e.g. the running service holds the hardware)."""
        return cfg

    def send(self, event: AlertEvent) -> None:
        raise NotImplementedError

    def keep(self, event: AlertEvent) -> bool:
        """Store an event for later delivery without sending it (a stuck sink at shutdown or
        with a full queue); False when the sink has no spool, and the event is lost."""
        return False

    def unsaved(self) -> int:
        """Undelivered events held only in memory (the spool's folder refused them): they are
        lost when the process stops."""
        spool = getattr(self, "spool", None)
        return spool.in_memory if spool is not None else 0

    def retry_spool(self, now: bool = False) -> None:
        """Move what the spool holds in memory back to disk if it takes writes again (called by the
        sink's worker when idle, and once more at the stop, before close)."""
        spool = getattr(self, "spool", None)
        if spool is not None:
            spool.retry(now)

    def flush(self) -> None:
        """Deliver what is pending (called by the sink's worker when idle, and by close())."""

    def update(self, status: dict) -> None:
        """The current /status snapshot, every few seconds; for sinks that show live values."""

    def close(self) -> None:
        self.flush()

    def abort(self) -> None:
        """Called from another thread when the sink is still busy after shutdown's deadline:
        end what can be ended (a child process); the sink's thread is then left behind."""

    def check(self) -> str:
        """One line on whether the sink can deliver now (for `edge doctor`)."""
        return "ok"


class DisabledSink(Sink):
    """Stands in for a configured sink that could not start (SinkUnavailable): shown in /status
    and `edge doctor`, and every event it gets is a failed delivery."""

    def __init__(self, key: str, why: str):
        self.key, self.why = key, why
        self.failed = 1  # the failed start: the status page's sink failures show it

    def send(self, event: AlertEvent) -> None:
        self.failed += 1

    def check(self) -> str:
        return f"cannot start, disabled: {self.why}"


SINKS = Registry("alert sink")
register = SINKS.register
