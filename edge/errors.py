"""Errors a user can fix: the CLI prints their message as one sentence and exits non-zero."""


class UserError(Exception):
    """Bad input, missing file or missing dependency; the message says what to do."""

    exit_code = 2


class ConfigError(UserError):
    pass


def check(cond: bool, path: str, value, allowed: str) -> None:
    """One sentence naming the config key, its bad value and what is allowed."""
    if not cond:
        raise ConfigError(f"Config key '{path}' has the bad value {value!r}; allowed: {allowed}.")


def check_range(value, lo, hi, path: str, what: str = "a number", lo_open: bool = False) -> None:
    """lo <= value <= hi (lo < value when lo_open); config floats are already finite (config.build)."""
    ok = (lo < value if lo_open else lo <= value) and value <= hi
    check(ok, path, value, f"{what} {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")


def import_cv2():
    """OpenCV, imported when first needed; missing, it is one sentence saying how to get it."""
    try:
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
