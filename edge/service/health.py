"""The board's health as the kernel reports it: CPU temperature and, on a Raspberry Pi,
the firmware's throttling flags. Read from sysfs only (no vcgencmd subprocess), so it is
cheap enough for the status server to poll; missing files mean "not known here"."""

from __future__ import annotations

import glob
from pathlib import Path

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")  # millidegrees Celsius
# The Pi firmware driver exposes `vcgencmd get_throttled`'s bit field here (hex text); the
# platform device's name differs between boards and kernels.
THROTTLED_GLOBS = ("/sys/devices/platform/soc/soc:firmware/get_throttled",
                   "/sys/devices/platform/soc@*/*firmware*/get_throttled",
                   "/sys/devices/platform/*firmware*/get_throttled")
# get_throttled bits 0-3 are "now"; bits 16-19 are the same conditions "since boot".
THROTTLE_BITS = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit"}


def _read(path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_temperature_c(path: Path = THERMAL) -> float | None:
    raw = _read(path)
    try:
        return round(int(raw) / 1000, 1) if raw else None
    except ValueError:
        return None


def throttled_flags(patterns=THROTTLED_GLOBS) -> int | None:
    """The get_throttled bit field, or None off a Pi (or on a kernel without the file)."""
    for pattern in patterns:
        for path in glob.glob(pattern):
            raw = _read(path)
            try:
                return int(raw, 16) if raw else None
            except ValueError:
                return None
    return None


def throttle_now(flags: int | None) -> list[str]:
    """Names of the conditions active now (bits 0-3)."""
    return [] if flags is None else [name for bit, name in THROTTLE_BITS.items() if flags & (1 << bit)]


def read() -> dict:
    flags = throttled_flags()
    return {"cpu_temperature_c": cpu_temperature_c(), "throttled_flags": flags, "throttled_now": throttle_now(flags)}
