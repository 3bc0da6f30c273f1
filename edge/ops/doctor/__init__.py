"""`edge doctor`: is this machine ready to run the monitor? One line per check, OK/WARN/FAIL.

Checks the TFLite runtime, numpy/OpenCV (and that they work together), the camera (what it
delivers, its light, the faces in view and their width: what aiming it needs), the model
and its card (with a dummy inference), the face detector (on a blank frame), the CPU the
configured schedule needs here (compute budget), whether an NTP client has set the clock, the config (for
the installed one: that the service's sandbox hides none of the files it reads), each configured alert sink,
free disk at the spool, whether the status page's history file can be written, (as root, for the installed
config) whether the service's user may read its config and model and write its spool and camera, the status
page (for the installed config, a port its user may listen on; warning when this machine's
network address answers it without a token or password), and on a Raspberry Pi the board, temperature,
throttling and CPU governor. Nothing is sent, no event is written to the spool (only a probe
file, removed at once, to see that the spool's disk takes writes), and a camera
probe runs in a child process with a timeout so a stuck driver cannot hang the doctor.
Exit code 1 when any check FAILs.

One module here for each group of checks (board, libraries, config, model, budget, camera,
sinks, disk, service, status_page; context: what they share); this one runs them in order and
prints the report.
"""

from __future__ import annotations

import dataclasses
import json

from edge.errors import UserError
from edge.ops.doctor.board import check_pi, check_platform
from edge.ops.doctor.budget import check_budget
from edge.ops.doctor.camera import check_camera
from edge.ops.doctor.config import check_config
from edge.ops.doctor.context import FAIL, OK, WARN, Check, DoctorSettings, _Context
from edge.ops.doctor.disk import check_disk
from edge.ops.doctor.libraries import check_numpy_opencv, check_runtime
from edge.ops.doctor.model import check_detector, check_model
from edge.ops.doctor.service import check_service_access, service_home
from edge.ops.doctor.sinks import check_sinks
from edge.ops.doctor.status_page import check_history, check_status


def diagnose(s: DoctorSettings) -> list[Check]:
    ctx = _Context(s)
    check_platform(ctx)
    check_runtime(ctx)
    check_numpy_opencv(ctx)
    cfg = check_config(ctx)
    with service_home(ctx):  # the camera probe's child process inherits it
        check_model(ctx, cfg)
        check_detector(ctx, cfg)
        check_budget(ctx, cfg)
        check_camera(ctx, cfg)
        check_sinks(ctx, cfg)
        check_disk(ctx, cfg)
        check_history(ctx, cfg)
        check_service_access(ctx, cfg)
    check_status(ctx, cfg)
    check_pi(ctx)
    return ctx.checks


def report(checks: list[Check]) -> dict:
    counts = {k: sum(c.status == k for c in checks) for k in (OK, WARN, FAIL)}
    return {"ok": counts[FAIL] == 0, "counts": counts, "checks": [dataclasses.asdict(c) for c in checks]}


def format_text(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:<5} {c.name:<{width}}  {c.detail}" for c in checks]
    counts = report(checks)["counts"]
    lines.append(f"{counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL")
    return "\n".join(lines)


def run(s: DoctorSettings, echo=print) -> int:
    """Print the checks (text or JSON); the exit code is 1 when any check FAILs."""
    from edge.config import MAX_CAMERA

    # as edge run's --camera: a negative index would pick the last Pi camera from the end of the list
    if s.camera is not None and not 0 <= s.camera <= MAX_CAMERA:
        raise UserError(f"--camera {s.camera} is not a camera index; pass an integer from 0 to {MAX_CAMERA}, "
                        "e.g. --camera 0.")
    checks = diagnose(s)
    echo(json.dumps(report(checks), indent=2) if s.as_json else format_text(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0
