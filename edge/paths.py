"""One path expansion for every command."""

from __future__ import annotations

import os
import re
from pathlib import Path

from edge.errors import UserError


# Field metadata for a config key that names a file or folder: a relative path in a config file
# is taken from that file's folder, not from wherever the command runs (systemd runs the
# service in /var/lib/queue-mood, a shell wherever the user is). A path given on the command
# line stays relative to the current folder.
FILE_KEY = {"file": True}
FROM_CONFIG_FOLDER = "a relative path is taken from the config file's folder"


def not_empty(ctx, param, value):
    """Click callback for a path option or argument: given empty, as an unset shell variable
    gives it, it is refused, never taken for its default (the shipped model, the built-in
    config) or for the current folder (Path("") is ".")."""
    if value is not None and not str(value).strip():
        name = param.opts[0] if param.param_type_name == "option" else param.human_readable_name.strip("[]")
        default = "" if param.required else f", or leave {name} out for its default"
        raise UserError(f"{name} is empty (an unset shell variable?); give a path{default}.")
    return value


def items(n: int) -> dict:
    """Field metadata for a config list of n values, so a wrong value in it is called "expected a
    list of n numbers", not "expected list"."""
    return {"items": n}


def from_folder(value: str, folder: Path) -> str:
    """A config file's path value, relative ones joined to the file's folder; empty values,
    absolute paths, ~ and $VAR paths that expand to absolute ones, and URLs unchanged."""
    if not value or "://" in value or expand_path(value).is_absolute():
        return value
    return str(folder / value)


def expand_path(value: str | Path) -> Path:
    """A path from the config or the command line, `~` and $VARS expanded: every command
    reads paths through here, so a path that `edge doctor` accepts is one `edge run` opens."""
    return Path(os.path.expandvars(os.path.expanduser(str(value))))


_VAR = re.compile(r"\$(\w+|\{([^}]*)\})", re.ASCII)  # what os.path.expandvars takes for a variable


def unset_vars(value: str) -> list[str]:
    """The $VARS in a path that expand_path leaves as they are written, because they are not set:
    such a path would only be said not to exist, as a folder named $VAR (URLs left alone)."""
    if "://" in value:
        return []
    names = (m.group(1) if m.group(2) is None else m.group(2) for m in _VAR.finditer(value))
    return [n for n in dict.fromkeys(names) if n and n not in os.environ]


def visible(path: Path, test=Path.exists) -> bool:
    """test(path) as far as this user can see: False where a folder above it is closed to this
    user (the service's 0750 /var/lib/queue-mood looked at by the user pi), not a PermissionError;
    what the program meets there is for run time, or the doctor's user check, to say."""
    try:
        return test(path)
    except OSError:
        return False


def not_a_file(path: str | Path) -> str | None:
    """Why a path that should name a file does not, as the end of a sentence ("does not
    exist", "is a folder, not a file"); None when it is a file."""
    p = Path(path)
    try:
        if p.is_file():
            return None
    except OSError as exc:  # a folder above it closed to this user (is_file raises, it does not say False)
        return f"cannot be reached by this user ({exc.strerror})"
    if p.is_dir():
        return "is a folder, not a file"
    if p.exists():  # a named pipe, a device, a shell's <(...): read once, or never
        return "is not a regular file (a pipe or a device); save it as a file first"
    return "is a link to a file that does not exist" if p.is_symlink() else "does not exist"


def check_readable(path: str | Path, what: str) -> None:
    """One sentence naming a file this user may not read, before a library that reads it calls
    it damaged ("not a valid TFLite model") or raises its own error."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror}); make it readable by the user that runs "
                        f"edge (e.g. sudo chmod a+r {path}).") from exc


def check_out_folder(path: str | Path, flag: str = "--out") -> None:
    """One sentence, before any work, when the folder a command writes into is a file or lies
    under one (mkdir would raise FileExistsError or NotADirectoryError), or when this user may
    not write into it or, not there yet, into the folder it would be made in (a PermissionError
    at the first write, maybe after minutes of work)."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "is a file" if q == p else f"lies under the file {q}"
                raise UserError(f"{flag} {path} {where}; pass a folder.")
            if not os.access(q, os.W_OK | os.X_OK):  # also False on a read-only file system
                where = "" if q == p else f" (it would be made in {q})"
                if os.statvfs(q).f_flag & os.ST_RDONLY:  # a card or stick mounted read-only: no chmod helps
                    raise UserError(f"{flag} {path} cannot be written{where} (Read-only file system); choose a "
                                    "folder on a writable disk.")
                raise UserError(f"{flag} {path} cannot be written by this user{where}: the folder is read-only or "
                                "another user's; choose a folder you can write to, or change its permissions.")
            return


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether a and b name one file: the same path, a symbolic or a hard link; False when
    either does not exist (an output not there yet overwrites nothing)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # ValueError: a NUL in a path
        return False
