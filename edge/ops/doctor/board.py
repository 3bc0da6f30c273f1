"""The machine itself: what it is, whether its clock is set, and on a Raspberry Pi its
temperature, throttling and CPU governor."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

from edge.ops.doctor.context import FAIL, OK, WARN, _Context
from edge.release import current, summary
from edge.service.health import THERMAL, THROTTLE_BITS, clock_state

DEVICE_MODEL = Path("/proc/device-tree/model")
GOVERNOR = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
TEMP_WARN_C, TEMP_FAIL_C = 75.0, 85.0  # the Pi soft-throttles from 80 C (Pi 4) / 85 C (Pi 5)


def temperature_verdict(celsius: float) -> tuple[str, str]:
    if celsius >= TEMP_FAIL_C:
        return FAIL, f"CPU at {celsius:.1f} C: the Pi is throttling; add a heatsink/fan or shade it"
    if celsius >= TEMP_WARN_C:
        return WARN, f"CPU at {celsius:.1f} C: close to throttling (80 C); consider a heatsink or fan"
    return OK, f"CPU at {celsius:.1f} C"


def throttled_verdict(value: int) -> tuple[str, str]:
    """`vcgencmd get_throttled`: bits 0-3 now, bits 16-19 the same since boot."""
    now = [text for bit, text in THROTTLE_BITS.items() if value & (1 << bit)]
    past = [text for bit, text in THROTTLE_BITS.items() if value & (1 << (bit + 16))]
    if value & 1:
        return FAIL, f"under-voltage now (0x{value:x}): use the official power supply; it corrupts SD cards and slows the Pi"
    if now:
        return WARN, f"now: {', '.join(now)} (0x{value:x})"
    if past:
        return WARN, f"since boot: {', '.join(past)} (0x{value:x}); power supply or cooling may be marginal"
    return OK, "no under-voltage or throttling since boot (0x0)"


def clock_verdict(synced: bool | None, why: str) -> tuple[str, str]:
    """health.clock_state's answer -> the clock's row; why: what kept the kernel from answering."""
    if synced is None:
        return OK, f"not checked: {why}"
    if synced:
        return OK, "synchronized by NTP"
    return WARN, ("not synchronized: alert events carry the wall_time of a clock no NTP client has set (a Pi has no "
                  "real-time clock, so after a boot without network it is the last shutdown's time); check "
                  "`timedatectl` and that the store network lets the Pi reach an NTP server (UDP 123)")


def governor_verdict(governor: str) -> tuple[str, str]:
    if governor == "performance":
        return OK, "CPU governor performance"
    return WARN, (f"CPU governor {governor}: frame times vary while the clock ramps; for steady fps: "
                  "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().replace(b"\x00", b"").decode(errors="replace").strip()
    except OSError:
        return None


def check_platform(ctx: _Context) -> None:
    model = _read(DEVICE_MODEL) or ""
    ctx.on_pi = model.startswith("Raspberry Pi")
    ctx.board = model
    where = model or f"{platform.system()} {platform.machine()} (not a Raspberry Pi)"
    ctx.add("system", OK, f"{where}; Python {platform.python_version()} at {sys.executable}")
    ctx.add("release", OK, summary(current()))
    ctx.add("clock", *clock_verdict(*clock_state()))


def check_pi(ctx: _Context) -> None:
    if not ctx.on_pi:
        return
    raw = _read(THERMAL)
    if raw and raw.lstrip("-").isdigit():
        ctx.add("temperature", *temperature_verdict(int(raw) / 1000))
    if shutil.which("vcgencmd"):
        try:
            out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
            ctx.add("throttling", *throttled_verdict(int(out.strip().split("=")[-1], 16)))
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            ctx.add("throttling", WARN, f"vcgencmd get_throttled failed: {exc}")
    gov = _read(GOVERNOR)
    if gov:
        ctx.add("cpu governor", *governor_verdict(gov))
