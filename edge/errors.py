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
