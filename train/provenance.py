"""What a run folder records about how it was made: the command lines, and the code and
library versions of each session."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge.files import write_atomic


def code_version() -> dict:
    """This project's version and, run from a git checkout, its commit and whether files git tracks
    differ from it: the augmentation, architectures and readers are code, not settings, so a
    run's record names the code that made it."""
    from importlib import metadata

    try:
        out = {"version": metadata.version("queue-mood")}
    except metadata.PackageNotFoundError:
        out = {"version": None}
    root = Path(__file__).resolve().parents[1]

    def git(*args) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == root:  # not a repository that merely holds an installed copy
        out["commit"] = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
        out["modified"] = None if changed is None else bool(changed)
    return out


def versions() -> dict:
    import cv2
    import keras
    import tensorflow as tf

    return {"queue_mood": code_version(), "python": platform.python_version(), "numpy": np.__version__,
            "opencv": cv2.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "platform": platform.platform()}


def record_versions(path: Path, resumed: bool) -> None:
    """versions.json: the first session's versions, and each resumed session's under
    "resumed_sessions" (with its start time), so a run resumed on another build says so."""
    record = versions()
    if resumed:
        try:
            first = json.loads(path.read_text())
        except (OSError, ValueError):
            first = None
        if isinstance(first, dict):
            later = first.setdefault("resumed_sessions", [])
            later.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})
            record = first
    write_atomic(path, json.dumps(record, indent=2))


def record_command(folder: Path, command: list[str] | None = None, notes=()) -> None:
    """Append the command line, with the working folder its relative paths start from, and
    notes on what it changed, to folder/command.txt."""
    cmd = shlex.join(command or sys.argv) + "".join(f"  # {n}" for n in notes)
    with (folder / "command.txt").open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}  (in {os.getcwd()})  {cmd}\n")
