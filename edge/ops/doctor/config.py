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
        return Path(home + value[1:] if value.startswith("~/") else expand_path(value)).is_relative_to(state_dir)

    outside = [f"{key} {value}" for key, value in (("sinks.spool_dir", cfg.sinks.spool_dir), ("sinks.jsonl.path", jsonl),
                                                   ("status.history_db", cfg.status.history_db))
               if value and not inside(value)]
    if not outside:
        return OK, f"what the service writes is under {state_dir}"
    return WARN, (f"{'; '.join(outside)}: the service may write only under {state_dir} (ProtectSystem=strict); a "
                  f"relative path in this file is taken from {etc_dir}, so give the full path, e.g. {state_dir}/spool")


def unit_home(unit: Path, default: str) -> str:
    """HOME as the installed unit (or a drop-in beside it) sets it for the service; default, the
    bundled unit's HOME, where the unit cannot be read or sets none."""
    from edge.ops.bundle import parse_unit

    home = default
    for f in (unit, *sorted(unit.with_name(unit.name + ".d").glob("*.conf"))):  # drop-ins come after
        try:
            sections = parse_unit(f.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        for _, key, value in sections.get("Service", []):
            try:
                words = shlex.split(value) if key == "Environment" else []
            except ValueError:  # unbalanced quotes: systemd skips that line too
                words = []
            home = next((w[5:] for w in reversed(words) if w.startswith("HOME=")), home)
    return home


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
    return cfg
