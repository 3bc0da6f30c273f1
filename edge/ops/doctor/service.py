"""The installed service as the doctor sees it: whether it runs now, `~` read as its HOME
while the checks run, and whether its user may read and write what it needs."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from pathlib import Path

from edge.errors import UserError
from edge.ops.doctor.context import FAIL, OK, _Context
from edge.paths import expand_path

SERVICE = "queue-mood"


@contextlib.contextmanager
def service_home(ctx: _Context):
    """Paths with `~` read as the service reads them: under sudo, HOME is root's."""
    if not ctx.home:
        yield
        return
    import tempfile

    with contextlib.ExitStack() as stack:
        values = {"HOME": ctx.home}
        if os.geteuid() == 0:  # root's caches (GStreamer's registry, made by the camera probe) would land in
            # the service's home owned by root, where the service may no longer update them
            values["XDG_CACHE_HOME"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="qm-doctor-cache-"))
        old = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def home_note(ctx: _Context, *values) -> str:
    """Said after a check of a path that `~` made, when that is the service's home."""
    if ctx.home and any(isinstance(v, str) and v.startswith("~") for v in values):
        return f" (~ is {ctx.home}, the service's HOME)"
    return ""


@functools.lru_cache(maxsize=1)
def service_active() -> bool:
    """The queue-mood service is running (it then holds the camera and the GPIO pin)."""
    if not (Path("/run/systemd/system").is_dir() and shutil.which("systemctl")):
        return False
    try:
        return subprocess.run(["systemctl", "is-active", "--quiet", SERVICE], timeout=5,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def may(path: Path, uid: int, gids: set[int], write: bool = False) -> bool:
    """Whether uid with gids may read (write) path by its mode bits, every folder above it searchable
    (ACLs aside); a path not there yet: whether its nearest existing folder takes new files."""
    if uid == 0:
        return True

    def allowed(st: os.stat_result, bit: int) -> bool:  # bit: 4 read, 2 write, 1 search
        shift = 6 if st.st_uid == uid else 3 if st.st_gid in gids else 0
        return bool(st.st_mode >> shift & bit)

    path = Path(os.path.abspath(path))
    target = path
    while not os.path.lexists(target) and target != target.parent:
        target, write = target.parent, True  # a new file goes into that folder
    try:
        if not all(allowed(os.stat(d), 1) for d in target.parents):
            return False
        st = os.stat(target)
    except OSError:
        return False
    if target.is_dir() and write:
        return allowed(st, 2) and allowed(st, 1)
    return allowed(st, 2 if write else 4)


def check_service_access(ctx: _Context, cfg) -> None:
    """Run as root (sudo edge doctor, install.sh), every check above could read and write what the
    service's user may not: a config or spool it cannot open is a failed start a minute at the store."""
    import grp
    import pwd

    from edge.config import camera_index, resolve_model

    if not ctx.home or os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(SERVICE)
    except KeyError:
        return
    gids = set(os.getgrouplist(SERVICE, user.pw_gid))
    for name in ("video", "gpio"):  # the unit's SupplementaryGroups
        with contextlib.suppress(KeyError):
            gids.add(grp.getgrnam(name).gr_gid)
    reads = [Path(ctx.s.config)]
    with contextlib.suppress(UserError, OSError):
        model = resolve_model(cfg)
        reads += [model, model.with_name("model.json")]
    if cfg.detector.model:
        reads.append(expand_path(cfg.detector.model))
    from edge.sinks.spool import DEFAULT_SPOOL_DIR

    writes = [expand_path(cfg.sinks.spool_dir or DEFAULT_SPOOL_DIR)]
    for value in (cfg.status.history_db, cfg.sinks.jsonl.path if cfg.sinks.jsonl is not None else ""):
        if value:  # SQLite's journal and the log's rotation go beside the file
            writes += [expand_path(value), expand_path(value).parent]
    camera = camera_index(cfg.source) is not None  # [source] camera, or a USB camera's device as path
    if camera:
        writes += sorted(Path("/dev").glob("video*")) + sorted(Path("/dev").glob("media*"))
    denied = [f"read {p}" for p in reads if not may(p, user.pw_uid, gids)]
    denied += [f"write {p}" for p in writes if not may(p, user.pw_uid, gids, write=True)]
    if denied:
        ctx.add("service access", FAIL, f"the service's user {SERVICE} may not {'; '.join(denied)}: it would stop "
                                        f"at each start; install.sh sets them up (config root:{SERVICE} mode 0640, "
                                        f"{ctx.home} owned by {SERVICE}): sudo chown root:{SERVICE} FILE and "
                                        f"sudo chmod 0640 FILE, or sudo chown -R {SERVICE}: FOLDER")
    else:
        ctx.add("service access", OK, f"the service's user {SERVICE} may read its config and model and write "
                                      "its spool" + (" and use the camera" if camera else ""))
