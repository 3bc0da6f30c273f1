"""The spool's disk: free space where undelivered alerts are kept, whether it takes writes, and
whether an edge run holds it now."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edge.files import held_by
from edge.ops.doctor.context import FAIL, OK, WARN, _Context
from edge.ops.doctor.service import SERVICE, home_note
from edge.paths import expand_path, visible

FREE_FAIL_MB, FREE_WARN_MB = 50, 500


def check_disk(ctx: _Context, cfg) -> None:
    from edge.sinks.spool import DEFAULT_SPOOL_DIR

    spool = expand_path(cfg.sinks.spool_dir or DEFAULT_SPOOL_DIR)
    where_from = home_note(ctx, cfg.sinks.spool_dir or str(DEFAULT_SPOOL_DIR))
    existing = spool
    while not visible(existing) and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    free_mb = usage.free / 2**20
    where = f"{free_mb / 1024:.1f} GiB free of {usage.total / 2**30:.1f} GiB at {spool}{where_from}"
    read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    if read_only:  # its free space is beside the point (and may read 0)
        ctx.add("disk", FAIL, f"{spool} is on a read-only file system: undelivered alerts cannot be kept; remount "
                              "it read-write or set sinks.spool_dir to a folder on a writable disk")
    elif free_mb < FREE_FAIL_MB:
        ctx.add("disk", FAIL, where + ": undelivered alerts cannot be kept; free some space")
    elif free_mb < FREE_WARN_MB:
        ctx.add("disk", WARN, where)
    else:
        ctx.add("disk", OK, where)
    if not existing.is_dir():
        ctx.add("spool", FAIL, f"{existing} is a file, not a folder: set sinks.spool_dir to a folder")
    elif existing == spool:
        name, status, detail = spool_writable(spool)
        ctx.add(name, status, detail + where_from)
    elif not read_only and not os.access(existing, os.W_OK):  # read-only: no user may, as the FAIL above says
        ctx.add("spool", WARN, f"{existing} is not writable by this user (the service's user {SERVICE} may be "
                               f"the one that can: sudo -u {SERVICE} edge doctor ...)")
    if holder := held_by(spool):  # a WARN, not a FAIL: it is what a running service looks like
        ctx.add("spool", WARN, f"{spool} is held by a running edge run ({holder}), normal while the service runs; "
                               "an edge run with this config is refused until that one stops (sudo systemctl stop "
                               "queue-mood)")


def spool_writable(spool: Path) -> tuple[str, str, str]:
    """A real write (the spool's own fsync-and-rename) of a probe file, removed at once: as root,
    or on a read-only or full file system, os.access says nothing about whether writes work."""
    from edge.files import write_atomic

    probe = spool / ".doctor-probe.json"
    try:
        write_atomic(probe, b"{}")
        probe.unlink()
    except OSError as exc:
        return ("spool", FAIL, f"{spool} does not take writes ({exc.strerror or exc}): undelivered alerts would be "
                               "held only in memory and lost on a restart")
    return ("spool", OK, f"{spool} takes writes")
