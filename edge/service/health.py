"""The board's health as the kernel reports it: CPU temperature, whether the clock is
synchronized and, on a Raspberry Pi, the firmware's throttling flags. Read from sysfs and one
system call (no vcgencmd or timedatectl subprocess), so it is cheap enough for the status
server to poll; what cannot be read means "not known here". Beside them, what the monitor
itself costs: its CPU time per second (CpuShare), and the free space left on the disks that hold
its state (DiskSpace, for the folders edge run names)."""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

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


# adjtimex(2) reports the kernel clock's maximum error; like systemd's timedated ("System clock
# synchronized" in timedatectl), the clock counts as synchronized while it is under 16 s, which
# only an NTP client keeping it in check achieves (the STA_UNSYNC flag is not used: some setups
# keep it set while synchronized). A Pi has no real-time clock, so until an NTP client sets it
# the time is the last shutdown's (fake-hwclock) or older, and so is every event's wall_time.
MAX_ERROR_SYNCED_US = 16_000_000
_MAXERROR_OFFSET = 3 * ctypes.sizeof(ctypes.c_long)  # struct timex: int modes; long offset, freq, maxerror


@functools.lru_cache(maxsize=1)
def _adjtimex():
    try:
        return ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def clock_synced() -> bool | None:
    """Whether an NTP client keeps the system clock synchronized, as the kernel sees it; None
    off Linux or where the call fails."""
    return clock_state()[0]


def clock_state() -> tuple[bool | None, str]:
    """(clock_synced's answer, and where it is None what kept the kernel from giving one)."""
    if not sys.platform.startswith("linux"):
        return None, "not Linux: the kernel was not asked"
    fn = _adjtimex()
    if fn is None:
        return None, "this C library has no adjtimex to ask the kernel with"
    timex = ctypes.create_string_buffer(512)  # struct timex: 208 bytes on 64-bit, less on 32; modes 0: only read
    if fn(timex) < 0:
        err = ctypes.get_errno()
        return None, f"the kernel's adjtimex call failed ({os.strerror(err) if err else 'no reason given'})"
    return ctypes.c_long.from_buffer(timex, _MAXERROR_OFFSET).value < MAX_ERROR_SYNCED_US, ""


def wall_iso(t: float) -> str:
    """A time.time() as events, /status and the history give it: ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.lru_cache(maxsize=1)
def boot_id() -> str | None:
    """The kernel's id of this boot, new at each: a time.monotonic() stamp means something only
    within the boot that made it (CLOCK_MONOTONIC outlives a restart of the monitor, not a reboot).
    None off Linux or where it cannot be read."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


class DiskSpace:
    """Free and total bytes of the file systems holding the monitor's state, by the short name of
    the folder on each ({"spool": Path(...), "jsonl": ...}, in that order of precedence). Folders
    on one file system are one entry, under the first name: the SD card is one disk, and HQ would
    get one alert per folder for it otherwise. A folder not made yet counts where it will be made
    (the nearest folder above it that exists). One that cannot be read (closed to this user) is
    left out, with one warning when that starts and one line when it is readable again."""

    def __init__(self, folders: dict[str, str | Path], statvfs=os.statvfs):
        self.folders = {name: Path(folder) for name, folder in folders.items()}
        self.statvfs = statvfs
        self._failing: dict[str, str] = {}  # name -> why, while its folder cannot be read

    def read(self) -> dict[str, dict[str, int]]:
        """{name: {"free_bytes", "size_bytes", "read_only"}}: free is what this user may still write
        (f_bavail: the blocks ext4 keeps for root are not the service's to fill); read_only 1 while
        the disk is mounted so (ext4 remounts an SD card read-only on errors, and its free space
        goes on reading as before)."""
        out: dict[str, dict[str, int]] = {}
        seen: set[int] = set()
        for name, folder in self.folders.items():
            try:
                device, fs = _filesystem(folder, self.statvfs)
            except (OSError, ValueError) as exc:
                self._note_failing(name, folder, exc)
                continue
            if self._failing.pop(name, None) is not None:  # pop: two scrapes may read at once
                log.info("Free space on the disk of %s is readable again; /metrics has it.", folder)
            if device not in seen:
                seen.add(device)
                out[name] = {"free_bytes": fs.f_bavail * fs.f_frsize, "size_bytes": fs.f_blocks * fs.f_frsize,
                             "read_only": int(bool(fs.f_flag & os.ST_RDONLY))}
        return out

    def _note_failing(self, name: str, folder: Path, exc: Exception) -> None:
        why = getattr(exc, "strerror", None) or str(exc)
        if self._failing.get(name) != why:  # read every few seconds: say it once, not per scrape
            self._failing[name] = why
            log.warning("Free space on the disk of %s cannot be read (%s); /metrics leaves its "
                        "queue_mood_disk_* series out until it can.", folder, why)


def _filesystem(folder: Path, statvfs) -> tuple[int, os.statvfs_result]:
    """(device id, statvfs) of the file system folder is on, or will be made on. Only a folder
    not made yet is walked past (unlike the doctor's walk through edge.paths.visible): one this
    user cannot read is left out of /metrics and said, not measured on a disk above it."""
    while True:
        try:
            return os.stat(folder).st_dev, statvfs(folder)
        except (FileNotFoundError, NotADirectoryError):
            if folder == folder.parent:
                raise
            folder = folder.parent


def read() -> dict:
    flags = throttled_flags()
    return {"cpu_temperature_c": cpu_temperature_c(), "throttled_flags": flags, "throttled_now": throttle_now(flags),
            "clock_synced": clock_synced()}


class CpuShare:
    """This process's CPU seconds per second of wall time, all threads (1.0 = one core busy),
    averaged over at least `every_s`: what the monitor costs on this board, measured there."""

    def __init__(self, every_s: float = 5.0, clock=time.monotonic, cpu=time.process_time):
        self.every_s, self.clock, self.cpu = every_s, clock, cpu
        self._t, self._c = clock(), cpu()
        self.share: float | None = None  # None until every_s has passed

    def sample(self) -> float | None:
        t, c = self.clock(), self.cpu()
        if t - self._t >= self.every_s:
            self.share = round((c - self._c) / (t - self._t), 4)
            self._t, self._c = t, c
        return self.share
