"""The libraries the monitor runs on: the TFLite runtime, numpy and OpenCV (and whether those
two work together, and come from apt on a Pi)."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from edge.errors import UserError
from edge.ops.doctor.context import FAIL, OK, WARN, _Context

APT_DIST = "/usr/lib/python3/dist-packages"
# Where `sudo pip install` puts packages on Debian: every venv with system site packages sees them
# before apt's, so a numpy there replaces the one apt's OpenCV is built against.
SYSTEM_PIP = "/usr/local/lib/python3"


def _major_minor(version: str) -> tuple[int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in version.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def numpy_origin(numpy_file: str, prefix: str = sys.prefix) -> tuple[str, str]:
    """Where numpy was imported from, and the command that puts apt's back in its place ("" for apt's)."""
    if numpy_file.startswith(APT_DIST):
        return "apt", ""
    if numpy_file.startswith(prefix.rstrip("/") + "/"):
        return "pip, in this venv", f"{prefix}/bin/pip uninstall numpy"
    if numpy_file.startswith(SYSTEM_PIP):
        return ("pip, system-wide, where it hides apt's from every venv",
                "sudo python3 -m pip uninstall --break-system-packages numpy")
    return "pip", "pip uninstall numpy"


def opencv_verdict(numpy_version: str, cv2_version: str | None, import_error: str = "",
                   numpy_remedy: str = "pip uninstall numpy") -> tuple[str, str]:
    """OpenCV before 4.10 is built against numpy 1.x and cannot run with numpy 2 (and the
    opencv-python wheels from 4.12 on need numpy >= 2). `numpy_remedy`: numpy_origin's command
    ("" where numpy is apt's: then the OpenCV is not)."""
    np_major = _major_minor(numpy_version)[0]
    fix = numpy_remedy or "pip uninstall opencv-python-headless in the venv"
    if cv2_version is None:
        if "numpy" in import_error.lower() or "_ARRAY_API" in import_error:
            return FAIL, (f"OpenCV does not import with numpy {numpy_version} ({import_error}): it was built "
                          "against another numpy major version. On a Pi keep apt's python3-opencv with apt's numpy "
                          f"({fix}).")
        return FAIL, (f"OpenCV does not import ({import_error}); on a Pi: sudo apt install python3-opencv "
                      "(elsewhere: pip install 'queue-mood[opencv]').")
    if np_major >= 2 and _major_minor(cv2_version) < (4, 10):
        return FAIL, (f"OpenCV {cv2_version} is built against numpy 1.x but numpy is {numpy_version}; "
                      f"install 'numpy<2' in this venv (on a Pi: {fix}, so apt's numpy is used).")
    return OK, f"OpenCV {cv2_version} works with numpy {numpy_version}"


def check_runtime(ctx: _Context) -> None:
    from edge.pipeline.runtime import runtime

    try:
        rt = runtime()
    except UserError as exc:
        ctx.add("tflite runtime", FAIL, str(exc))
        return
    ctx.add("tflite runtime", OK, rt.describe())


def check_numpy_opencv(ctx: _Context) -> None:
    try:
        import numpy
    except ImportError as exc:
        ctx.add("numpy", FAIL, f"numpy does not import ({exc}); on a Pi: sudo apt install python3-numpy")
        ctx.add("opencv", FAIL, "not checked: numpy is missing")
        return
    where, remedy = numpy_origin(numpy.__file__)
    status, detail = OK, f"numpy {numpy.__version__} ({where}: {Path(numpy.__file__).parent})"
    if ctx.on_pi and remedy:
        status, detail = WARN, detail + f"; on a Pi apt's python3-numpy is expected in the venv: {remedy}"
    ctx.add("numpy", status, detail)

    captured = io.StringIO()
    cv2_version, error, cv2_file = None, "", ""
    with contextlib.redirect_stderr(captured):  # numpy's long ABI message goes here
        try:
            import cv2

            cv2_version, cv2_file = cv2.__version__, getattr(cv2, "__file__", "") or ""
        except Exception as exc:  # ImportError, or AttributeError from a numpy ABI mismatch
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    status, detail = opencv_verdict(numpy.__version__, cv2_version, error, remedy)
    if cv2_version is not None:
        from importlib import metadata

        # pip's OpenCV wheels: not apt's own metadata (Trixie's python3-opencv has an "opencv" egg-info)
        wheels = sorted({d.metadata["Name"] for d in metadata.distributions()
                         if (d.metadata["Name"] or "").lower().startswith("opencv")
                         and not str(d.locate_file("")).startswith(APT_DIST)})
        origin = "apt" if cv2_file.startswith(APT_DIST) else (f"pip wheel {', '.join(wheels)}" if wheels else "pip")
        detail += f" ({origin})"
        if status == OK and ctx.on_pi and wheels:
            status, detail = WARN, detail + "; on a Pi use apt's python3-opencv: pip uninstall " + " ".join(wheels)
    ctx.add("opencv", status, detail)
