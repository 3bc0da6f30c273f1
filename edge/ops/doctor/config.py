"""The config: whether it loads, and for the installed service's config, whose `~` it means and
whether the files it names are where the service may write."""

from __future__ import annotations

import shlex
from pathlib import Path

from edge.errors import UserError
from edge.ops.doctor.context import FAIL, OK, WARN, _Context
from edge.ops.doctor.service import SERVICE
from edge.paths import expand_path

UNIT_FILE = Path("/etc/systemd/system") / f"{SERVICE}.service"  # where install.sh writes it


# What the service's sandbox hides from it, by the unit setting that does (deploy/queue-mood.service
# sets both): ProtectHome=yes (or tmpfs) leaves these folders empty, PrivateTmp=yes gives it a /tmp
# and /var/tmp of its own. A file there is found by `sudo edge doctor`, and not by the service.
SANDBOX_HIDES = {"ProtectHome": ("/home", "/root", "/run/user"), "PrivateTmp": ("/tmp", "/var/tmp")}
_HIDING = {"ProtectHome": {"yes", "true", "on", "1", "tmpfs"}, "PrivateTmp": {"yes", "true", "on", "1", "disconnected"}}


def _service_path(value: str, home: str) -> Path:
    """A path in the config as the service reads it: `~` is its home (HOME in its unit)."""
    return Path(home + value[1:]) if value.startswith("~/") else expand_path(value)


def service_paths_verdict(cfg, config_path: str | None, etc_dir: str, state_dir: str,
                          home: str | None = None) -> tuple[str, str] | None:
    """For the installed service's config (in etc_dir): the files it writes must be under
    state_dir, the only place systemd lets it write. A relative path there is taken from etc_dir
    (an older release took it from the service's working folder, state_dir). None: not that config."""
    if not config_path or Path(config_path).absolute().parent != Path(etc_dir):
        return None
    jsonl = cfg.sinks.jsonl.path if cfg.sinks.jsonl is not None else ""
    # `~` is the service's home (HOME in its unit, state_dir as bundled), not that of whoever runs doctor
    home = home or state_dir

    def inside(value: str) -> bool:
        return _service_path(value, home).is_relative_to(state_dir)

    outside = [f"{key} {value}" for key, value in (("sinks.spool_dir", cfg.sinks.spool_dir), ("sinks.jsonl.path", jsonl),
                                                   ("status.history_db", cfg.status.history_db))
               if value and not inside(value)]
    if not outside:
        return OK, f"what the service writes is under {state_dir}"
    return WARN, (f"{'; '.join(outside)}: the service may write only under {state_dir} (ProtectSystem=strict); a "
                  f"relative path in this file is taken from {etc_dir}, so give the full path, e.g. {state_dir}/spool")


def service_lines(unit: Path) -> tuple[list[tuple[str, str]], bool]:
    """(key, value) of the [Service] lines of the installed unit and the drop-ins beside it, in the
    order systemd reads them, and whether the unit itself could be read."""
    from edge.ops.bundle import parse_unit

    lines, read = [], False
    for f in (unit, *sorted(unit.with_name(unit.name + ".d").glob("*.conf"))):  # drop-ins come after
        try:
            sections = parse_unit(f.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        read = read or f == unit
        lines += [(key, value) for _, key, value in sections.get("Service", [])]
    return lines, read


def unit_home(unit: Path, default: str) -> str:
    """HOME as the installed unit (or a drop-in beside it) sets it for the service; default, the
    bundled unit's HOME, where the unit cannot be read or sets none."""
    home = default
    for key, value in service_lines(unit)[0]:
        try:
            words = shlex.split(value) if key == "Environment" else []
        except ValueError:  # unbalanced quotes: systemd skips that line too
            words = []
        home = next((w[5:] for w in reversed(words) if w.startswith("HOME=")), home)
    return home


def sandbox_verdict(cfg, unit: Path, home: str) -> tuple[str, str] | None:
    """For the installed service's config: (FAIL, why) when a file the service reads lies where its
    sandbox (SANDBOX_HIDES, as the unit and its drop-ins set it; the bundled unit's where the unit
    cannot be read) hides it. What it writes is service_paths_verdict's."""
    lines, read = service_lines(unit)
    settings = {} if read else {key: "yes" for key in SANDBOX_HIDES}
    settings.update({key: value for key, value in lines if key in SANDBOX_HIDES})
    hiding = {key: SANDBOX_HIDES[key] for key, value in settings.items() if value.lower() in _HIDING[key]}
    src, command = cfg.source, getattr(cfg.sinks, "command", None)
    reads = [("model.path", cfg.model.path), ("detector.model", cfg.detector.model),
             ("source.path", src.path if "://" not in src.path else ""),
             ("sinks.command.argv", command.argv[0] if command is not None and "/" in command.argv[0] else "")]
    hidden = []
    for key, value in reads:
        path = _service_path(value, home) if value else None
        for setting, roots in hiding.items():
            root = next((r for r in roots if path is not None and path.is_relative_to(r)), None)
            if root:
                hidden.append(f"{key} {value} ({setting}={settings[setting]} in its unit: {root} is "
                              f"{'empty' if setting == 'ProtectHome' else 'its own, empty'} to it)")
    if not hidden:
        return None
    return FAIL, (f"the service cannot see {'; '.join(hidden)}: put the file where the service may read it, e.g. "
                  "under /var/lib/queue-mood or /opt, and give that path")


def check_config(ctx: _Context):
    from edge.config import Config, load_config
    from edge.ops.bundle import ETC_DIR, STATE_DIR

    # The installed service's config: its `~` is the service's home, not this user's.
    service = bool(ctx.s.config) and Path(ctx.s.config).absolute() == Path(ETC_DIR) / "config.toml"
    ctx.home = unit_home(UNIT_FILE, STATE_DIR) if service else ""
    said = (f"; `~` in it is {ctx.home}, the service's HOME (from {UNIT_FILE}; {STATE_DIR} where that sets none), "
            "not this user's") if service else ""
    overrides = {"model.path": ctx.s.model} if ctx.s.model else {}
    unread: list[str] = []
    try:
        cfg = load_config(ctx.s.config, overrides, unread=unread)
    except (UserError, OSError) as exc:
        # the file named may be one the config points at (its spool under the service's own folder)
        why = str(exc) if isinstance(exc, UserError) else \
            f"cannot read {getattr(exc, 'filename', None) or ctx.s.config} ({exc.strerror}); try sudo"
        ctx.add("config", FAIL, f"{why} (the checks below use the built-in defaults){said}")
        ctx.config_loaded = False
        cfg = Config()
        if ctx.s.model:
            cfg.model.path = ctx.s.model
        return cfg
    ctx.add("config", OK, (f"{ctx.s.config} loads" if ctx.s.config else "no --config: the built-in defaults") + said)
    for line in unread:
        ctx.add("config key", WARN, line)
    if verdict := service_paths_verdict(cfg, ctx.s.config, ETC_DIR, STATE_DIR, ctx.home or None):
        ctx.add("service paths", *verdict)
    if service and (verdict := sandbox_verdict(cfg, UNIT_FILE, ctx.home)):
        ctx.add("service sandbox", *verdict)
    return cfg
