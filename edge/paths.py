"""One path expansion for every command."""

from __future__ import annotations

import os
from pathlib import Path


def expand_path(value: str | Path) -> Path:
    """A path from the config or the command line, `~` and $VARS expanded: every command
    reads paths through here, so a path that `edge doctor` accepts is one `edge run` opens."""
    return Path(os.path.expandvars(os.path.expanduser(str(value))))
