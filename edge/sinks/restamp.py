"""Spooled events stamped by a clock NTP had not set, stamped again when delivered after it has.

A Pi has no real-time clock: booted with the store's network down, its clock runs from the last
shutdown's time (fake-hwclock) until NTP sets it, and the events made meanwhile (clock_synced
false) wait in the spool of each network sink for that same network. So their spooled copy also
keeps KEY, the time.monotonic() at which their wall_time was read and the boot's id; every item
a spool hands out passes restamped(), which removes KEY (it is never sent) and, once NTP has set
the clock, sends such an event with wall_time = time.time() - (time.monotonic() - that stamp),
clock_synced true and the wall_time it was made with as wall_time_uncorrected. Only within the
boot that stamped it: CLOCK_MONOTONIC outlives a restart of the monitor, not a reboot, so an
event from an earlier boot (or where no boot id can be read) is sent as it was made."""

from __future__ import annotations

import time

from edge.service import health
from edge.sinks.base import AlertEvent

KEY = "_restamp"  # in a spooled copy only: {"mono_s": time.monotonic(), "boot_id": the kernel's}
UNCORRECTED = "wall_time_uncorrected"  # in the payload of a restamped event only


def spooled(event: AlertEvent) -> dict:
    """The event as a spool stores it: its payload, with KEY where the clock was not set."""
    payload = event.to_dict()
    boot = health.boot_id()
    if event.clock_synced is False and event.mono_s is not None and boot:
        payload[KEY] = {"mono_s": event.mono_s, "boot_id": boot}
    return payload


def restamped(item):
    """A spooled item (an event, or an MQTT message holding one or two) as it is sent: a copy,
    each event in it without KEY and stamped again where it can be; the stored item keeps KEY for
    a later try (the clock may not be set yet)."""
    if not isinstance(item, dict):
        return item
    out = {k: restamped(v) for k, v in item.items() if k != KEY}
    if KEY in item:
        _correct(out, item[KEY])
    return out


def _correct(event: dict, stamp) -> None:
    mono = stamp.get("mono_s") if isinstance(stamp, dict) else None
    if (not isinstance(mono, (int, float)) or isinstance(mono, bool) or event.get("clock_synced") is not False
            or not stamp.get("boot_id") or stamp["boot_id"] != health.boot_id() or health.clock_synced() is not True):
        return
    try:
        wall = health.wall_iso(time.time() - (time.monotonic() - mono))
    except (OverflowError, OSError, ValueError):  # a hand-edited stamp no calendar has
        return
    event.update({UNCORRECTED: event.get("wall_time"), "wall_time": wall, "clock_synced": True})
