"""Errors a user can fix: the CLI prints their message as one sentence and exits non-zero."""

import ipaddress
import re
import sys
from urllib.parse import urlsplit

from edge.redact import HIDDEN, redact_url


class UserError(Exception):
    """Bad input, missing file or missing dependency; the message says what to do."""

    exit_code = 2


class ConfigError(UserError):
    pass


def check(cond: bool, path: str, value, allowed: str, shown: str | None = None) -> None:
    """One sentence naming the config key, its bad value and what is allowed; `shown`: the value as
    the sentence shows it, where its repr would print a secret ("(hidden)", config.shown_value)."""
    if not cond:
        raise ConfigError(f"Config key '{path}' has the bad value {repr(value) if shown is None else shown}; "
                          f"allowed: {allowed}.")


def check_range(value, lo, hi, path: str, what: str = "a number", lo_open: bool = False) -> None:
    """lo <= value <= hi (lo < value when lo_open); config floats are already finite (config.build)."""
    ok = (lo < value if lo_open else lo <= value) and value <= hi
    check(ok, path, value, f"{what} {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")


# A DNS name: letters, digits, - and _ between dots, and a final dot if any; 253 characters at most besides it.
HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


def check_host(host: str, path: str, port_key: str) -> None:
    """A host name or IP address alone: a scheme or port written into it (`mqtt://broker:1883`)
    would be looked up as a name and fail as "not reachable", the wrong reason."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    # a broker URL pasted in whole (`mqtt://user:password@broker`) must not print its password
    shown = redact_url(host) if "://" in host else f"{HIDDEN}@{host.rpartition('@')[2]}" if "@" in host else host
    check(bool(HOST_NAME.fullmatch(host)), path, shown,
          f"a host name or IP address alone, without scheme or port (the port is {port_key}), e.g. \"broker.local\"")


def check_url(url: str, path: str, schemes: tuple[str, ...], shown: str) -> None:
    """A URL with one of `schemes`, a host and, if any, a numeric port: one that cannot be parsed
    would otherwise fail only when first used (a traceback at start, or retries for good). `shown`
    is the URL as it may be printed (credentials hidden)."""
    allowed = f"an {' or '.join(s + '://' for s in schemes)} URL with a host, e.g. \"{schemes[-1]}://host.example/path\""
    check(not any(c.isspace() for c in url), path, shown, allowed + " (no spaces: write them %20)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is no number or out of range)
    except ValueError as exc:
        check(False, path, shown, f"{allowed} ({exc})")
    check(parts.scheme.lower() in schemes and bool(parts.hostname), path, shown, allowed)


def import_cv2():
    """OpenCV, imported when first needed; missing, it is one sentence saying how to get it."""
    if (cv2 := sys.modules.get("cv2")) is not None:  # imported already: no signal handlers to swap
        return cv2
    from edge.signals import sigint_held

    try:
        with sigint_held():  # OpenCV's native init loses a Ctrl-C that comes during it
            import cv2
    except ImportError as exc:
        raise UserError("OpenCV is missing; on a Raspberry Pi run: sudo apt install python3-opencv "
                        "(elsewhere: pip install 'queue-mood[opencv]').") from exc
    return cv2


def missing_dependency(module: str, extra: str) -> UserError:
    return UserError(
        f"This command needs the Python package '{module}', which is not installed; "
        f"install it with: pip install 'queue-mood[{extra}]'"
    )


# Optional packages a command imports lazily: module -> (pip name, Raspberry Pi OS / Debian package).
# On a Pi they come from apt, as OpenCV does: a pip wheel there may pull in numpy 2.
OPTIONAL_PACKAGES = {"matplotlib": ("matplotlib", "python3-matplotlib"),
                     "skimage": ("scikit-image", "python3-skimage")}


def missing_modules(*modules: str) -> list[str]:
    """The modules of `modules` that cannot be imported, in order."""
    import importlib

    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    return missing


def install_hint(modules: list[str]) -> str:
    """How to get optional packages: apt on a Pi, pip elsewhere."""
    pip = " ".join(OPTIONAL_PACKAGES[m][0] for m in modules)
    apt = " ".join(OPTIONAL_PACKAGES[m][1] for m in modules)
    return f"on a Raspberry Pi: sudo apt install {apt} (elsewhere: pip install {pip})"


def require_modules(command: str, *modules: str) -> None:
    """All the optional packages a command needs, checked before its work: one sentence naming
    every missing one, not one failure per run."""
    missing = missing_modules(*modules)
    if missing:
        names = " and ".join(OPTIONAL_PACKAGES[m][0] for m in missing)
        raise UserError(f"{command} needs {names}, which {'is' if len(missing) == 1 else 'are'} not installed; "
                        f"{install_hint(missing)}.")
